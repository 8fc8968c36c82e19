"""Independent jobs writing one cache directory at once, with no configuration.

Two K-fold jobs (one job per fold, as a scheduler runs the folds of a
cross-validation in parallel) open ``ArrowIPCCacheBackend(cache_dir, module_id)``
with default arguments. Each claims its own writer id (lock file) and segment
range on its first write; both write while the other reads and writes. The
test checks: distinct writer ids, no corruption (every segment reads back with
pyarrow, every row equals the extractor's output bit for bit), no lost rows,
and that after ``refresh()`` each job serves the rows the other computed. The
jobs move in lockstep only at two points (start, and after epoch 1), through
their stdin/stdout; nothing waits on time. Hit rates per job and phase are
printed (``pytest -s``).

A second test checks the automatic refresh: a lookup that misses loads the
segments other processes wrote since (at most once a second), with no
``refresh()`` call.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pyarrow.ipc as ipc
import torch
from conftest import FrozenLinear, inputs_for

from torchcachex import ArrowIPCCacheBackend, CacheModuleDecorator

MODULE_ID = "kfold_features_v1"
K = 4
N = 256
BATCH = 16
TESTS_DIR = str(Path(__file__).parent)

JOB = textwrap.dedent(
    """
    import json, random, sys
    sys.path.insert(0, sys.argv[1])
    import torch
    from conftest import FrozenLinear, inputs_for
    from torchcachex import ArrowIPCCacheBackend, CacheModuleDecorator

    cache_dir, fold, k, n, batch = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    backend = ArrowIPCCacheBackend(cache_dir, "kfold_features_v1")  # no configuration
    extractor = FrozenLinear()
    features = CacheModuleDecorator(extractor, backend)
    head = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    train = [i for i in range(n) if i % k != fold]
    val = [i for i in range(n) if i % k == fold]
    rng = random.Random(fold)
    phases = {}

    def run(name, ids, learn, flush_every_batches=0):
        before, computed_before = backend.stats(), len(extractor.seen)
        for b, start in enumerate(range(0, len(ids), batch)):
            chunk = ids[start:start + batch]
            x = inputs_for(chunk)
            f = features(x, cache_ids=torch.tensor(chunk))
            assert torch.equal(f, extractor.reference(x)), name
            if learn:
                loss = torch.nn.functional.cross_entropy(head(f), torch.tensor(chunk) % 2)
                optimizer.zero_grad(); loss.backward(); optimizer.step()
            if flush_every_batches and (b + 1) % flush_every_batches == 0:
                backend.flush()  # segments land while the other job runs
        after = backend.stats()
        hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
        phases[name] = {"samples": len(ids), "hits": hits, "misses": misses,
                        "computed": extractor.seen[computed_before:]}

    def barrier(tag):
        print(tag, flush=True)
        assert sys.stdin.readline().strip() == "go"

    barrier("ready")
    run("epoch1", rng.sample(train, len(train)), learn=True, flush_every_batches=3)
    backend.flush()
    writer_id = backend.stats()["writer_id"]
    barrier("epoch1-flushed")
    loaded = backend.refresh()  # the other job's segments
    run("epoch2", rng.sample(train, len(train)), learn=True)
    run("val", val, learn=False)
    run("all", list(range(n)), learn=False)
    backend.flush()
    print(json.dumps({"fold": fold, "writer_id": writer_id, "loaded_by_refresh": loaded,
                      "rows_written": backend.stats()["rows_written"], "phases": phases}), flush=True)
    backend.close()
    """
)


def _spawn(cache_dir: str, fold: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", JOB, TESTS_DIR, cache_dir, str(fold), str(K), str(N), str(BATCH)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


def _barrier(jobs, tag: str) -> None:
    for proc in jobs:
        line = proc.stdout.readline().strip()
        if line != tag:
            proc.kill()
            raise AssertionError(f"expected {tag!r} from a job, got {line!r}: {proc.stderr.read()}")
    for proc in jobs:  # every job reached the barrier: release them together
        proc.stdin.write("go\n")
        proc.stdin.flush()


def test_two_parallel_kfold_jobs_share_one_directory(tmp_path):
    cache_dir = str(tmp_path / "cache")
    folds = [0, 1]
    jobs = [_spawn(cache_dir, fold) for fold in folds]
    # A safety net against a hung job (the readline of a barrier would wait
    # forever); never reached in a passing run, and no assertion depends on it.
    watchdog = threading.Timer(600, lambda: [proc.kill() for proc in jobs])
    watchdog.start()
    try:
        _barrier(jobs, "ready")
        _barrier(jobs, "epoch1-flushed")
        outputs = [proc.communicate(timeout=180) for proc in jobs]
    finally:
        watchdog.cancel()
        for proc in jobs:
            if proc.poll() is None:
                proc.kill()
    for proc, (out, err) in zip(jobs, outputs):
        assert proc.returncode == 0, out + err
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]

    print(f"\nTwo parallel K-fold jobs (K={K}, {N} samples, one cache directory, default options)")
    for r in reports:
        cells = ", ".join(f"{name} {p['hits']}/{p['samples']} = {p['hits'] / p['samples']:.0%}"
                          for name, p in r["phases"].items())
        print(f"  job fold {r['fold']} (writer id {r['writer_id']}): {cells}")

    # Each claimed its own writer id, so its own segment range.
    assert sorted(r["writer_id"] for r in reports) == [0, 1]
    computed_anywhere = set()
    for r in reports:
        p = r["phases"]
        train_size = N - N // K
        for name, phase in p.items():
            assert phase["hits"] + phase["misses"] == phase["samples"], (r["fold"], name)
            assert len(phase["computed"]) == phase["misses"], (r["fold"], name)
            computed_anywhere |= set(phase["computed"])
        assert p["epoch1"]["samples"] == train_size
        # Hits in epoch 1 can only be rows of the other job (segments it flushed
        # meanwhile, picked up by the automatic refresh on a miss).
        # After the barrier and refresh(): everything is served, own rows and the other's.
        for name in ("epoch2", "val", "all"):
            assert p[name]["hits"] == p[name]["samples"], (r["fold"], name, p[name])
        assert r["rows_written"] == p["epoch1"]["misses"]
    assert computed_anywhere == set(range(N))  # union of both jobs = the dataset

    # On disk: two ranges, no leftovers, every file valid Arrow, no lost row.
    segments_dir = os.path.join(cache_dir, MODULE_ID, "segments")
    names = os.listdir(segments_dir)
    assert not [n for n in names if not n.endswith(".arrow")], names
    assert {int(n[len("segment_"):-len(".arrow")]) // 1_000_000_000 for n in names} == {0, 1}
    keys = []
    for path in sorted(glob.glob(os.path.join(segments_dir, "segment_*.arrow"))):
        table = ipc.open_file(path).read_all()
        keys.extend(table.column("key").to_pylist())
    assert len(keys) == sum(r["rows_written"] for r in reports)
    assert sorted(set(keys), key=int) == [str(i) for i in range(N)]

    # A fresh process-level view: every row, bit-exact.
    extractor = FrozenLinear()
    with ArrowIPCCacheBackend(cache_dir, MODULE_ID) as backend:
        assert len(backend) == N
        cached = backend.lookup_batch(list(range(N)))
        assert cached.all_found
        assert torch.equal(cached.output(), extractor.reference(inputs_for(list(range(N)))))


def test_lookups_that_miss_refresh_automatically(tmp_path):
    """No refresh() call: a reader's misses load what another writer flushed."""
    cache_dir = tmp_path / "cache"
    extractor = FrozenLinear()
    reader = ArrowIPCCacheBackend(cache_dir, MODULE_ID)
    writer_code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        import torch
        from conftest import FrozenLinear, inputs_for
        from torchcachex import ArrowIPCCacheBackend, CacheModuleDecorator
        ids = list(range(int(sys.argv[3]), int(sys.argv[4])))
        with ArrowIPCCacheBackend(sys.argv[2], "kfold_features_v1") as backend:
            CacheModuleDecorator(FrozenLinear(), backend)(inputs_for(ids), cache_ids=ids)
            backend.flush()
            print(backend.stats()["writer_id"])
        """
    )

    def write(lo: int, hi: int) -> int:
        proc = subprocess.run([sys.executable, "-c", writer_code, TESTS_DIR, str(cache_dir), str(lo), str(hi)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return int(proc.stdout.strip())

    # The reader opened before anything was written, and has never missed:
    # its first miss refreshes at once.
    first = list(range(0, 40))
    assert write(0, 40) == 0
    cached = reader.lookup_batch(first)
    assert cached.all_found
    assert torch.equal(cached.output(), extractor.reference(inputs_for(first)))

    # It has just refreshed; another process writes more. Lookups that miss
    # refresh again once the rate limit (one refresh a second) allows: poll with
    # lookups only, bounded by a count, never by a clock.
    second = list(range(40, 80))
    assert write(40, 80) == 0  # the first writer exited: its id is free again
    lookups = 0
    while not reader.lookup_batch(second).all_found:
        lookups += 1
        assert lookups < 5_000_000, "the automatic refresh never loaded the new segment"
    assert torch.equal(reader.lookup_batch(second).output(), extractor.reference(inputs_for(second)))
    assert reader.stats()["writer_id"] == -1  # a reader never claims a writer id
    reader.close()
