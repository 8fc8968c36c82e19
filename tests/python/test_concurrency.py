"""Several processes and several threads on one cache.

Processes: two writers (each claims its own writer id and segment range) and two
readers (a plain backend that never writes, and a non-writer DDP rank) hammer one
cache directory at once. Readers only ever see complete, correct rows (every row
is a pure function of its key), and once the writers have flushed, a refresh()
makes every row visible to every process. The run is bounded by row counts (the
readers stop once they have seen every row), never by sleeping.

Crashes: writers SIGKILLed mid-stream while readers poll never expose a partial
row or a damaged segment to the readers.

Threads: get/put/flush/refresh/stats from several Python threads on one backend
at once (the engine releases the GIL) are safe and lose nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

from torchcachex import ArrowIPCCacheBackend

MODULE_ID = "conc_v1"
ROWS_PER_WRITER = 300

# Shared by the test and its subprocesses: the expected row of every key.
ROWS = textwrap.dedent(
    """
    import hashlib, torch

    def expected_row(key):
        digest = hashlib.shake_128(key.encode()).digest(64)
        length = 1 + digest[0] % 6                      # varying shapes: ragged rows
        values = torch.frombuffer(bytearray(digest[8:8 + 4 * length]), dtype=torch.int32).clone()
        return {"x": values, "tag": torch.tensor([len(key), digest[1]], dtype=torch.int64),
                "meta": {"key": key}}

    def same_row(key, row):
        want = expected_row(key)
        return (isinstance(row, dict) and list(row) == list(want)
                and row["x"].dtype == want["x"].dtype and torch.equal(row["x"], want["x"])
                and row["tag"].dtype == want["tag"].dtype and torch.equal(row["tag"], want["tag"])
                and row["meta"] == want["meta"])
    """
)
exec(ROWS)  # defines expected_row / same_row here too  # noqa: S102

WRITER = ROWS + textwrap.dedent(
    """
    import json, sys
    from torchcachex import ArrowIPCCacheBackend
    cache_dir, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    backend = ArrowIPCCacheBackend(cache_dir, "conc_v1", flush_every=7, max_workers=2)
    batch = 0
    for start in range(0, n, 5):
        keys = [f"{prefix}{i}" for i in range(start, min(n, start + 5))]
        backend.put_batch({k: expected_row(k) for k in keys})
        # Read-your-writes while other processes write too.
        results, missing = backend.get_batch(keys)
        assert missing == [] and all(same_row(k, r) for k, r in zip(keys, results))
        batch += 1
        if batch == 1:
            # Barrier: both writers hold their writer ids before either goes on.
            backend.flush()
            print("claimed", backend.stats()["writer_id"], flush=True)
            sys.stdin.readline()
        elif batch % 4 == 0:
            backend.flush()
    backend.flush()
    print(json.dumps({"writer_id": backend.stats()["writer_id"]}))
    backend.close()
    """
)

READER = ROWS + textwrap.dedent(
    """
    import json, sys
    from torchcachex import ArrowIPCCacheBackend
    cache_dir, rank = sys.argv[1], sys.argv[2]
    keys = json.loads(sys.argv[3])
    kwargs = {} if rank == "none" else {"writer_rank": 0, "current_rank": int(rank)}
    backend = ArrowIPCCacheBackend(cache_dir, "conc_v1", **kwargs)
    seen, lookups, served = set(), 0, 0
    max_lookups = 200_000                   # a safety net only: the loop ends on row counts
    while len(seen) < len(keys):
        lookups += 1
        assert lookups < max_lookups, f"saw only {len(seen)} of {len(keys)} rows"
        backend.refresh()
        results, _ = backend.get_batch(keys)
        for key, row in zip(keys, results):
            if row is None:
                continue
            served += 1
            if not same_row(key, row):
                raise AssertionError(f"reader {rank}: incomplete or wrong row for {key!r}: {row!r}")
            seen.add(key)
    # One snapshot after a final refresh: everything visible, everything correct.
    backend.refresh()
    results, missing = backend.get_batch(keys)
    assert missing == [], missing[:5]
    assert all(same_row(k, r) for k, r in zip(keys, results))
    assert backend.stats()["writer_id"] == -1  # a reader never claims a writer id
    print(json.dumps({"lookups": lookups, "served": served, "skipped": backend.stats()["skipped_segments"]}))
    backend.close()
    """
)


def _all_keys():
    return [f"a{i}" for i in range(ROWS_PER_WRITER)] + [f"b{i}" for i in range(ROWS_PER_WRITER)]


def test_two_writers_and_two_readers_share_one_directory(tmp_path):
    cache_dir = str(tmp_path / "cache")
    keys = _all_keys()
    env = dict(os.environ)
    readers = [
        subprocess.Popen([sys.executable, "-c", READER, cache_dir, rank, json.dumps(keys)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for rank in ("none", "1")
    ]
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, cache_dir, prefix, str(ROWS_PER_WRITER)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
        for prefix in ("a", "b")
    ]
    outputs = []
    try:
        claimed = [proc.stdout.readline().split() for proc in writers]
        assert all(line[:1] == ["claimed"] for line in claimed), claimed
        for proc in writers:  # both hold a writer id now: let them race
            proc.stdin.write("go\n")
            proc.stdin.close()
            proc.stdin = None
        for proc in writers + readers:
            out, err = proc.communicate(timeout=180)
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in writers + readers:
            if proc.poll() is None:
                proc.kill()
    for code, out, err in outputs:
        assert code == 0, out + err
    writer_ids = sorted(json.loads(out)["writer_id"] for _, out, _ in outputs[:2])
    assert writer_ids == [0, 1]  # distinct ids, so distinct segment ranges
    for _, out, _ in outputs[2:]:
        report = json.loads(out)
        assert report["skipped"] == 0, report
    # Segments of both ranges, no leftovers.
    names = os.listdir(os.path.join(cache_dir, MODULE_ID, "segments"))
    assert not [n for n in names if n.endswith(".tmp")]
    numbers = [int(n[len("segment_"):-len(".arrow")]) for n in names]
    assert {n // 1_000_000_000 for n in numbers} == {0, 1}
    # And a fresh process-level view agrees.
    with ArrowIPCCacheBackend(cache_dir, MODULE_ID) as backend:
        assert len(backend) == len(keys)
        results, missing = backend.get_batch(keys)
        assert missing == []
        assert all(same_row(k, r) for k, r in zip(keys, results))


@pytest.mark.parametrize("async_write", [True, False], ids=["async", "sync"])
def test_threads_share_one_backend(tmp_path, async_write):
    """Putters, getters, a flusher and a refresher run at once on one backend."""
    backend = ArrowIPCCacheBackend(tmp_path / "cache", MODULE_ID, flush_every=5,
                                   async_write=async_write, max_workers=1)
    n = 240
    key_sets = {
        "p0": [f"t0_{i}" for i in range(n)],
        "p1": [f"t1_{i}" for i in range(n)],
        # Same keys as p0 with the same values, concurrently: last write wins, all equal.
        "p2": [f"t0_{i}" for i in reversed(range(n))],
    }
    everything = sorted(set(key_sets["p0"]) | set(key_sets["p1"]))
    errors = []
    puts_done = threading.Event()
    progress = threading.Semaphore(0)
    finished_putters = []
    lock = threading.Lock()

    def guard(fn):
        def run(*args):
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                puts_done.set()
                for _ in range(8):
                    progress.release()
        return run

    @guard
    def putter(name):
        keys = key_sets[name]
        for start in range(0, len(keys), 7):
            chunk = keys[start:start + 7]
            backend.put_batch({k: expected_row(k) for k in chunk})
            progress.release()
        with lock:
            finished_putters.append(name)
            if len(finished_putters) == len(key_sets):
                puts_done.set()
                for _ in range(4):  # wake the flusher and the refresher
                    progress.release()

    @guard
    def getter(seed):
        rng = random.Random(seed)
        seen = set()
        # Ends when every row has been seen (rows are visible as soon as put).
        while len(seen) < len(everything):
            assert not errors
            sample = rng.sample(everything, 40) if len(seen) < len(everything) // 2 else \
                [k for k in everything if k not in seen][:200]
            results, _ = backend.get_batch(sample)
            for key, row in zip(sample, results):
                if row is not None:
                    assert same_row(key, row), key
                    seen.add(key)
            cached = backend.lookup_batch(sample[:5])
            assert cached.num_found <= 5
            if puts_done.is_set() and len(seen) < len(everything):
                results, missing = backend.get_batch(everything)
                assert missing == [], f"rows put but not served: {missing[:5]}"

    @guard
    def flusher():
        while not puts_done.is_set():
            progress.acquire()
            backend.flush()
            assert backend.stats()["skipped_segments"] == 0
            len(backend)
            "t0_0" in backend  # noqa: B015

    @guard
    def refresher():
        while not puts_done.is_set():
            progress.acquire()
            backend.refresh()

    threads = [threading.Thread(target=putter, args=(name,)) for name in key_sets]
    threads += [threading.Thread(target=getter, args=(s,)) for s in (1, 2)]
    threads += [threading.Thread(target=flusher), threading.Thread(target=refresher)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    alive = [t for t in threads if t.is_alive()]
    assert not alive, f"threads still running (deadlock?): {alive}"
    if errors:
        raise errors[0]
    backend.flush()
    assert backend.stats()["pending_rows"] == 0
    results, missing = backend.get_batch(everything)
    assert missing == [] and all(same_row(k, r) for k, r in zip(everything, results))
    backend.close()
    with ArrowIPCCacheBackend(tmp_path / "cache", MODULE_ID) as reopened:
        assert len(reopened) == len(everything)
        results, missing = reopened.get_batch(everything)
        assert missing == [] and all(same_row(k, r) for k, r in zip(everything, results))


def test_threads_each_with_their_own_backend_on_one_directory(tmp_path):
    """Two backends in one process claim two writer ids; a third reads both."""
    cache_dir = tmp_path / "cache"
    writers = [ArrowIPCCacheBackend(cache_dir, MODULE_ID, flush_every=3) for _ in range(2)]
    reader = ArrowIPCCacheBackend(cache_dir, MODULE_ID)
    keys = [[f"w{w}_{i}" for i in range(90)] for w in range(2)]
    errors = []

    def write(w):
        try:
            for start in range(0, 90, 9):
                writers[w].put_batch({k: expected_row(k) for k in keys[w][start:start + 9]})
                writers[w].flush()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    # The main thread reads while they write: only complete, correct rows.
    everything = keys[0] + keys[1]
    seen = set()
    while len(seen) < len(everything) and not errors:
        reader.refresh()
        results, _ = reader.get_batch(everything)
        for key, row in zip(everything, results):
            if row is not None:
                assert same_row(key, row), key
                seen.add(key)
        if not any(t.is_alive() for t in threads) and len(seen) < len(everything):
            reader.refresh()
            assert reader.get_batch(everything)[1] == []
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sorted(w.stats()["writer_id"] for w in writers) == [0, 1]
    for backend in writers + [reader]:
        backend.close()


KILLED_WRITER = ROWS + textwrap.dedent(
    """
    import sys
    from torchcachex import ArrowIPCCacheBackend
    cache_dir, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    backend = ArrowIPCCacheBackend(cache_dir, "conc_v1", flush_every=3, max_workers=1)
    for start in range(0, n, 4):
        keys = [f"{prefix}{i}" for i in range(start, min(n, start + 4))]
        backend.put_batch({k: expected_row(k) for k in keys})
        if (start // 4) % 2 == 1:
            backend.flush()
            print("acked", min(n, start + 4), flush=True)
    backend.flush()
    print("done", flush=True)
    backend.close()
    """
)


def test_readers_see_only_complete_rows_while_writers_are_killed(tmp_path):
    """Writers are SIGKILLed mid-stream (right after an acknowledged flush, so the
    kill lands in a later put or segment write) while two readers poll the same
    directory: the readers never see a partial or wrong row nor a damaged segment,
    and once a last writer completes, every row is visible to them."""
    cache_dir = str(tmp_path / "cache")
    n = 120
    keys = [f"k{i}" for i in range(n)]
    env = dict(os.environ)
    readers = [
        subprocess.Popen([sys.executable, "-c", READER, cache_dir, rank, json.dumps(keys)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for rank in ("none", "1")
    ]
    rng = random.Random(4)
    acked = 0
    try:
        for attempt in range(3):  # two writers killed, then one that finishes
            writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, cache_dir, "k", str(n)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            kill_after = rng.randint(1, 6) if attempt < 2 else None
            seen = 0
            for line in writer.stdout:
                if line.startswith("acked"):
                    acked = max(acked, int(line.split()[1]))
                    seen += 1
                    if seen == kill_after:
                        writer.kill()
                        break
            writer.wait(timeout=120)
            if attempt < 2:
                assert writer.returncode == -9, writer.stderr.read()
            else:
                assert writer.returncode == 0, writer.stderr.read()
        assert acked == n
        outputs = [proc.communicate(timeout=180) + (proc.returncode,) for proc in readers]
    finally:
        for proc in readers:
            if proc.poll() is None:
                proc.kill()
    for out, err, code in outputs:
        assert code == 0, out + err
        assert json.loads(out)["skipped"] == 0, out
    with ArrowIPCCacheBackend(cache_dir, MODULE_ID) as backend:
        results, missing = backend.get_batch(keys)
        assert missing == [] and all(same_row(k, r) for k, r in zip(keys, results))
        assert backend.stats()["skipped_segments"] == 0
    names = os.listdir(os.path.join(cache_dir, MODULE_ID, "segments"))
    assert not [name for name in names if name.endswith(".tmp")]  # the last writer cleaned up
