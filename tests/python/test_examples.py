"""The example scripts run end to end and show what they claim.

Each example runs as a subprocess (as a user would run it) with its caches in
pytest's temporary directory.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(script: str, *args: str, timeout: float = 180) -> str:
    """Runs ``examples/<script>`` and returns its stdout; fails the test on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"{script} {' '.join(args)} exited with {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    return proc.stdout


def summary_hit_percent(output: str, run: str) -> float:
    """The cache-hit percentage of epoch 1 from basic_usage's closing line for ``run``."""
    match = re.search(rf"^{run}: epoch 1 took .*?([\d.]+)% cache hits", output, re.MULTILINE)
    assert match, f"no '{run}: epoch 1 took ...% cache hits' line in:\n{output}"
    return float(match.group(1))


def test_basic_usage_second_run_is_served_from_cache(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    first = run_example("basic_usage.py", "--cache-dir", str(cache_dir))
    assert summary_hit_percent(first, "First run") == 0.0

    second = run_example("basic_usage.py", "--cache-dir", str(cache_dir))
    assert summary_hit_percent(second, "Second run") == 100.0
    assert "x faster" in second
    # Every epoch of the second run is all hits.
    epochs = re.findall(r"^epoch \d+: .*cache hits\s+(\d+)/(\d+)", second, re.MULTILINE)
    assert len(epochs) == 3 and all(hits == total for hits, total in epochs), second


def test_advanced_usage_runs_every_pattern(tmp_path: Path) -> None:
    output = run_example("advanced_usage.py", "--cache-dir", str(tmp_path))
    titles = ("cross-validation", "DDP single writer", "Multiple models", "Complex outputs",
              "Progressive enrichment")
    for title in titles:
        assert title.lower() in output.lower(), f"pattern {title!r} missing from:\n{output}"

    # K-fold: fold 0 computes everything; later folds compute nothing.
    folds = re.findall(r"^fold (\d+): train\s+\d+/\d+\s+cache hits,\s+(\d+) computed", output, re.MULTILINE)
    assert len(folds) == 5, output
    assert all(int(computed) == 0 for fold, computed in folds if fold != "0"), output

    # DDP: only the writer rank writes; the other rank reads its rows after refresh().
    assert "rank 1 after flush: rows_written=0," in output, output
    rank0_shard_on_rank1 = r"^  rank 0's shard .*:\s+128/128\s+cache hits,\s+0 computed"
    assert re.search(rank0_shard_on_rank1, output, re.MULTILINE), output

    # Multiple models: A fills the cache, B and C are served from it entirely.
    per_model = r"^model (\w) .*?,\s+\d+/\d+\s+cache hits,\s+(\d+) computed"
    models = dict(re.findall(per_model, output, re.MULTILINE))
    assert models == {"A": "512", "B": "0", "C": "0"}, output

    # Complex outputs round-trip exactly.
    assert output.count("(values and dtypes): True") == 2, output
    assert "bfloat16" in output

    # Progressive enrichment: the second run computes only the new half.
    match = re.search(
        r"^run 2: 400 samples requested, cache held 200:\s+200/400\s+cache hits,\s+200 computed",
        output,
        re.MULTILINE,
    )
    assert match, output
