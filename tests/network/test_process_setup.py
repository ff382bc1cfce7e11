"""What ``api.server.prepare_process`` does to a serving node's process, checked in a fresh
interpreter (it changes process-wide state: the garbage collector, limits, stack size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import gc, json
from api.server import prepare_process
built = [[i] for i in range(50_000)]  # stands in for the app and runtime built before it
before = gc.get_freeze_count()
prepare_process()
frozen = gc.get_freeze_count()
gc.collect()  # a full collection now walks only what was made after start-up
print(json.dumps({"before": before, "frozen": frozen, "tracked": len(gc.get_objects())}))
"""


def test_objects_built_before_serving_are_frozen_out_of_full_collections() -> None:
    """Everything alive when the node starts serving (here 50,000 lists and the imported
    modules) is moved to the permanent generation: a full collection no longer walks it, so it
    no longer pauses a request for 100-170 ms (docs/benchmarks.md, *Ninth pass*)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["before"] == 0
    assert seen["frozen"] > 50_000
    assert seen["tracked"] < 5_000  # what is left for the collector: nearly nothing
