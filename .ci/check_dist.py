"""Check the built distributions: python .ci/check_dist.py DIST_DIR SDIST_UNPACKED_DIR.

- the sdist holds every tracked file of the repository except .ci/ and .gitignore, and nothing else but
  new files not ignored by git and what the build adds (PKG-INFO, the egg-info);
- every relative link of every Markdown file in the sdist (README, CHANGELOG, SECURITY, docs, benchmarks)
  resolves to a file inside the sdist;
- the wheel holds the package only, with py.typed and the example configs;
- both name the licence, and every classifier is a known one.

Prints what is wrong and exits 1; exits 0 when all is well.
"""

from __future__ import annotations

import email
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
COMMENT = re.compile(r"<!--.*?-->", re.S)
NOT_SHIPPED = (".ci/", ".gitignore")
BUILT = ("PKG-INFO", "setup.cfg")  # setup.cfg: tracked, but the build rewrites it (egg_info tags)
WHEEL_MUST_HOLD = (
    "dreamdata_logging/py.typed",
    "dreamdata_logging/examples/logging.yaml",
    "dreamdata_logging/examples/logging.json",
    "dreamdata_logging/examples/logging.ini",
    "dreamdata_logging/examples/example.json",
    "dreamdata_logging/__main__.py",
)


def repository_files(*which: str) -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files", *which], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    return {name for name in listed if not name.startswith(NOT_SHIPPED) and (ROOT / name).is_file()}


def sdist_problems(unpacked: Path) -> list[str]:
    shipped = {str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file()}
    shipped = {name for name in shipped if not name.startswith("dreamdata_logging.egg-info/")}
    tracked = repository_files("--cached")
    # Every tracked file must be shipped; a new file not yet committed may be (but nothing git ignores).
    problems = [f"sdist lacks {name} (add it to MANIFEST.in)" for name in sorted(tracked - shipped)]
    may_ship = tracked | repository_files("--others", "--exclude-standard")
    problems += [f"sdist holds {name}, no file of the repository" for name in sorted(shipped - may_ship - set(BUILT))]
    for page in sorted(unpacked.rglob("*.md")):
        text = COMMENT.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
        for link in LINK.findall(text):
            target = link.partition("#")[0]
            if not target or re.match(r"^[a-z]+:", link):
                continue  # an anchor on the same page, https:, mailto:
            path = (page.parent / target).resolve()
            where = page.relative_to(unpacked)
            if not path.is_relative_to(unpacked.resolve()):
                problems.append(f"{where}: link {link} leaves the sdist")
            elif not path.exists():
                problems.append(f"{where}: link {link} points at nothing in the sdist")
    return problems


def metadata_problems(text: str, where: str) -> list[str]:
    from trove_classifiers import classifiers as known

    metadata = email.message_from_string(text)
    problems = [f"{where}: unknown classifier {c!r}" for c in metadata.get_all("Classifier") or [] if c not in known]
    if metadata.get("License-Expression") != "MIT":
        problems.append(f"{where}: License-Expression is {metadata.get('License-Expression')!r}, not 'MIT'")
    if "LICENSE" not in (metadata.get_all("License-File") or []):
        problems.append(f"{where}: no License-File: LICENSE")
    return problems


def wheel_problems(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        problems = metadata_problems(archive.read(info).decode("utf-8"), wheel.name)
    dist_info = info.split("/")[0] + "/"
    outside = [n for n in names if not n.startswith(("dreamdata_logging/", dist_info))]
    problems += [f"{wheel.name} holds {n}, outside the package" for n in outside]
    problems += [f"{wheel.name} lacks {n}" for n in WHEEL_MUST_HOLD if n not in names]
    if f"{dist_info}licenses/LICENSE" not in names:
        problems.append(f"{wheel.name} lacks the LICENSE")
    return problems


def main(dist: Path, unpacked: Path) -> int:
    [wheel] = dist.glob("*.whl")
    problems = sdist_problems(unpacked) + wheel_problems(wheel)
    problems += metadata_problems((unpacked / "PKG-INFO").read_text(encoding="utf-8"), "sdist PKG-INFO")
    for problem in problems:
        print(f"ci: {problem}", file=sys.stderr)
    if not problems:
        print(f"ci: the sdist holds the repository but .ci/, its links resolve in it; {wheel.name} is the package")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
