"""Scale probe: what a cache of 1M / 10M small rows costs to build, open, hold and query.

    python benchmarks/scale_probe.py                      # 1M and 10M entries (a few minutes)
    python benchmarks/scale_probe.py --entries 1000000    # one size
    python benchmarks/scale_probe.py --json out.json      # also write the figures as JSON

Rows are 16 float32 (64 bytes of data) with integer ids, written with the
default options (2048 rows per segment, and at least 1 MB with async writes)
through the batched path the decorator uses. For every size the probe reports:

* build: rows/s of ``put_batch_outputs`` + ``flush`` (one writer), bytes on disk;
* open (in a fresh process): wall time of ``ArrowIPCCacheBackend(...)`` (reads
  schema, lists ``segments/``, maps every segment and reads its key column,
  builds the index), with the page cache warm (just written) -- and with
  ``--cold`` (root only), cold (``echo 3 > /proc/sys/vm/drop_caches``);
* memory: ``stats()['index_bytes']`` and the process RSS after open (anonymous
  and file-backed separately) minus the RSS of the same process before open;
* segments: count, and how many are memory-mapped (capped by the engine);
* lookups: µs per key for random batches of 256 hits, 256 misses, and one key at
  a time (``key in backend``); ``refresh()`` when nothing changed and after one
  new segment appeared.

The cache directories go under ``--dir`` (default: a temporary directory,
removed at the end unless ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

MODULE_ID = "scale_probe_v1"
ROW_FLOATS = 16


def _rss() -> dict:
    """RSS of this process in bytes: total, anonymous, file-backed (from /proc)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            for name in ("VmRSS", "RssAnon", "RssFile"):
                if line.startswith(name + ":"):
                    out[name] = int(line.split()[1]) * 1024
    return out


def _dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


def build(cache_dir: str, entries: int, batch: int) -> dict:
    import numpy as np
    import torch

    from torchcachex import ArrowIPCCacheBackend

    backend = ArrowIPCCacheBackend(cache_dir, MODULE_ID)  # default options
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(batch, ROW_FLOATS, generator=generator)
    t0 = time.perf_counter()
    for start in range(0, entries, batch):
        n = min(batch, entries - start)
        keys = np.arange(start, start + n, dtype=np.int64)
        rows[:, 0] = torch.arange(start, start + batch, dtype=torch.float32)  # row i starts with i
        backend.put_batch_outputs(keys, rows[:n])
    backend.flush()
    seconds = time.perf_counter() - t0
    stats = backend.stats()
    backend.close()
    result = {"build_s": seconds, "build_rows_per_s": entries / seconds,
              "segments_written": stats["segments"],
              "disk_bytes": _dir_bytes(os.path.join(cache_dir, MODULE_ID))}
    with open(os.path.join(cache_dir, "built.json"), "w") as f:
        json.dump(result, f)
    return result


def probe_open(cache_dir: str, entries: int, lookups: int, seed: int) -> dict:
    import numpy as np
    import torch  # noqa: F401 - imported before measuring the baseline RSS

    from torchcachex import ArrowIPCCacheBackend, _core  # noqa: F401

    base = _rss()
    t0, c0 = time.perf_counter(), time.process_time()
    backend = ArrowIPCCacheBackend(cache_dir, MODULE_ID)
    open_s, open_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    after_open = _rss()
    stats = backend.stats()
    assert stats["entries"] == entries, (stats["entries"], entries)

    rng = np.random.default_rng(seed)
    batch = 256

    def per_key(make_keys, expect_found):
        key_batches = [make_keys() for _ in range(lookups)]
        t = time.perf_counter()
        for keys in key_batches:
            cached = backend.lookup_batch(keys)
            assert cached.all_found == expect_found
        return (time.perf_counter() - t) / (lookups * batch) * 1e6

    first_hit_us = per_key(lambda: rng.integers(0, entries, batch), True)  # maps + verifies segments
    hit_us = per_key(lambda: rng.integers(0, entries, batch), True)
    miss_us = per_key(lambda: rng.integers(entries, 2 * entries, batch), False)
    single = rng.integers(0, entries, 2000).tolist()
    t = time.perf_counter()
    for key in single:
        assert key in backend
    single_us = (time.perf_counter() - t) / len(single) * 1e6
    # Decoding a found batch into a tensor (the decorator's all-hit path).
    keys = rng.integers(0, entries, batch)
    t = time.perf_counter()
    for _ in range(lookups):
        out = backend.lookup_batch(keys).output()
    output_us = (time.perf_counter() - t) / (lookups * batch) * 1e6
    assert out.shape == (batch, ROW_FLOATS) and bool((out[:, 0] == torch.from_numpy(keys).float()).all())

    t = time.perf_counter()
    backend.refresh()
    refresh_unchanged_ms = (time.perf_counter() - t) * 1e3
    # The directory changed (a file that is not a segment appeared): refresh()
    # lists it again -- what every reader pays, at most once a second on
    # misses, each time any writer adds a segment.
    marker = os.path.join(cache_dir, MODULE_ID, "segments", "probe_marker")
    open(marker, "w").close()
    t = time.perf_counter()
    backend.refresh()
    refresh_listing_ms = (time.perf_counter() - t) * 1e3
    os.remove(marker)
    after_lookups = _rss()
    stats = backend.stats()
    backend.close()
    return {
        "open_s": open_s,
        "open_cpu_s": open_cpu_s,
        "entries": stats["entries"],
        "segments": stats["segments"],
        "index_bytes": stats["index_bytes"],
        "index_bytes_per_entry": stats["index_bytes"] / entries,
        "rss_open_delta_bytes": after_open["VmRSS"] - base["VmRSS"],
        "rss_anon_open_delta_bytes": after_open["RssAnon"] - base["RssAnon"],
        "rss_file_open_delta_bytes": after_open["RssFile"] - base["RssFile"],
        "rss_after_lookups_delta_bytes": after_lookups["VmRSS"] - base["VmRSS"],
        "lookup_first_pass_us_per_key": first_hit_us,
        "lookup_hit_us_per_key": hit_us,
        "lookup_miss_us_per_key": miss_us,
        "contains_single_key_us": single_us,
        "lookup_and_output_us_per_key": output_us,
        "refresh_unchanged_ms": refresh_unchanged_ms,
        "refresh_listing_ms": refresh_listing_ms,
    }


def _drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def _child(phase: str, cache_dir: str, entries: int, extra: list) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--phase", phase, "--cache-dir", cache_dir,
           "--entries", str(entries), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{phase} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--dir", help="where the caches go (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the caches (and reuse kept ones of the same size from --dir)")
    parser.add_argument("--batch", type=int, default=65536, help="rows per put while building")
    parser.add_argument("--lookups", type=int, default=200, help="batches of 256 keys per lookup figure")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--cold", action="store_true",
                        help="also measure with a cold page cache (drops the whole machine's page cache: root only)")
    parser.add_argument("--phase", choices=["build", "open"], help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase == "build":
        print(json.dumps(build(args.cache_dir, args.entries[0], args.batch)))
        return
    if args.phase == "open":
        print(json.dumps(probe_open(args.cache_dir, args.entries[0], args.lookups, args.seed)))
        return

    root = args.dir or tempfile.mkdtemp(prefix="torchcachex_scale_")
    results = []
    try:
        for entries in args.entries:
            cache_dir = os.path.join(root, f"n{entries}")
            print(f"== {entries:,} entries of {ROW_FLOATS} float32", flush=True)
            marker = os.path.join(cache_dir, "built.json")
            if args.keep and os.path.exists(marker):  # reuse a kept cache of this size
                with open(marker) as f:
                    built = json.load(f)
            else:
                shutil.rmtree(cache_dir, ignore_errors=True)
                built = _child("build", cache_dir, entries, ["--batch", str(args.batch)])
            print(f"   build: {built['build_s']:.1f} s ({built['build_rows_per_s']:,.0f} rows/s), "
                  f"{_mb(built['disk_bytes'])} on disk ({built['disk_bytes'] / entries:.0f} B/row)", flush=True)
            warm = _child("open", cache_dir, entries, ["--lookups", str(args.lookups)])
            cold = _child("open", cache_dir, entries, ["--lookups", str(args.lookups), "--seed", "1"]) \
                if args.cold and _drop_caches() else None
            result = {"entries": entries, **built, "warm": warm, "cold": cold}
            results.append(result)
            for label, r in (("warm", warm), ("cold", cold)):
                if r is None:
                    print("   cold: not measured (pass --cold, as root)")
                    continue
                print(f"   open ({label} page cache): {r['open_s']:.2f} s wall, {r['open_cpu_s']:.2f} s CPU; segments {r['segments']:,} "
                      f"index {_mb(r['index_bytes'])} "
                      f"({r['index_bytes_per_entry']:.1f} B/entry); RSS +{_mb(r['rss_open_delta_bytes'])} "
                      f"after open (anon +{_mb(r['rss_anon_open_delta_bytes'])}, file "
                      f"+{_mb(r['rss_file_open_delta_bytes'])}), +{_mb(r['rss_after_lookups_delta_bytes'])} "
                      f"after lookups")
                print(f"   lookups ({label}): first pass {r['lookup_first_pass_us_per_key']:.2f} µs/key, "
                      f"hits {r['lookup_hit_us_per_key']:.2f} µs/key, misses {r['lookup_miss_us_per_key']:.2f} "
                      f"µs/key, lookup+tensor {r['lookup_and_output_us_per_key']:.2f} µs/key (batches of 256); "
                      f"one key {r['contains_single_key_us']:.1f} µs; refresh() unchanged "
                      f"{r['refresh_unchanged_ms']:.2f} ms, after a directory change {r['refresh_listing_ms']:.2f} ms", flush=True)
            if not args.keep:
                shutil.rmtree(cache_dir, ignore_errors=True)
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
