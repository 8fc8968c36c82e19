"""DataLoader workers (``fork`` start method) and backends used after ``fork()``.

* The decorator in the training loop keeps working while the DataLoader forks
  workers (persistent or not): the parent's writer thread, pending rows and
  writer lock are untouched by the children.
* Reading the cache inside ``Dataset`` workers (the documented pattern, see
  ``docs/distributed.md``): the worker's copy of the backend drops the store it
  inherited and opens its own on first use; it sees what is on disk.
* Workers that write claim their own writer ids; their rows are flushed when
  the worker exits normally.
* A raw ``os.fork()`` child: leaves the parent's pending rows and writer lock
  alone whether it exits through ``os._exit`` or a normal interpreter exit.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import pyarrow.ipc as ipc
import pytest
import torch
from conftest import FrozenLinear, inputs_for
from torch.utils.data import DataLoader, Dataset

from torchcachex import ArrowIPCCacheBackend, CacheModuleDecorator

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")

MODULE_ID = "loader_features_v1"
N = 96
TESTS_DIR = str(Path(__file__).parent)


class Samples(Dataset):
    """Sample ``i``: its input row and its id (stable)."""

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict:
        return {"x": inputs_for([i])[0], "id": i}


class CachedFeatures(Dataset):
    """The documented pattern: a Dataset serving cached features in its workers.

    ``__getitems__`` (used by the DataLoader for a whole batch of indices) does
    one batched lookup; misses are computed in the worker and, if ``write``,
    stored (the worker then claims its own writer id).
    """

    def __init__(self, backend: ArrowIPCCacheBackend, write: bool = False):
        self.backend = backend
        self.extractor = FrozenLinear()
        self.write = write

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list) -> list:
        cached = self.backend.lookup_batch(indices)
        missing = cached.missing_positions
        computed = None
        if len(missing):
            ids = [indices[j] for j in missing.tolist()]
            computed = self.extractor(inputs_for(ids))
            if self.write:
                self.backend.put_batch_outputs(ids, computed)
        features = cached.output() if computed is None else cached.merge(missing, computed)
        pid = os.getpid()
        return [{"features": features[j], "id": i, "hit": bool(cached.found[j]), "pid": pid,
                 "writer_id": self.backend.stats()["writer_id"]} for j, i in enumerate(indices)]


def _segment_keys(cache_dir) -> Counter:
    keys: Counter = Counter()
    for path in glob.glob(os.path.join(str(cache_dir), MODULE_ID, "segments", "segment_*.arrow")):
        keys.update(ipc.open_file(path).read_all().column("key").to_pylist())
    return keys


def _lock_held_by_someone_else(cache_dir, writer_id: int) -> bool:
    """True if another process holds ``writer_<writer_id>.lock`` (a fresh process checks)."""
    code = textwrap.dedent(
        """
        import fcntl, sys
        fd = open(sys.argv[1], "a")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("held")
        else:
            print("free")
        """
    )
    path = os.path.join(str(cache_dir), MODULE_ID, "writers", f"writer_{writer_id}.lock")
    proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip() == "held"


@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "per-epoch"])
def test_decorator_in_training_loop_with_forked_workers(tmp_path, persistent):
    cache_dir = tmp_path / "cache"
    # flush_every=40: segments are written by the background thread while
    # workers fork, and 16 rows are still pending when epoch 2's workers fork.
    backend = ArrowIPCCacheBackend(cache_dir, MODULE_ID, flush_every=40)
    extractor = FrozenLinear()
    features = CacheModuleDecorator(extractor, backend)
    loader = DataLoader(Samples(), batch_size=8, shuffle=True, num_workers=2,
                        persistent_workers=persistent, multiprocessing_context="fork",
                        generator=torch.Generator().manual_seed(0))
    hit_rates = []
    for _ in range(3):
        before = backend.stats()
        for batch in loader:
            out = features(batch["x"], cache_ids=batch["id"])
            assert torch.equal(out, extractor.reference(batch["x"]))
        after = backend.stats()
        hits = after["hits"] - before["hits"]
        hit_rates.append(hits / (hits + after["misses"] - before["misses"]))
    assert hit_rates == [0.0, 1.0, 1.0]
    assert sorted(extractor.seen) == list(range(N))  # each sample computed once
    backend.flush()
    stats = backend.stats()
    assert stats["writer_id"] == 0 and stats["rows_written"] == N
    # The workers never wrote, never claimed a writer id, never flushed the parent's rows.
    assert sorted(os.listdir(cache_dir / MODULE_ID / "writers")) == ["writer_0.lock"]
    keys = _segment_keys(cache_dir)
    assert sorted(keys, key=int) == [str(i) for i in range(N)] and set(keys.values()) == {1}
    backend.close()


def test_dataset_reads_the_cache_in_forked_workers(tmp_path):
    cache_dir = tmp_path / "cache"
    backend = ArrowIPCCacheBackend(cache_dir, MODULE_ID, flush_every=64)
    extractor = FrozenLinear()
    ids = list(range(N))
    backend.put_batch_outputs(ids, extractor.reference(inputs_for(ids)))
    backend.flush()  # workers see what is on disk: flush before they start
    # Rows put but not flushed when the workers fork: they stay the parent's.
    backend.put_batch_outputs([1000, 1001], extractor.reference(inputs_for([1000, 1001])))
    assert backend.stats()["pending_rows"] == 2

    dataset = CachedFeatures(backend)
    loader = DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2, persistent_workers=True,
                        multiprocessing_context="fork", generator=torch.Generator().manual_seed(1))
    pids = set()
    for _ in range(2):
        for batch in loader:
            assert batch["hit"].all()
            assert not (batch["writer_id"] != -1).any()  # reading claims no writer id
            assert torch.equal(batch["features"], extractor.reference(inputs_for(batch["id"].tolist())))
            pids.update(batch["pid"].tolist())
    assert len(pids) == 2 and os.getpid() not in pids  # two persistent workers served it all

    # The pending rows are invisible to the workers (not on disk yet)...
    probe = DataLoader(CachedFeatures(backend), batch_size=2, sampler=[1000, 1001], num_workers=1,
                       multiprocessing_context="fork")
    (batch,) = list(probe)
    assert not batch["hit"].any()
    # ...and the parent still owns them: written once, by the parent, at its flush.
    assert len(_segment_keys(cache_dir)) == N
    backend.flush()
    keys = _segment_keys(cache_dir)
    assert len(keys) == N + 2 and set(keys.values()) == {1}
    assert backend.stats()["writer_id"] == 0 and _lock_held_by_someone_else(cache_dir, 0)
    backend.close()


def test_workers_that_write_claim_their_own_ids_and_flush_at_exit(tmp_path):
    cache_dir = tmp_path / "cache"
    backend = ArrowIPCCacheBackend(cache_dir, MODULE_ID)  # the parent only reads
    dataset = CachedFeatures(backend, write=True)
    extractor = FrozenLinear()
    # Per-epoch workers: they exit at the end of each epoch (rows flushed then).
    loader = DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2,
                        multiprocessing_context="fork", generator=torch.Generator().manual_seed(2))
    epochs = []
    for _ in range(2):
        hits, writer_ids = 0, set()
        for batch in loader:
            hits += int(batch["hit"].sum())
            writer_ids.update(batch["writer_id"].tolist())
            assert torch.equal(batch["features"], extractor.reference(inputs_for(batch["id"].tolist())))
        epochs.append((hits, writer_ids))
    assert epochs[0][0] == 0 and epochs[0][1] == {0, 1}  # two workers, two writer ids
    assert epochs[1][0] == N  # epoch 2's fresh workers read what epoch 1's workers flushed
    assert backend.stats()["writer_id"] == -1
    backend.refresh()
    assert len(backend) == N
    keys = _segment_keys(cache_dir)
    assert len(keys) == N and set(keys.values()) == {1}
    backend.close()


FORK_CHILD = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    from conftest import FrozenLinear, inputs_for
    from torchcachex import ArrowIPCCacheBackend

    cache_dir, how = sys.argv[2], sys.argv[3]
    reference = FrozenLinear().reference
    backend = ArrowIPCCacheBackend(cache_dir, "loader_features_v1", flush_every=1000)
    backend.put_batch_outputs([0, 1, 2], reference(inputs_for([0, 1, 2])))
    backend.flush()
    backend.put_batch_outputs([3, 4], reference(inputs_for([3, 4])))  # pending at fork time
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        report = {}
        if how == "use":
            cached = backend.lookup_batch([0, 1, 2, 3, 4])
            report["found"] = cached.found.tolist()  # on disk only: not the parent's pending rows
            backend.put_batch_outputs([10, 11], reference(inputs_for([10, 11])))
            backend.flush()
            report["writer_id"] = backend.stats()["writer_id"]
            backend.close()
        os.write(write_fd, json.dumps(report).encode())
        os.close(write_fd)
        if how == "use":
            os._exit(0)
        sys.exit(0)  # normal exit: atexit handlers run in the child
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        child = json.loads(pipe.read() or "{}")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent is intact: its writer id, its pending rows, its flush.
    backend.put_batch_outputs([5], reference(inputs_for([5])))
    backend.flush()
    backend.refresh()
    cached = backend.lookup_batch([0, 1, 2, 3, 4, 5, 10, 11])
    print(json.dumps({"child": child, "writer_id": backend.stats()["writer_id"],
                      "found": cached.found.tolist()}), flush=True)
    sys.stdin.readline()  # the test checks the lock while this process holds it
    backend.close()
    """
)


@pytest.mark.parametrize("how", ["use", "exit"], ids=["child-uses-backend", "child-exits-normally"])
def test_backend_after_raw_fork(tmp_path, how):
    cache_dir = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", FORK_CHILD, TESTS_DIR, str(cache_dir), how],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(600, proc.kill)  # safety net against a hang; no assertion depends on it
    watchdog.start()
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        report = json.loads(line)
        # The parent still holds writer_0.lock: the child did not release it.
        assert _lock_held_by_someone_else(cache_dir, 0)
        proc.stdin.write("done\n")
        proc.stdin.close()
        proc.stdin = None
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    assert report["writer_id"] == 0
    if how == "use":
        assert report["child"] == {"found": [True, True, True, False, False], "writer_id": 1}
        assert report["found"] == [True] * 8  # the parent serves the child's rows after refresh()
        expected = 6 + 2
    else:
        assert report["child"] == {}
        assert report["found"] == [True] * 6 + [False, False]
        expected = 6
    keys = _segment_keys(cache_dir)
    assert len(keys) == expected and set(keys.values()) == {1}  # nothing written twice
    assert "3" in keys and "4" in keys  # the parent's pending rows were written (once)


def test_dataset_reads_and_writes_the_cache_in_spawned_workers(tmp_path):
    """With ``spawn`` the backend pickles as its options; the worker opens its own store."""
    cache_dir = tmp_path / "cache"
    backend = ArrowIPCCacheBackend(cache_dir, MODULE_ID)
    extractor = FrozenLinear()
    half = list(range(N // 2))
    backend.put_batch_outputs(half, extractor.reference(inputs_for(half)))
    backend.flush()
    loader = DataLoader(CachedFeatures(backend, write=True), batch_size=8, num_workers=1,
                        multiprocessing_context="spawn")
    hits, writer_ids = 0, set()
    for batch in loader:
        hits += int(batch["hit"].sum())
        writer_ids.update(batch["writer_id"].tolist())
        assert torch.equal(batch["features"], extractor.reference(inputs_for(batch["id"].tolist())))
    assert hits == N // 2  # the flushed half came from the cache, the rest was computed
    assert writer_ids == {-1, 1}  # reading claims nothing; writing claims an id the parent does not hold
    backend.refresh()  # the worker flushed at exit
    assert len(backend) == N and backend.stats()["writer_id"] == 0
    keys = _segment_keys(cache_dir)
    assert len(keys) == N and set(keys.values()) == {1}
    backend.close()
