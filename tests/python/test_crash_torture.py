"""CI run of the crash torture harness (tools/crash_torture.py): writers SIGKILLed
at random moments, segments truncated and bit-flipped; no acknowledged row may be
lost and no wrong byte served. The full run is `python tools/crash_torture.py --trials 200`."""

import json
import os
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "crash_torture.py"


def test_crash_torture_short_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--trials", "20", "--seed", "1", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )
    output = proc.stdout + proc.stderr
    summary_lines = [line for line in proc.stdout.splitlines() if line.startswith("SUMMARY ")]
    assert summary_lines, output
    summary = json.loads(summary_lines[-1][len("SUMMARY "):])
    assert summary["trials"] == 20, output
    assert summary["acked_rows"] > 0, output
    assert summary["acked_rows_lost"] == 0, output
    assert summary["wrong_bytes_served"] == 0, output
    assert summary["failed_trials"] == [], output
    assert proc.returncode == 0, output
