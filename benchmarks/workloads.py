"""Workloads of the torchcachex benchmark suite (driven by ``run_all.py``).

Every workload is a function ``name(params) -> dict`` that runs in its own
process (``python benchmarks/workloads.py NAME PARAMS_JSON OUT_JSON``), so that
process state (page cache of the reader, open maps, allocator, RSS) never leaks
from one figure into another. Timed figures are returned as lists of per-run
values; ``run_all.py`` turns them into median / min / max.

Conventions
-----------
* ``torch.set_num_threads(params["threads"])`` (1 unless a workload says
  otherwise), recorded in every result.
* Features are float32 rows produced by :class:`RowGen` from the sample ids
  (``row(i) = i + 1e-3 * arange(numel)``), so the RAM baseline table and the
  cache hold identical bytes and correctness is checked, not assumed.
* "warm": the segment files are in the page cache (a pass ran before timing).
  "cold": the store is closed, every segment file is dropped from the page
  cache with ``posix_fadvise(POSIX_FADV_DONTNEED)`` and the store reopened
  (its index rebuild reads the key columns back, the data pages stay cold),
  then one pass is timed.
"""

from __future__ import annotations

import ctypes
import gc
import glob
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

MB = 1e6
SHAPES: Dict[str, Tuple[int, ...]] = {
    "16": (16,),
    "512": (512,),
    "4096": (4096,),
    "3x64x64": (3, 64, 64),
}


# =============================================================================== helpers


def row_bytes(shape_name: str) -> int:
    return math.prod(SHAPES[shape_name]) * 4


class RowGen(nn.Module):
    """Deterministic float32 features from int ids: ``row(i) = i + 1e-3 * arange(numel)``.

    Stands in for a frozen backbone in the read/write workloads (never called on
    an all-hit batch). Exact for ids below 2**24.
    """

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(shape)
        self.register_buffer("base", torch.arange(math.prod(shape), dtype=torch.float32) * 1e-3,
                             persistent=False)
        self.calls = 0
        self.rows = 0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += len(ids)
        x = ids.reshape(-1).to(torch.float32)
        return (x.unsqueeze(1) + self.base).view(len(x), *self.shape)


def ram_table(n: int, shape: Sequence[int], chunk: int = 1 << 16) -> torch.Tensor:
    gen = RowGen(shape)
    out = torch.empty((n, *shape), dtype=torch.float32)
    for s in range(0, n, chunk):
        out[s:s + chunk] = gen(torch.arange(s, min(s + chunk, n)))
    return out


def segment_files(cache_path: str) -> List[str]:
    return sorted(glob.glob(os.path.join(cache_path, "segments", "segment_*.arrow")))


def drop_page_cache(paths: Sequence[str]) -> None:
    """Evicts the files' clean pages from the page cache (pages mapped by a live process stay)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def meminfo_cached_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Cached:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def proc_status() -> Dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(line.split()[1]) * 1024
    return out


class RssSampler:
    """Samples RssAnon/RssFile every few ms in a thread; keeps the peaks."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak_anon = 0
        self.peak_file = 0
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            s = proc_status()
            self.peak_anon = max(self.peak_anon, s.get("RssAnon", 0))
            self.peak_file = max(self.peak_file, s.get("RssFile", 0))
            self.peak_total = max(self.peak_total, s.get("VmRSS", 0))
            time.sleep(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_batches(n: int, batch: int, order: str, samples: int, seed: int) -> List[torch.Tensor]:
    """``samples // batch`` batches of LongTensor ids in [0, n).

    sequential: consecutive ids from a random start (wrapping); shuffled: slices of
    one random permutation (no duplicates within a batch).
    """
    count = max(1, samples // batch)
    gen = torch.Generator().manual_seed(seed)
    if order == "sequential":
        start = int(torch.randint(0, max(1, n - count * batch), (1,), generator=gen))
        ids = (torch.arange(count * batch) + start) % n
        return list(ids.split(batch))
    out: List[torch.Tensor] = []
    while len(out) < count:
        if n <= 4 * count * batch:
            perm = torch.randperm(n, generator=gen)
        else:  # large caches: distinct random ids without a full permutation
            perm = torch.unique(torch.randint(0, n, (count * batch * 2,), generator=gen))
            perm = perm[torch.randperm(len(perm), generator=gen)]
        out.extend(b for b in perm.split(batch) if len(b) == batch)
    return out[:count]


def pass_samples(shape_name: str, batch: int, target_bytes: float, lo: int, hi: int, n: int) -> int:
    """Samples per timed pass: about target_bytes of payload, at least 8 batches, within [lo, hi]."""
    s = int(target_bytes // row_bytes(shape_name))
    s = max(lo, min(hi, s), 8 * batch)
    return s


def open_backend(cache_dir: str, module_id: str, **kw: Any):
    from torchcachex import ArrowIPCCacheBackend
    return ArrowIPCCacheBackend(cache_dir, module_id=module_id, **kw)


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_SYNC_FILE_RANGE_WRITE = 2


def sequential_write(directory: str, nbytes: int, chunk: int = 8 << 20, early_writeback: bool = False) -> float:
    """Seconds to write ``nbytes`` to a new file and fsync it. ``early_writeback``: write 1 MB at a time
    and hand each MB to the kernel's writeback at once (``sync_file_range``), as the engine does, so the
    disk writes while later bytes are copied: the fastest durable sequential write found here."""
    if early_writeback:
        chunk = 1 << 20
    block = os.urandom(min(chunk, max(nbytes, 1)))
    path = os.path.join(directory, "seqwrite.bin")
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left, offset = nbytes, 0
        while left > 0:
            written = os.write(fd, block[:left] if left < len(block) else block)
            if early_writeback:
                _LIBC.sync_file_range(fd, offset, written, _SYNC_FILE_RANGE_WRITE)
            offset += written
            left -= written
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    os.unlink(path)
    return elapsed


def files_write(directory: str, sizes: Sequence[int]) -> float:
    """Seconds to write one file per size, each fsynced, then renamed and the directory fsynced
    (what a durable segment costs at the OS level, without any encoding)."""
    sub = os.path.join(directory, "fileswrite")
    os.makedirs(sub, exist_ok=True)
    block = os.urandom(max(sizes) if sizes else 1)
    dfd = os.open(sub, os.O_RDONLY)
    start = time.perf_counter()
    try:
        for i, size in enumerate(sizes):
            tmp = os.path.join(sub, f"f{i}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                mv = memoryview(block)[:size]
                while len(mv):
                    mv = mv[os.write(fd, mv):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(sub, f"f{i}"))
            os.fsync(dfd)
    finally:
        os.close(dfd)
    elapsed = time.perf_counter() - start
    shutil.rmtree(sub)
    return elapsed


# =============================================================================== machine


def machine(params: Dict[str, Any]) -> Dict[str, Any]:
    """Physical baselines: memcpy bandwidth, sequential write+fsync, cold sequential read,
    random 4 KiB cold reads, durable small-file latency, on the cache's file system."""
    torch.set_num_threads(params.get("threads", 1))
    runs = params["runs"]
    directory = params["dir"]
    size = params["memcpy_bytes"]
    src = torch.empty(size // 4, dtype=torch.float32).fill_(1.5)
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch_copy = [size / timed(lambda: dst.copy_(src)) for _ in range(runs)]
    a = src.numpy()
    b = dst.numpy()
    np_copy = [size / timed(lambda: np.copyto(b, a)) for _ in range(runs)]
    del src, dst, a, b

    wbytes = params["write_bytes"]
    seq_write = [wbytes / sequential_write(directory, wbytes) for _ in range(runs)]

    # Cold sequential read and random 4 KiB reads of a file dropped from the page cache.
    path = os.path.join(directory, "readtest.bin")
    block = os.urandom(8 << 20)
    with open(path, "wb") as f:
        for _ in range(wbytes // len(block)):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    fsize = os.path.getsize(path)
    seq_read, rand_read = [], []
    rng = np.random.default_rng(0)
    for _ in range(runs):
        drop_page_cache([path])
        fd = os.open(path, os.O_RDONLY)
        try:
            start = time.perf_counter()
            while os.read(fd, 8 << 20):
                pass
            seq_read.append(fsize / (time.perf_counter() - start))
            drop_page_cache([path])
            offsets = rng.integers(0, fsize // 4096, size=params["random_reads"]) * 4096
            start = time.perf_counter()
            for off in offsets.tolist():
                os.pread(fd, 4096, off)
            rand_read.append(len(offsets) / (time.perf_counter() - start))
        finally:
            os.close(fd)
    os.unlink(path)

    # Durable small file: create, write 4 KiB, fsync, rename, fsync directory.
    small = [files_write(directory, [4096] * 20) / 20 for _ in range(runs)]
    return {
        "threads": torch.get_num_threads(),
        "memcpy_torch_Bps": torch_copy,
        "memcpy_numpy_Bps": np_copy,
        "memcpy_bytes": size,
        "seq_write_Bps": seq_write,
        "write_bytes": wbytes,
        "seq_read_cold_Bps": seq_read,
        "rand_read_4k_cold_iops": rand_read,
        "durable_small_file_s": small,
    }


# =============================================================================== build


def build(params: Dict[str, Any]) -> Dict[str, Any]:
    """Fills a cache of N rows through CacheModuleDecorator (all misses), flushes, closes.

    For small caches also builds the two library baselines: one ``torch.save`` file
    per sample (the ad-hoc way) and a ``torchcache`` persistent cache.
    """
    from torchcachex import CacheModuleDecorator

    torch.set_num_threads(params.get("threads", 1))
    n, shape_name = params["n"], params["shape"]
    shape = SHAPES[shape_name]
    batch = params.get("batch", 1024)
    backend = open_backend(params["dir"], params["module_id"])
    gen = RowGen(shape)
    cached = CacheModuleDecorator(gen, backend)
    start = time.perf_counter()
    for s in range(0, n, batch):
        ids = torch.arange(s, min(s + batch, n))
        cached(ids, cache_ids=ids)
    put_s = time.perf_counter() - start
    backend.flush()
    total_s = time.perf_counter() - start
    stats = backend.stats()
    backend.close()
    out: Dict[str, Any] = {"n": n, "shape": shape_name, "build_s": total_s, "put_s": put_s,
                           "stats": stats, "threads": torch.get_num_threads()}
    if params.get("adhoc_dir"):
        out["adhoc"] = build_adhoc(params["adhoc_dir"], n, shape)
    if params.get("torchcache_dir"):
        out["torchcache"] = build_torchcache(params["torchcache_dir"], n, shape)
    return out


def build_adhoc(directory: str, n: int, shape: Sequence[int], batch: int = 256) -> Dict[str, Any]:
    os.makedirs(directory, exist_ok=True)
    gen = RowGen(shape)
    start = time.perf_counter()
    for s in range(0, n, batch):
        ids = torch.arange(s, min(s + batch, n))
        rows = gen(ids)
        for i, row in zip(ids.tolist(), rows):
            torch.save(row.clone(), os.path.join(directory, f"{i}.pt"))  # clone: a view saves its whole storage
    return {"build_s": time.perf_counter() - start}


def torchcache_available() -> Optional[str]:
    try:
        import torchcache  # noqa: F401
        from importlib.metadata import version
        return version("torchcache")
    except Exception:  # noqa: BLE001
        return None


def make_torchcache_gen(directory: str, shape: Sequence[int]) -> nn.Module:
    """RowGen under torchcache's persistent decorator; its key is a hash of the input,
    so the input is the id as a (B, 1) float tensor."""
    from torchcache import torchcache

    @torchcache(persistent=True, persistent_cache_dir=directory)
    class TorchcacheRowGen(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gen = RowGen(shape)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.gen(x[:, 0].to(torch.int64))

    return TorchcacheRowGen()


def build_torchcache(directory: str, n: int, shape: Sequence[int], batch: int = 256) -> Dict[str, Any]:
    if torchcache_available() is None:
        return {"error": "torchcache not installed"}
    try:
        module = make_torchcache_gen(directory, shape)
        xs = torch.arange(n, dtype=torch.float32)[:, None]
        start = time.perf_counter()
        for s in range(0, n, batch):
            module(xs[s:s + batch])
        return {"build_s": time.perf_counter() - start, "module_rows": module.gen.rows}
    except Exception as exc:  # noqa: BLE001 - a baseline failing is a finding, not a crash
        return {"error": f"{type(exc).__name__}: {exc}"}


# =============================================================================== reads


def reads(params: Dict[str, Any]) -> Dict[str, Any]:
    """All-hit reads through CacheModuleDecorator vs index_select and memcpy, for every
    (batch, order) of one cache; warm or cold page cache; optional library baselines."""
    from torchcachex import CacheModuleDecorator

    torch.set_num_threads(params.get("threads", 1))
    n, shape_name = params["n"], params["shape"]
    shape = SHAPES[shape_name]
    rbytes = row_bytes(shape_name)
    runs = params["runs"]
    cold = params["cold"]
    t0 = time.perf_counter()
    table = ram_table(n, shape)
    flat = table.view(-1)
    row_floats = math.prod(shape)
    gen = RowGen(shape)

    state: Dict[str, Any] = {}

    def reopen() -> None:
        if "backend" in state:
            state["backend"].close()
            del state["backend"], state["cached"]
            gc.collect()
        if cold:
            drop_page_cache(segment_files(os.path.join(params["dir"], params["module_id"])))
        backend = open_backend(params["dir"], params["module_id"])
        state["backend"] = backend
        state["cached"] = CacheModuleDecorator(gen, backend)

    cached_before = meminfo_cached_mb()
    reopen()
    drop_check = {"cached_mb_before": cached_before, "cached_mb_after_drop_and_open": meminfo_cached_mb()}
    entries = state["backend"].stats()["entries"]
    assert entries >= n, f"cache holds {entries} entries, expected {n}"
    first_pass = None
    if not cold:
        # Warm cells measure the steady state of a training run (epoch 2 on): every segment has been
        # read once by this process, so its one-time whole-file checksum is behind it. That first
        # pass (open + first epoch, page cache warm) is timed and reported on its own.
        fp_batch = 256
        fp_batches = make_batches(n, fp_batch, "shuffled", n, seed=7)

        def first_pass_fn() -> None:
            c = state["cached"]
            for b in fp_batches:
                c(b, cache_ids=b)

        fp_s = timed(first_pass_fn)
        first_pass = {"batch": fp_batch, "samples": len(fp_batches) * fp_batch, "s": fp_s}

    cells = []
    for batch in params["batches"]:
        for order in params["orders"]:
            samples = pass_samples(shape_name, batch, params["pass_bytes"], params["pass_min"],
                                   params["pass_max"] if not cold else params["cold_pass_max"], n)
            dst = torch.empty(batch * row_floats, dtype=torch.float32)
            cell = {"batch": batch, "order": order, "samples": None, "cache_s": [], "index_select_s": [],
                    "memcpy_s": [], "module_rows": 0}
            for run in range(runs):
                batches = make_batches(n, batch, order, samples, seed=1000 * run + batch)
                cell["samples"] = len(batches) * batch
                starts = [int(b[0]) if order == "sequential" else int(b[0]) % max(1, n - batch)
                          for b in batches]
                starts = [min(s, n - batch) for s in starts]

                def cache_pass() -> None:
                    c = state["cached"]
                    for b in batches:
                        c(b, cache_ids=b)

                def ram_pass() -> None:
                    for b in batches:
                        table.index_select(0, b)

                def memcpy_pass() -> None:
                    for s in starts:
                        dst.copy_(flat[s * row_floats:(s + batch) * row_floats])

                if cold:
                    reopen()
                elif run == 0:
                    cache_pass()  # warm-up: page cache, maps, allocator
                    ram_pass()
                    memcpy_pass()
                rows_before = gen.rows
                hits_before = state["backend"].stats()["hits"]
                cell["cache_s"].append(timed(cache_pass))
                cell["index_select_s"].append(timed(ram_pass))
                cell["memcpy_s"].append(timed(memcpy_pass))
                cell["module_rows"] += gen.rows - rows_before
                hits = state["backend"].stats()["hits"] - hits_before
                assert hits == len(batches) * batch, f"expected all hits, got {hits}"
                if run == 0:
                    probe = batches[0]
                    assert torch.equal(state["cached"](probe, cache_ids=probe), table.index_select(0, probe))
            cells.append(cell)

    libs: Dict[str, Any] = {}
    if params.get("adhoc_dir") and not cold:
        libs["adhoc"] = read_adhoc(params, table)
    if params.get("torchcache_dir") and not cold:
        libs["torchcache"] = read_torchcache(params, table)
    stats = state["backend"].stats()
    state["backend"].close()
    return {"n": n, "shape": shape_name, "row_bytes": rbytes, "cold": cold, "cells": cells, "libs": libs,
            "first_pass": first_pass, "stats": stats, "drop_check": drop_check, "threads": torch.get_num_threads(),
            "wall_s": time.perf_counter() - t0}


def read_adhoc(params: Dict[str, Any], table: torch.Tensor) -> Dict[str, Any]:
    """One torch.load per sample, then torch.stack: the ad-hoc per-sample-file cache."""
    directory = params["adhoc_dir"]
    n = params["n"]
    out = {}
    for batch in params["lib_batches"]:
        for order in params["orders"]:
            samples = min(params["lib_samples"], n)
            res = {"batch": batch, "order": order, "s": [], "samples": None}
            for run in range(params["runs"]):
                batches = make_batches(n, batch, order, samples, seed=77 + run)
                res["samples"] = len(batches) * batch

                def load_pass() -> None:
                    for b in batches:
                        torch.stack([torch.load(os.path.join(directory, f"{i}.pt")) for i in b.tolist()])

                if run == 0:
                    b = batches[0]
                    got = torch.stack([torch.load(os.path.join(directory, f"{i}.pt")) for i in b.tolist()])
                    assert torch.equal(got, table.index_select(0, b))
                res["s"].append(timed(load_pass))
            out[f"{batch}/{order}"] = res
    return out


def read_torchcache(params: Dict[str, Any], table: torch.Tensor) -> Dict[str, Any]:
    """torchcache persistent cache, read in a new process: the first pass reads its files,
    later passes are served from its in-process memory cache."""
    if torchcache_available() is None:
        return {"error": "torchcache not installed"}
    n = params["n"]
    shape = SHAPES[params["shape"]]
    try:
        module = make_torchcache_gen(params["torchcache_dir"], shape)
        xs = torch.arange(n, dtype=torch.float32)[:, None]
        out: Dict[str, Any] = {}
        # First pass of this process over every sample: from its files.
        order_ids = torch.randperm(n, generator=torch.Generator().manual_seed(5))
        batch0 = params["lib_batches"][0]
        start = time.perf_counter()
        for s in range(0, n, batch0):
            module(xs[order_ids[s:s + batch0]])
        out["first_pass_samples_per_s"] = n / (time.perf_counter() - start)
        out["first_pass_module_rows"] = module.gen.rows
        for batch in params["lib_batches"]:
            for order in params["orders"]:
                samples = min(params["lib_samples"], n)
                res = {"batch": batch, "order": order, "s": [], "samples": None}
                for run in range(params["runs"]):
                    batches = make_batches(n, batch, order, samples, seed=77 + run)
                    res["samples"] = len(batches) * batch
                    inputs = [xs[b] for b in batches]

                    def tc_pass() -> None:
                        for x in inputs:
                            module(x)

                    if run == 0:
                        got = module(inputs[0])
                        assert torch.allclose(got, table.index_select(0, batches[0]))
                    res["s"].append(timed(tc_pass))
                out[f"{batch}/{order}"] = res
        out["module_rows_total"] = module.gen.rows
        return out
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"}


# =============================================================================== writes


def writes(params: Dict[str, Any]) -> Dict[str, Any]:
    """Put throughput of all-miss batches through the decorator (flush included) against
    sequential write+fsync of the same bytes (the fastest of three), and against one durable file
    per segment; and the segment writer's own bandwidth (``stats()["write_seconds"]``) beside them."""
    from torchcachex import CacheModuleDecorator

    torch.set_num_threads(params.get("threads", 1))
    shape_name = params["shape"]
    shape = SHAPES[shape_name]
    n = max(params["batch"] * 4, int(params["payload_bytes"] // row_bytes(shape_name)))
    n = min(n, params.get("max_rows", n))  # small rows: bounded by per-batch overhead, not bytes
    data = ram_table(n, shape)
    ids = torch.arange(n)
    directory = params["dir"]
    batch = params["batch"]
    res: Dict[str, Any] = {"shape": shape_name, "n": n, "batch": batch, "async_write": params["async_write"],
                           "payload_bytes": n * row_bytes(shape_name), "put_s": [], "segment_bytes": [],
                           "segments": [], "seq_write_s": [], "seq_write_tries_s": [], "seq_write_early_s": [],
                           "files_write_s": [], "direct_put_s": [], "writer_s": []}
    for run in range(params["runs"]):
        for direct in (False, True):
            module_id = f"writes_{shape_name}_{run}_{int(direct)}"
            backend = open_backend(directory, module_id, async_write=params["async_write"])
            cached = CacheModuleDecorator(nn.Identity(), backend)

            def put_pass() -> None:
                for s in range(0, n, batch):
                    if direct:
                        backend.put_batch_outputs(ids[s:s + batch], data[s:s + batch])
                    else:
                        cached(data[s:s + batch], cache_ids=ids[s:s + batch])
                backend.flush()

            elapsed = timed(put_pass)
            stats = backend.stats()
            backend.close()
            assert stats["rows_written"] == n, stats
            sizes = [os.path.getsize(p) for p in segment_files(os.path.join(directory, module_id))]
            shutil.rmtree(os.path.join(directory, module_id))
            if direct:
                res["direct_put_s"].append(elapsed)
                continue
            res["put_s"].append(elapsed)
            res["segment_bytes"].append(stats["bytes_written"])
            res["segments"].append(stats["segments"])
            res["writer_s"].append(stats["write_seconds"])
            # The plain sequential write moves between two modes on this VM (345-1,420 MB/s within
            # one step, whose ratios then swung from 0.9 to 3.3): the fastest of three writes, the
            # disk's limit at that moment, is the baseline.
            tries = [sequential_write(directory, stats["bytes_written"]) for _ in range(3)]
            res["seq_write_s"].append(min(tries))
            res["seq_write_tries_s"].append(tries)
            res["seq_write_early_s"].append(sequential_write(directory, stats["bytes_written"], early_writeback=True))
            res["files_write_s"].append(files_write(directory, sizes))
    res["threads"] = torch.get_num_threads()
    return res


# =============================================================================== open, flush


def open_time(params: Dict[str, Any]) -> Dict[str, Any]:
    """Time to open an existing cache in a fresh process (warm or cold page cache)."""
    path = os.path.join(params["dir"], params["module_id"])
    files = segment_files(path)
    if params["cold"]:
        drop_page_cache(files)
    start = time.perf_counter()
    cpu_start = time.process_time()
    backend = open_backend(params["dir"], params["module_id"])
    open_cpu_s = time.process_time() - cpu_start  # CPU time of this process: robust to a loaded machine
    open_s = time.perf_counter() - start
    ids = torch.randint(0, params["n"], (256,), generator=torch.Generator().manual_seed(3))
    start = time.perf_counter()
    cb = backend.lookup_batch(ids)
    first_lookup_s = time.perf_counter() - start
    assert cb.all_found
    stats = backend.stats()
    backend.close()
    return {"open_s": open_s, "open_cpu_s": open_cpu_s, "first_lookup_s": first_lookup_s, "stats": stats, "segment_files": len(files),
            "cold": params["cold"]}


def flush_cost(params: Dict[str, Any]) -> Dict[str, Any]:
    """Put + flush of 2048 new rows (one segment) into an existing cache of N entries.

    With ``base_module_id`` (the 10k-entry cache), the same is done into that cache too, in the
    same process, alternating run by run (the order swapped every run): the disk's fsync latency
    moves by 2-3x within seconds here and is most of a flush, so only pairs measured side by side
    compare the cache sizes. ``ratio`` holds the per-run ratios (N ÷ base)."""
    torch.set_num_threads(params.get("threads", 1))
    shape = SHAPES[params["shape"]]
    n = params["n"]
    rows = params.get("rows", 2048)
    gen = RowGen(shape)
    caches = [("main", open_backend(params["dir"], params["module_id"]))]
    if params.get("base_module_id"):
        caches.append(("base", open_backend(params["dir"], params["base_module_id"])))
    out: Dict[str, Any] = {"n": n, "rows": rows, "first_s": None, "s": [], "put_s": [], "flush_s": []}
    base: Dict[str, Any] = {"s": [], "put_s": [], "flush_s": []}
    next_id = n + 10_000_000  # beyond every existing id (of either cache)
    for run in range(params["runs"] + 1):
        for name, backend in (caches if run % 2 == 0 else caches[::-1]):
            ids = torch.arange(next_id, next_id + rows)
            next_id += rows
            feats = gen(ids)
            start = time.perf_counter()
            backend.put_batch_outputs(ids, feats)
            mid = time.perf_counter()
            backend.flush()
            end = time.perf_counter()
            if run == 0:  # includes claiming the writer id (a scan of the segment directory)
                if name == "main":
                    out["first_s"] = end - start
                continue
            rec = out if name == "main" else base
            rec["s"].append(end - start)
            rec["put_s"].append(mid - start)
            rec["flush_s"].append(end - mid)
    out["stats"] = caches[0][1].stats()
    if len(caches) > 1:
        out["base"] = base
        out["ratio"] = [a / b for a, b in zip(out["s"], base["s"])]
    for _, backend in caches:
        backend.close()
    return out


# =============================================================================== RSS


def rss(params: Dict[str, Any]) -> Dict[str, Any]:
    """Peak memory of a 1M-entry run: fill the cache through the decorator (features made
    from ids, no source table in RAM), flush, then one shuffled all-hit epoch."""
    from torchcachex import CacheModuleDecorator

    torch.set_num_threads(params.get("threads", 1))
    shape_name = params["shape"]
    shape = SHAPES[shape_name]
    n, batch = params["n"], params["batch"]
    gen = RowGen(shape)
    gc.collect()
    base = proc_status()
    backend = open_backend(params["dir"], params["module_id"], lru_size=params["lru_size"],
                           flush_every=params["flush_every"])
    cached = CacheModuleDecorator(gen, backend)
    out: Dict[str, Any] = {"n": n, "shape": shape_name, "batch": batch, "baseline": base,
                           "lru_size": params["lru_size"], "flush_every": params["flush_every"]}
    with RssSampler() as sampler:
        start = time.perf_counter()
        for s in range(0, n, batch):
            ids = torch.arange(s, min(s + batch, n))
            cached(ids, cache_ids=ids)
        backend.flush()
        out["fill_s"] = time.perf_counter() - start
        out["after_fill"] = proc_status()
        out["fill_peak_anon"] = sampler.peak_anon
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        start = time.perf_counter()
        rows_before = gen.rows
        for b in perm.split(batch):
            cached(b, cache_ids=b)
        out["epoch2_s"] = time.perf_counter() - start
        assert gen.rows == rows_before, "epoch 2 must be all hits"
    out["after_epoch2"] = proc_status()
    out["peak_anon"] = sampler.peak_anon
    out["peak_file"] = sampler.peak_file
    out["peak_total_sampled"] = sampler.peak_total
    out["vm_hwm"] = proc_status()["VmHWM"]
    out["stats"] = backend.stats()
    backend.close()
    if params.get("cleanup", True):
        shutil.rmtree(os.path.join(params["dir"], params["module_id"]))
    return out


# =============================================================================== conv workload


class ConvFeatures(nn.Module):
    """A small frozen convolutional feature extractor: 3x32x32 images -> 512 float32 features."""

    def __init__(self, width: int):
        super().__init__()
        w = width
        if w == 0:  # "light": ~3 ms per batch of 256 here, just above the 2 ms of issue 3's epoch target
            self.body = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 16 * 16, 512), nn.ReLU())
            return
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),          # 16x16
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),      # 8x8
            nn.Conv2d(2 * w, 32, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),                                # 32*4*4 = 512
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SyntheticImages(torch.utils.data.Dataset):
    """Deterministic uint8 images (stored compactly), returned as float in [0, 1] with their index."""

    def __init__(self, n: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
        self.labels = torch.randint(0, 10, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {"image": self.images[i].float().div_(255), "label": self.labels[i], "cache_ids": i}


def make_extractor(width: int) -> nn.Module:
    torch.manual_seed(0)
    return ConvFeatures(width).eval().requires_grad_(False)


def _settle() -> None:
    """Untimed, before a timed epoch: writes back every dirty page (``os.sync()``) and runs a full
    garbage collection. The variants before it (16,384 ``torch.save`` files, a cache removed) leave
    the kernel writing back for a second or more, and Python's occasional full collection of this
    process's objects takes ~110 ms (a quarter of a light epoch): either would otherwise land in
    whichever epoch comes next. With ``gc.collect()`` first, an epoch (about 60 young collections)
    does not reach the next full one."""
    os.sync()
    gc.collect()


def _epoch(loader: Any, features: Callable[[Dict[str, Any]], torch.Tensor], head: nn.Module,
           opt: torch.optim.Optimizer, settle: bool = True) -> float:
    """One epoch's wall time (after an untimed _settle() unless the caller did it)."""
    if settle:
        _settle()
    start = time.perf_counter()
    for batch in loader:
        f = features(batch)
        loss = nn.functional.cross_entropy(head(f), batch["label"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


class _ConvLoop:
    """The training loop of the conv workloads: a DataLoader over synthetic images, a frozen
    extractor of the given width, and a linear head trained with SGD; ``module_ms`` is the
    extractor's cost per batch (forward only, no_grad), for the record."""

    def __init__(self, params: Dict[str, Any], shuffle_seed: int = 0, time_module: bool = True):
        torch.set_num_threads(params.get("threads", 1))
        self.n, self.batch, self.width = params["n"], params["batch"], params["width"]
        dataset = SyntheticImages(self.n)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=self.batch, shuffle=True, num_workers=0,
                                                  generator=torch.Generator().manual_seed(shuffle_seed))
        self.extractor = make_extractor(self.width)
        self.head = nn.Linear(512, 10)
        self.opt = torch.optim.SGD(self.head.parameters(), lr=0.01)
        self.module_ms: List[float] = []
        if time_module:
            x = torch.rand(self.batch, 3, 32, 32)
            with torch.no_grad():
                self.extractor(x)
                self.module_ms = [1e3 * timed(lambda: self.extractor(x)) for _ in range(max(5, params["runs"]))]

    def epoch(self, features: Callable[[Dict[str, Any]], torch.Tensor], settle: bool = True) -> float:
        """One epoch's wall time with these features (see _epoch)."""
        return _epoch(self.loader, features, self.head, self.opt, settle=settle)

    def uncached(self, b: Dict[str, Any]) -> torch.Tensor:
        """The features of a batch without a cache (the module under no_grad)."""
        with torch.no_grad():
            return self.extractor(b["image"])

    def record(self) -> Dict[str, Any]:
        """What a result records about the loop."""
        return {"n": self.n, "batch": self.batch, "width": self.width, "module_ms_per_batch": self.module_ms,
                "threads": torch.get_num_threads()}


def first_epoch(params: Dict[str, Any]) -> Dict[str, Any]:
    """The first-epoch target alone: the conv loop's uncached epoch against torchcachex's first
    epoch (async writes, ``flush()`` at its end, a new cache each run), and nothing else in the
    process. The two alternate run by run, the order swapped every run, each after an untimed
    _settle(); ``run_all.py`` runs several such processes and pools their per-run ratios."""
    from torchcachex import CacheModuleDecorator

    loop = _ConvLoop(params)
    res: Dict[str, Any] = {"uncached_s": [], "tcx_e1_async_s": [], **loop.record()}
    for run in range(params["runs"]):
        for variant in (("uncached", "tcx") if run % 2 == 0 else ("tcx", "uncached")):
            if variant == "uncached":
                res["uncached_s"].append(loop.epoch(loop.uncached))
                continue
            module_id = f"first_epoch_{loop.width}_{run}"
            backend = open_backend(params["dir"], module_id)
            cached = CacheModuleDecorator(loop.extractor, backend)
            _settle()
            start = time.perf_counter()
            loop.epoch(lambda b: cached(b["image"], cache_ids=b["cache_ids"]), settle=False)
            backend.flush()
            res["tcx_e1_async_s"].append(time.perf_counter() - start)
            backend.close()
            shutil.rmtree(os.path.join(params["dir"], module_id))
    return res


def conv(params: Dict[str, Any]) -> Dict[str, Any]:
    """A real-looking loop: DataLoader over synthetic images -> frozen conv extractor ->
    linear head + SGD step. Epoch 1 (misses, writes) and epoch 2 (hits) of torchcachex,
    against the uncached module, the ad-hoc torch.save/torch.load way and torchcache."""
    from torchcachex import CacheModuleDecorator

    loop = _ConvLoop(params)
    n, width = loop.n, loop.width
    directory = params["dir"]
    loader, extractor, head, opt = loop.loader, loop.extractor, loop.head, loop.opt

    res: Dict[str, Any] = {k: [] for k in (
        "uncached_s", "tcx_e1_async_s", "tcx_e1_sync_s", "tcx_e2_s", "adhoc_e1_s", "adhoc_e2_s",
        "torchcache_e1_s", "torchcache_e2_s", "data_only_s")}
    res.update({**loop.record(), "errors": {}})
    have_tc = torchcache_available() is not None and params.get("torchcache", True)
    uncached = loop.uncached

    for run in range(params["runs"]):
        # Data loading + head alone: how much of an epoch is not the extractor.
        res["data_only_s"].append(_epoch(loader, lambda b: torch.zeros(len(b["label"]), 512), head, opt))
        res["uncached_s"].append(_epoch(loader, uncached, head, opt))

        for mode in ("async", "sync"):
            module_id = f"conv_{width}_{run}_{mode}"
            backend = open_backend(directory, module_id, async_write=(mode == "async"))
            cached = CacheModuleDecorator(extractor, backend)

            def tcx(b: Dict[str, Any]) -> torch.Tensor:
                return cached(b["image"], cache_ids=b["cache_ids"])

            _settle()
            start = time.perf_counter()
            _epoch(loader, tcx, head, opt, settle=False)
            backend.flush()  # durable at the end of the epoch, as the README recommends
            res[f"tcx_e1_{mode}_s"].append(time.perf_counter() - start)
            if mode == "async":
                hits = backend.stats()["hits"]
                res["tcx_e2_s"].append(_epoch(loader, tcx, head, opt))
                assert backend.stats()["hits"] - hits == n, "epoch 2 must be all hits"
                res.setdefault("tcx_stats", backend.stats())
            backend.close()
            if run > 0 or mode == "sync":
                shutil.rmtree(os.path.join(directory, module_id))
            else:
                res["tcx_keep"] = module_id  # read again in a new process by conv_reopen

        # Ad hoc: one torch.save file per sample, torch.load on the next epoch.
        adhoc_dir = os.path.join(directory, f"adhoc_{width}_{run}")
        os.makedirs(adhoc_dir, exist_ok=True)

        def adhoc(b: Dict[str, Any]) -> torch.Tensor:
            ids = b["cache_ids"].tolist()
            paths = [os.path.join(adhoc_dir, f"{i}.pt") for i in ids]
            present = [os.path.exists(p) for p in paths]
            if all(present):
                return torch.stack([torch.load(p) for p in paths])
            with torch.no_grad():
                f = extractor(b["image"])
            for p, row in zip(paths, f):
                torch.save(row.clone(), p)
            return f

        res["adhoc_e1_s"].append(_epoch(loader, adhoc, head, opt))
        res["adhoc_e2_s"].append(_epoch(loader, adhoc, head, opt))
        if run > 0:
            shutil.rmtree(adhoc_dir)
        else:
            res["adhoc_keep"] = adhoc_dir

        if have_tc:
            try:
                tc_dir = os.path.join(directory, f"torchcache_{width}_{run}")
                tc_module = make_torchcache_conv(tc_dir, width)

                def tc(b: Dict[str, Any]) -> torch.Tensor:
                    with torch.no_grad():
                        return tc_module(b["image"])

                res["torchcache_e1_s"].append(_epoch(loader, tc, head, opt))
                res["torchcache_e2_s"].append(_epoch(loader, tc, head, opt))
                del tc_module
                if run > 0:
                    shutil.rmtree(tc_dir)
                else:
                    res["torchcache_keep"] = tc_dir
            except Exception as exc:  # noqa: BLE001
                res["errors"]["torchcache"] = f"{type(exc).__name__}: {exc}"
                have_tc = False
    return res


def make_torchcache_conv(directory: str, width: int) -> nn.Module:
    from torchcache import torchcache

    @torchcache(persistent=True, persistent_cache_dir=directory)
    class TorchcacheConv(ConvFeatures):
        def __init__(self, w: int) -> None:
            super().__init__(w)
            # torchcache refuses trainable parameters when it wraps the module
            self.eval().requires_grad_(False)

    torch.manual_seed(0)
    return TorchcacheConv(width).eval().requires_grad_(False)


def conv_reopen(params: Dict[str, Any]) -> Dict[str, Any]:
    """Epoch 2 in a new process (a second training run): torchcachex reopened, the ad-hoc
    files and torchcache's persistent directory, page cache warm."""
    from torchcachex import CacheModuleDecorator

    loop = _ConvLoop(params, shuffle_seed=1, time_module=False)
    width, loader, extractor, head, opt = loop.width, loop.loader, loop.extractor, loop.head, loop.opt
    out: Dict[str, Any] = {}
    if params.get("tcx"):
        start = time.perf_counter()
        backend = open_backend(params["dir"], params["tcx"])
        out["tcx_open_s"] = time.perf_counter() - start
        cached = CacheModuleDecorator(extractor, backend)
        out["tcx_new_run_e2_s"] = _epoch(loader, lambda b: cached(b["image"], cache_ids=b["cache_ids"]),
                                         head, opt)
        out["tcx_misses"] = backend.stats()["misses"]
        backend.close()
    if params.get("adhoc"):
        d = params["adhoc"]
        out["adhoc_new_run_e2_s"] = _epoch(
            loader, lambda b: torch.stack([torch.load(os.path.join(d, f"{i}.pt"))
                                           for i in b["cache_ids"].tolist()]), head, opt)
    if params.get("torchcache"):
        try:
            module = make_torchcache_conv(params["torchcache"], width)

            def tc(b: Dict[str, Any]) -> torch.Tensor:
                with torch.no_grad():
                    return module(b["image"])

            out["torchcache_new_run_e2_s"] = _epoch(loader, tc, head, opt)
        except Exception as exc:  # noqa: BLE001
            out["torchcache_error"] = f"{type(exc).__name__}: {exc}"
    return out


# =============================================================================== profile


def profile_target(params: Dict[str, Any]) -> Dict[str, Any]:
    """A steady loop to attach a sampling profiler to: all-hit forwards ("hits") or
    all-miss puts through the decorator ("puts"), for params["seconds"]."""
    from torchcachex import CacheModuleDecorator

    torch.set_num_threads(params.get("threads", 1))
    shape = SHAPES[params["shape"]]
    n, batch = params["n"], params["batch"]
    gen = RowGen(shape)
    backend = open_backend(params["dir"], params["module_id"])
    cached = CacheModuleDecorator(gen if params["mode"] == "hits" else nn.Identity(), backend)
    deadline = time.perf_counter() + params["seconds"]
    calls = 0
    if params["mode"] == "hits":
        batches = make_batches(n, batch, "shuffled", 64 * batch, seed=9)
        while time.perf_counter() < deadline:
            for b in batches:
                cached(b, cache_ids=b)
            calls += len(batches)
    else:
        data = ram_table(batch * 64, shape)
        next_id = 0
        while time.perf_counter() < deadline:
            for s in range(0, len(data), batch):
                ids = torch.arange(next_id, next_id + batch)
                next_id += batch
                cached(data[s:s + batch], cache_ids=ids)
            calls += len(data) // batch
        backend.flush()
    backend.close()
    return {"calls": calls}



# =============================================================================== hit path


def hitpath(params: Dict[str, Any]) -> Dict[str, Any]:
    """Where the time of an all-hit forward goes (512-dim float32 by default): per-batch
    microseconds of ``index_select`` (RAM upper bound), the engine call the decorator makes
    (``_core.Store.get_batch_fast``), ``backend.lookup_fast`` (+ key normalization, the
    tensor view) and the whole decorator forward (+ ids, ``nn.Module.__call__``), interleaved.
    Also counts Python function calls per forward at two batch sizes: equal counts mean
    the hit path does no per-sample Python work."""
    from torchcachex import CacheModuleDecorator

    torch.set_num_threads(params.get("threads", 1))
    n, shape_name, batch = params["n"], params["shape"], params["batch"]
    shape = SHAPES[shape_name]
    table = ram_table(n, shape)
    module_id = params["module_id"]
    backend = open_backend(params["dir"], module_id)
    if len(backend) < n:
        cached = CacheModuleDecorator(RowGen(shape), backend)
        for s in range(0, n, 1024):
            ids = torch.arange(s, min(s + 1024, n))
            cached(ids, cache_ids=ids)
        backend.flush()
        backend.close()
        backend = open_backend(params["dir"], module_id)
    gen = RowGen(shape)
    cached = CacheModuleDecorator(gen, backend)
    store = backend._store
    batches = make_batches(n, batch, "shuffled", params["batches"] * batch, seed=5)
    arrays = [b.numpy() for b in batches]

    def p_isel() -> None:
        for b in batches:
            table.index_select(0, b)

    def p_core() -> None:
        for a in arrays:
            store.get_batch_fast(a)

    def p_lookup() -> None:
        for b in batches:
            backend.lookup_fast(b)

    def p_forward() -> None:
        for b in batches:
            cached(b, cache_ids=b)

    passes = {"index_select": p_isel, "core_get_batch": p_core, "lookup_batch": p_lookup,
              "decorator": p_forward}
    for f in passes.values():  # warm-up
        f()
    out: Dict[str, Any] = {k + "_us": [] for k in passes}
    for _ in range(params["runs"]):
        for k, f in passes.items():
            out[k + "_us"].append(1e6 * timed(f) / len(batches))
    assert gen.rows == 0, "all hits expected"
    probe = batches[0]
    assert torch.equal(cached(probe, cache_ids=probe), table.index_select(0, probe))

    def count_calls(bsize: int) -> int:
        ids = torch.arange(bsize) * (n // bsize)
        cached(ids, cache_ids=ids)
        calls = [0]

        def prof(frame: Any, event: str, arg: Any) -> None:
            if event in ("call", "c_call"):
                calls[0] += 1

        sys.setprofile(prof)
        try:
            cached(ids, cache_ids=ids)
        finally:
            sys.setprofile(None)
        return calls[0]

    out["python_calls_per_forward"] = {str(b): count_calls(b) for b in (64, 1024) if b <= n}
    out.update({"n": n, "shape": shape_name, "batch": batch, "batches": len(batches),
                "threads": torch.get_num_threads()})
    backend.close()
    return out


# =============================================================================== main

WORKLOADS = {f.__name__: f for f in (machine, build, reads, writes, open_time, flush_cost, rss, conv, first_epoch,
                                       conv_reopen, profile_target, hitpath)}


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[1] not in WORKLOADS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(WORKLOADS)}}} PARAMS_JSON OUT_JSON")
    params = json.loads(sys.argv[2])
    result = WORKLOADS[sys.argv[1]](params)
    result["_status_end"] = proc_status()
    with open(sys.argv[3], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
