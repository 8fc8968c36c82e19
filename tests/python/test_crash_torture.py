"""CI run of the crash torture harness (tools/crash_torture.py): writers SIGKILLed
at random moments, segments truncated and bit-flipped, schema.json damaged; no
acknowledged row may be lost and no wrong byte served.

CI runs 200 trials (seeds 1..200). The trials run on a tmpfs (``/dev/shm``) when
one is available: a SIGKILL does not drop the page cache, so what a killed writer
leaves behind is the same as on a disk, and the run takes about 40 s instead of
about 150 s of fsyncs. Power-loss damage is applied explicitly by the harness.
``TORCHCACHEX_TORTURE_TRIALS`` overrides the count. The full local run (see
docs/reliability.md) is ``python tools/crash_torture.py --trials 1000 --seed 1000``.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "crash_torture.py"
TRIALS = int(os.environ.get("TORCHCACHEX_TORTURE_TRIALS", "200"))


@pytest.fixture
def torture_dir(tmp_path):
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="torchcachex_torture_", dir=shm))
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


def _run(args, cwd_dir):
    proc = subprocess.run(
        [sys.executable, str(TOOL), *args, "--dir", str(cwd_dir)],
        capture_output=True, text=True, timeout=1800, env=dict(os.environ),
    )
    output = proc.stdout[-20000:] + proc.stderr[-5000:]
    summary_lines = [line for line in proc.stdout.splitlines() if line.startswith("SUMMARY ")]
    assert summary_lines, output
    return proc, json.loads(summary_lines[-1][len("SUMMARY "):]), output


def test_crash_torture_ci_run(torture_dir):
    proc, summary, output = _run(["--trials", str(TRIALS), "--seed", "1"], torture_dir)
    assert summary["trials"] == TRIALS, output
    # The run exercised what it claims to: kills, acknowledged rows, damage.
    assert summary["writers_killed"] >= TRIALS, output
    assert summary["acked_rows"] > 0 and summary["rows_served_checked"] > 0, output
    assert summary["damaged_segments"] > 0 and summary["damaged_detected"] > 0, output
    # The guarantees.
    assert summary["acked_rows_lost"] == 0, output
    assert summary["wrong_bytes_served"] == 0, output
    assert summary["tmp_leftovers_after_claim"] == 0, output
    assert summary["failed_trials"] == [], output
    assert proc.returncode == 0, output


@pytest.mark.parametrize("sabotage,counter", [("drop", "acked_rows_lost"),
                                              ("swap", "wrong_bytes_served")])
def test_the_checker_catches_lost_and_wrong_rows(torture_dir, sabotage, counter):
    """Self-test of the harness: deleting acknowledged segments, or serving one key's
    row for another, makes the run fail (so a green run means something)."""
    proc, summary, output = _run(["--trials", "6", "--seed", "1", "--sabotage", sabotage],
                                 torture_dir)
    assert summary[counter] > 0, output
    assert summary["failed_trials"], output
    assert proc.returncode == 1, output
