"""The documentation runs: every Python example in README.md, CHANGELOG.md, SECURITY.md and docs/*.md.

Each fenced ``python`` block is run in a fresh interpreter with ``DREAMDATA_WRITE_KEY`` and
``DREAMDATA_ENDPOINT`` pointing at a real collector on loopback, under a hard timeout; it must exit 0,
and the events it logs must arrive. HTML comments just above a fence steer this:

- ``<!-- not run: REASON -->``: the block is not run (a fragment, a server, a path of your own); the
  reason is required.
- ``<!-- setup: CODE -->`` / ``<!-- then: CODE -->``: hidden code run before / after the block.
- ``<!-- events: N -->``: exactly N events must arrive (without it: at least one when the block logs
  with ``extra=``, none otherwise).
- ``<!-- run: pytest -->``: the block is a test file, run with pytest.
- ``<!-- requires: python >= 3.12 -->``: run on that Python or newer (the CI runs newer ones too).
- ``<!-- file: PATH -->`` / ``<!-- part of: PATH -->``: the block equals / appears verbatim in that file
  of the repository.

YAML, JSON and INI blocks must parse, and equal the file they name with ``file:``.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import yaml

from dreamdata_logging.tools.collector import Collector

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_TIMEOUT = 60.0
ARRIVAL_TIMEOUT = 15.0
DIRECTIVES = ("not run", "setup", "then", "events", "run", "requires", "file", "part of")

FENCE = re.compile(r"^```([\w+-]*)[ \t]*$")
COMMENT = re.compile(r"<!--(.*?)-->", re.S)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marks: Dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _marks_above(lines: List[str], fence: int) -> Dict[str, str]:
    """The directives in the HTML comments directly above the fence (blank lines allowed between)."""
    end = fence
    while end > 0 and not lines[end - 1].strip():
        end -= 1
    text = "\n".join(lines[:end])
    marks: Dict[str, str] = {}
    while text.rstrip().endswith("-->"):
        start = text.rfind("<!--")
        if start < 0:
            break
        body = text[start + 4 : text.rstrip().rfind("-->")]
        key, sep, value = body.partition(":")
        key = key.strip().lower()
        if sep and key in DIRECTIVES:
            marks[key] = textwrap.dedent(value.strip("\n")) if key in ("setup", "then") else value.strip()
        text = text[:start].rstrip()
    return marks


def _blocks(page: Path) -> List[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found: List[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start = i
        i += 1
        body: List[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        found.append(Block(page, start + 1, match.group(1).lower(), "\n".join(body) + "\n", _marks_above(lines, start)))
        i += 1
    return found


ALL_BLOCKS = [block for page in PAGES for block in _blocks(page)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.lang in ("python", "py")]
DATA_BLOCKS = [block for block in ALL_BLOCKS if block.lang in ("yaml", "yml", "json", "ini")]


def _ids(blocks: List[Block]) -> List[str]:
    return [block.name for block in blocks]


def _python_version(requirement: str) -> Tuple[int, int]:
    match = re.fullmatch(r"python\s*>=\s*(\d+)\.(\d+)", requirement.strip())
    assert match, f"unreadable requirement {requirement!r}; write e.g. 'python >= 3.12'"
    return int(match.group(1)), int(match.group(2))


def _expected_events(block: Block) -> Optional[int]:
    """Exactly this many events must arrive; None: at least one."""
    if "events" in block.marks:
        return int(block.marks["events"])
    return None if "extra=" in block.code else 0


def test_the_pages_have_blocks() -> None:
    assert (ROOT / "docs" / "index.md") in PAGES
    assert len(PYTHON_BLOCKS) >= 5, _ids(PYTHON_BLOCKS)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=_ids(PYTHON_BLOCKS))
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    if "not run" in block.marks:
        reason = block.marks["not run"]
        assert len(reason.split()) >= 3, f"{block.name}: say why the block is not run, in a few words"
        return
    unknown = set(block.marks) - set(DIRECTIVES)
    assert not unknown, f"{block.name}: unknown directives {unknown}"
    if "requires" in block.marks and sys.version_info[:2] < _python_version(block.marks["requires"]):
        pytest.skip(f"{block.name} needs {block.marks['requires']}; the CI also runs newer Pythons")
    _check_part_of(block)

    source = "\n".join(part for part in (block.marks.get("setup"), block.code, block.marks.get("then")) if part)
    pytest_run = block.marks.get("run") == "pytest"
    script = tmp_path / ("test_docs_block.py" if pytest_run else "docs_block.py")
    script.write_text(source, encoding="utf-8")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)] if pytest_run else [
        sys.executable,
        str(script),
    ]

    with Collector(write_key=None) as collector:
        env = {
            **os.environ,
            "DREAMDATA_WRITE_KEY": "docs-write-key",
            "DREAMDATA_ENDPOINT": collector.url,
            "PYTHONPATH": str(ROOT),
        }
        env.pop("PYTEST_ADDOPTS", None)
        try:
            done = subprocess.run(
                command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{block.name} did not finish within {RUN_TIMEOUT} s; output so far: {exc.stdout!r}")
        report = f"{block.name} exited {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        assert done.returncode == 0, report
        assert "were not delivered" not in done.stderr, report

        expected = _expected_events(block)
        if expected is None:
            assert collector.wait_for(1, ARRIVAL_TIMEOUT), f"{block.name} logs events but none arrived\n{report}"
        else:
            assert collector.wait_for(expected, ARRIVAL_TIMEOUT), (
                f"{block.name}: {expected} events expected, {len(collector.received())} arrived\n{report}"
            )
        # the subprocess has exited, so everything it sent has been answered: nothing more will come
        received = collector.received()
        if expected is not None:
            assert len(received) == expected, f"{block.name}: {expected} events expected, got {received}"
        for message in received:
            assert message.get("userId") or message.get("anonymousId"), message
        refused = [record for record in collector.requests() if not 200 <= record.status < 300]
        assert not refused, f"{block.name}: the collector refused requests: {refused}"


def _check_part_of(block: Block) -> None:
    if "part of" in block.marks:
        path = ROOT / block.marks["part of"]
        assert path.is_file(), f"{block.name}: no file {path}"
        assert block.code in path.read_text(encoding="utf-8"), f"{block.name} is not verbatim in {path}"


@pytest.mark.parametrize("block", DATA_BLOCKS, ids=_ids(DATA_BLOCKS))
def test_data_block_parses_and_matches_its_file(block: Block) -> None:
    if block.lang in ("yaml", "yml"):
        assert isinstance(yaml.safe_load(block.code), (dict, list)), block.name
    elif block.lang == "json":
        json.loads(block.code)
    else:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(block.code)
        assert parser.sections(), block.name
    if "file" in block.marks:
        path = ROOT / block.marks["file"]
        assert path.is_file(), f"{block.name}: no file {path}"
        assert block.code == path.read_text(encoding="utf-8"), f"{block.name} differs from {path}"
    _check_part_of(block)


def _slug(heading: str) -> str:
    """The anchor a Markdown heading gets (GitHub's rule)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> List[str]:
    anchors: List[str] = []
    in_fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            anchors.append(_slug(line.lstrip("#")))
    return anchors


def _links(page: Path) -> List[str]:
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = COMMENT.sub("", text)
    return [a or b for a, b in LINK.findall(text)]


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_links_resolve(page: Path) -> None:
    for link in _links(page):
        if re.match(r"^[a-z]+:", link):
            continue  # https:, mailto:
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name}: link to {link} points at nothing"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page.name}: no heading #{anchor} in {path.name}"


def test_every_page_is_on_the_map() -> None:
    pages = sorted(page.name for page in (ROOT / "docs").glob("*.md") if page.name != "index.md")
    index = " ".join(_links(ROOT / "docs" / "index.md"))
    readme = " ".join(_links(ROOT / "README.md"))
    for name in pages:
        assert name in index, f"docs/index.md does not link docs/{name}"
        assert f"docs/{name}" in readme, f"README.md does not link docs/{name}"


def test_every_page_has_a_title_and_an_intro() -> None:
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("# "), f"{page.name} starts without a title"
        prose = [line for line in lines[1:8] if line.strip() and not line.startswith(("#", "```", "<!--"))]
        assert prose, f"{page.name}: no introduction under the title"


def test_readme_keeps_its_two_commands_and_stays_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 200
    test_lines = [line for line in lines if re.match(r"^python3 -m venv .*pytest", line)]
    assert test_lines and test_lines[0] == (
        'python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]" && .venv/bin/python -m pytest'
    )
    demo = "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/python -m dreamdata_logging demo"
    assert demo in lines
