"""Forward-path benchmark of CacheModuleDecorator (figures for the closing note).

Measures, on synthetic 512-dim float32 features:

(a) all-hit forward throughput (samples/s) through CacheModuleDecorator at
    batch 256, on a prefilled and flushed cache reopened as in a new run, with
    random batches of LongTensor ids;
(b) the same batches gathered from an in-RAM tensor with ``index_select``: the
    upper bound for any cache; and the ratio a/b;
(c) put throughput (MB/s of feature payload) of all-miss batches through the
    decorator with an identity module, flush included, against the sequential
    write bandwidth (write + fsync) of the same file system; and the ratio;
(d) a profile hint: Python function calls during one all-hit forward at batch
    256 and at batch 1024, counted with ``sys.setprofile``. Equal counts mean the
    hit path does no per-sample Python work.

Every timed figure is the median of ``--runs`` runs (at least 5), with min and max.

Usage::

    python benchmarks/bench_forward.py            # about a minute
    python benchmarks/bench_forward.py --quick    # a few seconds
    python benchmarks/bench_forward.py --dir /mnt/nvme/tmp --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import torch
from torch import nn

from torchcachex import ArrowIPCCacheBackend, CacheModuleDecorator
from workloads import sequential_write  # benchmarks/: the suite's physical write baseline

MB = 1e6


# ----------------------------------------------------------------------------- helpers


def machine_info(bench_dir: Path) -> Dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "bench_dir": str(bench_dir),
    }


def summarize(values: Sequence[float]) -> Dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(summary: Dict[str, float], unit: str, digits: int = 0) -> str:
    return (f"{summary['median']:,.{digits}f} {unit} "
            f"(min {summary['min']:,.{digits}f}, max {summary['max']:,.{digits}f})")


def random_batches(num_samples: int, batch_size: int, num_batches: int, seed: int) -> List[torch.Tensor]:
    """Shuffled-epoch style batches of LongTensor ids (no duplicates within a batch)."""
    gen = torch.Generator().manual_seed(seed)
    batches: List[torch.Tensor] = []
    while len(batches) < num_batches:
        perm = torch.randperm(num_samples, generator=gen)
        batches.extend(b for b in perm.split(batch_size) if len(b) == batch_size)
    return batches[:num_batches]


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def open_backend(bench_dir: Path, module_id: str) -> ArrowIPCCacheBackend:
    return ArrowIPCCacheBackend(bench_dir, module_id=module_id)


# ----------------------------------------------------------------------------- (a) + (b)


def bench_reads(bench_dir: Path, feats: torch.Tensor, batch_size: int, num_batches: int,
                runs: int) -> Dict[str, object]:
    num_samples, dim = feats.shape
    ids = torch.arange(num_samples)
    identity = nn.Identity()

    # Prefill through the decorator (all misses), flush, close: a finished first run.
    with open_backend(bench_dir, "bench_read_v1") as backend:
        cached = CacheModuleDecorator(identity, backend)
        for start in range(0, num_samples, batch_size):
            cached(feats[start:start + batch_size], cache_ids=ids[start:start + batch_size])
        backend.flush()

    backend = open_backend(bench_dir, "bench_read_v1")  # reopened, as in a second run
    cached = CacheModuleDecorator(identity, backend)
    dummy_input = torch.zeros(batch_size, dim)  # never read on an all-hit batch
    batches = random_batches(num_samples, batch_size, num_batches, seed=0)

    def cache_pass() -> None:
        for b in batches:
            cached(dummy_input, cache_ids=b)

    def ram_pass() -> None:
        for b in batches:
            feats.index_select(0, b)

    # Warm up (page cache, mappings, allocator) and check correctness once.
    cache_pass()
    ram_pass()
    probe = batches[0]
    assert torch.equal(cached(dummy_input, cache_ids=probe), feats.index_select(0, probe))
    hits_before = backend.stats()["hits"]

    cache_rates, ram_rates = [], []
    total = batch_size * num_batches
    for _ in range(runs):
        cache_rates.append(total / timed(cache_pass))
        ram_rates.append(total / timed(ram_pass))
    stats = backend.stats()
    assert stats["hits"] - hits_before == runs * total, "expected every lookup to hit"

    profile = {n: count_calls(cached, backend, num_samples, dim, n) for n in (256, 1024)}
    backend.close()
    return {
        "cache_samples_per_s": summarize(cache_rates),
        "ram_samples_per_s": summarize(ram_rates),
        "ratio_cache_over_ram": summarize([c / r for c, r in zip(cache_rates, ram_rates)]),
        "segments": stats["segments"],
        "profile_calls": profile,
    }


# ----------------------------------------------------------------------------- (d)


def count_calls(cached: CacheModuleDecorator, backend: ArrowIPCCacheBackend, num_samples: int, dim: int,
                batch_size: int) -> Dict[str, int]:
    """Python-level and builtin calls made by one all-hit forward of ``batch_size`` samples."""
    ids = random_batches(num_samples, batch_size, 1, seed=batch_size)[0]
    x = torch.zeros(batch_size, dim)
    cached(x, cache_ids=ids)  # warm-up: lazy imports, first-call caches
    counts = {"call": 0, "c_call": 0}

    def profiler(frame, event, arg):  # noqa: ANN001 - sys.setprofile signature
        if event in counts:
            counts[event] += 1

    hits = backend.stats()["hits"]
    sys.setprofile(profiler)
    try:
        cached(x, cache_ids=ids)
    finally:
        sys.setprofile(None)
    assert backend.stats()["hits"] - hits == batch_size, "the profiled forward must be all hits"
    return {"python_calls": counts["call"], "builtin_calls": counts["c_call"]}


# ----------------------------------------------------------------------------- (c)


def bench_writes(bench_dir: Path, feats: torch.Tensor, batch_size: int, runs: int) -> Dict[str, object]:
    num_samples, dim = feats.shape
    ids = torch.arange(num_samples)
    payload_mb = feats.numel() * feats.element_size() / MB
    identity = nn.Identity()

    put_rates, disk_rates, segment_bytes = [], [], []
    for run in range(runs):
        module_id = f"bench_put_{run}"
        backend = open_backend(bench_dir, module_id)
        cached = CacheModuleDecorator(identity, backend)

        def put_pass() -> None:
            for start in range(0, num_samples, batch_size):
                cached(feats[start:start + batch_size], cache_ids=ids[start:start + batch_size])
            backend.flush()

        put_rates.append(payload_mb / timed(put_pass))
        stats = backend.stats()
        backend.close()
        assert stats["rows_written"] == num_samples, stats
        segment_bytes.append(stats["bytes_written"])
        shutil.rmtree(bench_dir / module_id)

        disk_rates.append(stats["bytes_written"] / MB / sequential_write(bench_dir, stats["bytes_written"]))

    return {
        "payload_mb": payload_mb,
        "segment_mb": statistics.median(segment_bytes) / MB,
        "put_mb_per_s": summarize(put_rates),
        "disk_mb_per_s": summarize(disk_rates),
        "ratio_put_over_disk": summarize([p / d for p, d in zip(put_rates, disk_rates)]),
    }


# ----------------------------------------------------------------------------- main


def report(info: Dict[str, object], args: argparse.Namespace, reads: Dict[str, object],
           writes: Dict[str, object]) -> None:
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    print(f"setup: {args.samples:,} samples x {args.dim} float32, batch {args.batch_size}, "
          f"{args.batches} random batches per read run, {args.runs} runs (median, min, max)\n")
    print(f"(a) all-hit forward, CacheModuleDecorator : {fmt(reads['cache_samples_per_s'], 'samples/s')}")
    print(f"(b) in-RAM index_select (upper bound)      : {fmt(reads['ram_samples_per_s'], 'samples/s')}")
    print(f"    ratio a/b                              : {fmt(reads['ratio_cache_over_ram'], '', 3)}")
    print(f"(c) put via decorator, flush included      : {fmt(writes['put_mb_per_s'], 'MB/s')} "
          f"({writes['payload_mb']:.1f} MB payload, {writes['segment_mb']:.1f} MB of segments)")
    print(f"    sequential write + fsync, same FS      : {fmt(writes['disk_mb_per_s'], 'MB/s')}")
    print(f"    ratio put/disk                         : {fmt(writes['ratio_put_over_disk'], '', 3)}")
    profile = reads["profile_calls"]
    print("(d) calls during one all-hit forward       : "
          + "; ".join(f"batch {n}: {c['python_calls']} Python, {c['builtin_calls']} builtin"
                      for n, c in profile.items()))
    independent = len({tuple(c.values()) for c in profile.values()}) == 1
    print(f"    independent of batch size              : {'yes' if independent else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller cache and fewer batches")
    parser.add_argument("--dir", type=Path, default=None,
                        help="directory for the caches (default: a temporary directory)")
    parser.add_argument("--samples", type=int, default=None,
                        help="cached samples (default 20000; quick 5000)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=None,
                        help="random batches per read run (default 1000; quick 50)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per figure (at least 5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: the engine copies hit rows on one thread, "
                             "so the in-RAM baseline does too; 0 keeps torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    args.samples = args.samples or (5000 if args.quick else 20000)
    args.batches = args.batches or (50 if args.quick else 1000)
    args.runs = max(args.runs, 5)
    if args.samples < 1024:
        parser.error("--samples must be at least 1024 (the profile uses a batch of 1024)")

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    feats = torch.randn(args.samples, args.dim)
    parent = args.dir
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="torchcachex-bench-", dir=parent) as tmp:
        bench_dir = Path(tmp)
        info = machine_info(bench_dir)
        reads = bench_reads(bench_dir, feats, args.batch_size, args.batches, args.runs)
        writes = bench_writes(bench_dir, feats, args.batch_size, args.runs)
    report(info, args, reads, writes)
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
                                         "reads": reads, "writes": writes}, indent=2) + "\n")


if __name__ == "__main__":
    main()
