"""Randomised interleavings of the handler's states: every event counted once, in every state.

Each run is ``tests/scenarios/state_schedule.py`` with a seed: four threads log numbered events while the
main thread closes the handler (it reopens), reconfigures logging twice over, flushes and forks, against a
collector that flips between healthy, 503, 429, dropped connections and slow errors, with and without a
spool. The seeds here are fixed, so a run is the same in CI and on a newcomer's machine;
``DD_STATE_SEEDS=N`` adds N random seeds (printed, to replay one: ``DD_STATE_SEED=S``).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scenarios" / "state_schedule.py"
FIXED = [(11, False), (12, True), (13, True), (14, False)]
STEPS = 30


def seeds() -> list[tuple[int, bool]]:
    if os.environ.get("DD_STATE_SEED"):
        seed = int(os.environ["DD_STATE_SEED"])
        return [(seed, False), (seed, True)]
    extra = int(os.environ.get("DD_STATE_SEEDS", "0"))
    drawn = [(random.randrange(10**6), random.random() < 0.5) for _ in range(extra)]
    return FIXED + drawn


def the_ledger_adds_up(stats: dict[str, int]) -> None:
    accounted = (
        stats["delivered"] + stats["failed"] + stats["dropped_queue_full"] + stats["dropped_closed"]
        + stats["queued"] + stats["spool_written"] + stats["unsent"] + stats["captured"]
    )  # fmt: skip
    assert stats["emitted"] == accounted, stats


@pytest.mark.parametrize("seed,spool", seeds())
def test_every_event_is_counted_once_whatever_the_interleaving(seed: int, spool: bool, tmp_path: Path) -> None:
    print(f"seed={seed} spool={spool} (replay: DD_STATE_SEED={seed})")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(seed), str(STEPS), str(tmp_path) if spool else "-"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    arrived = Counter(found["arrived"])
    twice = [message_id for message_id, count in arrived.items() if count > 1]
    assert not twice, f"seed {seed}: {len(twice)} messageIds arrived twice; actions {found['actions']}"

    # Each handler's ledger adds up, and nothing is left in memory after close().
    for stats in found["stats"]:
        the_ledger_adds_up(stats)
        assert stats["queued"] == 0, stats
    # Each forked child's did too, and what it logged arrived or was counted.
    for child in found["children"]:
        assert child["status"] == 0, child
        for stats in child["stats"]:
            the_ledger_adds_up(stats)

    totals = Counter()
    for stats in found["stats"] + [s for child in found["children"] for s in child["stats"]]:
        totals.update(stats)
    logged = set(found["logged"]) | {i for child in found["children"] for i in child["ids"]}
    assert set(arrived) <= logged  # nothing arrives that was not logged
    # What arrived is what the ledgers say was delivered, live or from the spool.
    assert len(arrived) == totals["delivered"] + totals["spool_delivered"], (seed, dict(totals))
    # Every missing event is counted: given up on, dropped, or still in the spool (read at the end).
    missing = len(logged) - len(arrived)
    spooled_now = found["stats"][-1]["spooled"] if found["stats"] else 0
    lost = totals["failed"] + totals["dropped_queue_full"] + totals["dropped_closed"] + totals["spool_dropped"]
    assert missing == lost + spooled_now, (seed, missing, dict(totals), found["actions"])
    if spool:  # healthy at the end: the spool drained, whatever closes and reconfigurations came before
        assert spooled_now == 0, (seed, dict(totals), found["actions"])
