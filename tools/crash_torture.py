#!/usr/bin/env python
"""Crash torture: kill writers at random moments, damage files, check what is served.

Each trial works on a fresh cache directory and runs 1-3 *rounds*. A round:

1. **Writers.** One (sometimes two concurrent) writer processes put deterministic
   rows (the bytes of every row are a function of its key and the trial seed) with
   ``put_batch`` and call ``flush()`` periodically. After every ``flush()`` that
   returns, the writer reports the number of rows put so far through a pipe: those
   rows are *acknowledged* (durable). The parent SIGKILLs each writer at a random,
   seeded moment (after a random progress event, optionally a little later), so
   kills land during puts, during segment writes and during flushes.
2. **Damage** (some rounds, power-loss style): the newest segment is truncated at
   a random offset, and/or random bytes of random segments are flipped, and/or
   ``schema.json`` is truncated or deleted.
3. **Check**, in a fresh process (forked from this one, which never opens a cache
   itself): before damaging, it lists the keys of every new segment with pyarrow;
   then it opens the cache and checks that

   * opening never raises;
   * every acknowledged row is served bit-exactly (unless every segment holding it
     was damaged, in which case its loss is excused and counted apart);
   * every row served equals its own expected value (no key ever returns another
     key's bytes, no damaged bytes are ever served);
   * every damaged segment whose damage the engine must detect (truncation; a byte
     flipped before the footer, which the segment checksum covers, in a segment
     that holds a key no intact segment holds: checksums are verified the first
     time a segment serves a row, so a fully superseded one may go unread) is
     reported with a ``RuntimeWarning`` and counted in ``stats()["skipped_segments"]``, and
     no healthy segment is skipped;
   * leftover ``segment_*.arrow.tmp`` files of the killed writers are gone once
     new writers have claimed their writer ids (the checker claims them by
     putting and flushing rows of its own, which later rounds verify too).

Usage::

    python tools/crash_torture.py --trials 200          # a few minutes
    python tools/crash_torture.py --seed 1234 --trials 1 --keep -v   # reproduce one trial

Trial ``i`` uses seed ``--seed + i``; a failing trial prints the command that
reruns it alone. The workload, the kill points and the damage are fully
determined by the seed; the exact instant a SIGKILL lands is not (it races
with the writer), so rerun a reproduction a few times if it does not fail at once.

Exit status: 0 when no acknowledged row was lost and no wrong byte was served
(and no other check failed), 1 otherwise. The last line is a machine-readable
summary: ``SUMMARY {json}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

import torch

from torchcachex import ArrowIPCCacheBackend

MODULE_ID = "torture_v1"
WRITER_RANGE = 1_000_000_000  # segments of writer w are numbered from w * 10**9
# Seconds without any message from a child before it is declared hung.
HANG_SECONDS = 60.0
# --sabotage (a self-test of the checker, not of the engine): "drop" deletes the
# segments written in each round before the check, "swap" swaps two served rows.
# Either must make the run fail; tests/python/test_crash_torture.py checks that.
SABOTAGE: Optional[str] = None

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int16, torch.uint8,
          torch.complex64, torch.bool]


# ----------------------------------------------------------------------------- rows


class RowMaker:
    """The expected output of every key of one trial: a pure function of (seed, key)."""

    def __init__(self, seed: int, dtype: torch.dtype, fixed_len: Optional[int]):
        self.seed = seed
        self.dtype = dtype
        self.fixed_len = fixed_len  # None: the length of "emb" varies with the key
        self._cache: Dict[str, dict] = {}

    def _stream(self, key: str, what: str, n: int) -> bytes:
        return hashlib.shake_128(f"{self.seed}\0{key}\0{what}".encode()).digest(n)

    def row(self, key: str) -> dict:
        row = self._cache.get(key)
        if row is not None:
            return row
        head = self._stream(key, "head", 16)
        length = self.fixed_len if self.fixed_len is not None else head[0] % 13
        if self.dtype == torch.bool:
            emb = torch.tensor([b & 1 for b in self._stream(key, "emb", length)], dtype=torch.bool)
        else:
            raw = self._stream(key, "emb", length * self.dtype.itemsize)
            emb = (torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(self.dtype)
                   if length else torch.empty(0, dtype=self.dtype))
        code = torch.tensor([int.from_bytes(head[:8], "little", signed=True), self.seed, len(key)],
                            dtype=torch.int64)
        meta = {"k": key, "s": self.seed, "n": head[8]}
        row = {"emb": emb, "code": code, "meta": meta}
        self._cache[key] = row
        return row

    def mismatch(self, key: str, served) -> Optional[str]:
        """None if ``served`` is exactly the expected row of ``key``, else what differs."""
        expected = self.row(key)
        if not isinstance(served, dict) or list(served) != list(expected):
            return f"structure {type(served).__name__} {list(served) if isinstance(served, dict) else ''}"
        for name in ("emb", "code"):
            got, want = served[name], expected[name]
            if not isinstance(got, torch.Tensor):
                return f"{name} is {type(got).__name__}"
            if got.dtype != want.dtype or tuple(got.shape) != tuple(want.shape):
                return f"{name} dtype/shape {got.dtype}{tuple(got.shape)} != {want.dtype}{tuple(want.shape)}"
            if got.numel() and _raw(got) != _raw(want):
                return f"{name} bytes differ"
        if served["meta"] != expected["meta"]:
            return f"meta {served['meta']!r} != {expected['meta']!r}"
        return None


def _raw(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


# ----------------------------------------------------------------------------- plans


@dataclass
class WriterPlan:
    keys: List[str]              # in put order
    batches: List[Tuple[int, int]]  # [start, end) into keys
    flush_period: int            # flush after every this many batches
    flush_every: int
    async_write: bool
    max_workers: int
    events: int = 0              # progress messages the writer sends (for choosing the kill)

    def __post_init__(self):
        # "O" once, "P" per batch, "F" + "A" per flush, final "F" + "A", then "D".
        flushes = len(self.batches) // self.flush_period
        self.events = 1 + len(self.batches) + 2 * flushes + 3


@dataclass
class Damage:
    truncate: Optional[float] = None        # truncate the newest segment at this fraction
    flips: List[Tuple[float, List[Tuple[float, int]]]] = field(default_factory=list)
    # ^ (which segment, as a fraction of the sorted list; [(offset fraction, xor mask)])
    schema: Optional[str] = None            # "truncate" | "delete"


@dataclass
class RoundPlan:
    writers: List[WriterPlan]
    kills: List[Tuple[int, float]]          # per writer: (event index, extra delay in seconds)
    damage: Optional[Damage]


@dataclass
class TrialPlan:
    seed: int
    dtype: torch.dtype
    fixed_len: Optional[int]
    rounds: List[RoundPlan]


def make_plan(seed: int, rows_scale: float = 1.0) -> TrialPlan:
    rng = random.Random(seed)
    dtype = rng.choice(DTYPES)
    fixed_len = rng.choice([None, None, 0, 1, 4, 9])
    rounds: List[RoundPlan] = []
    written: List[str] = []
    for r in range(rng.choice([1, 2, 2, 3])):
        n_writers = 2 if rng.random() < 0.25 else 1
        writers = []
        for w in range(n_writers):
            n = max(4, int(rng.randint(30, 260) * rows_scale))
            int_keys = rng.random() < 0.3
            # Integer ids are put as ints and looked up as their decimal strings.
            keys = [str(r * 100_000 + w * 10_000 + i) if int_keys else f"r{r}w{w}/k{i}"
                    for i in range(n)]
            if written and rng.random() < 0.5:  # re-put some older keys (same values)
                keys += rng.sample(written, min(len(written), rng.randint(1, 20)))
                rng.shuffle(keys)
            batches, start = [], 0
            while start < len(keys):
                size = rng.choice([1, 2, 3, 5, 8, 16, 33])
                batches.append((start, min(len(keys), start + size)))
                start += size
            writers.append(WriterPlan(
                keys=keys, batches=batches, flush_period=rng.choice([1, 2, 3, 5, 8]),
                flush_every=rng.choice([1, 2, 3, 4, 8, 16, 64]),
                async_write=rng.random() < 0.85, max_workers=rng.choice([1, 2, 3])))
            written.extend(keys)
        kills = []
        for plan in writers:
            event = rng.randrange(0, plan.events + 1)  # 0: kill right after starting it
            delay = 0.0 if rng.random() < 0.6 else rng.uniform(0.0, 0.003)
            kills.append((event, delay))
        damage = None
        if rng.random() < 0.5:
            damage = Damage()
            kind = rng.random()
            if kind < 0.4 or kind >= 0.8:
                damage.truncate = rng.random()
            if kind >= 0.4:
                for _ in range(rng.randint(1, 3)):
                    damage.flips.append((rng.random(), [(rng.random(), rng.randint(1, 255))
                                                        for _ in range(rng.randint(1, 4))]))
            if rng.random() < 0.15:
                damage.schema = rng.choice(["truncate", "delete"])
        rounds.append(RoundPlan(writers, kills, damage))
    return TrialPlan(seed, dtype, fixed_len, rounds)


# ----------------------------------------------------------------------------- children


def _send(fd: int, message: str) -> None:
    os.write(fd, (message + "\n").encode())


def writer_child(cache_dir: str, plan: WriterPlan, rows: RowMaker, fd: int) -> None:
    """Runs in a forked child: puts and flushes per plan, reports progress, then waits to die."""
    warnings.simplefilter("ignore")  # skipped damaged segments: the checker reports those
    backend = ArrowIPCCacheBackend(cache_dir, MODULE_ID, flush_every=plan.flush_every,
                                   async_write=plan.async_write, max_workers=plan.max_workers)
    _send(fd, "O")
    for b, (start, end) in enumerate(plan.batches):
        keys = plan.keys[start:end]
        backend.put_batch({(int(k) if k.isdigit() else k): rows.row(k) for k in keys})
        _send(fd, f"P {end}")
        if (b + 1) % plan.flush_period == 0:
            _send(fd, f"F {end}")
            backend.flush()
            _send(fd, f"A {end}")
    _send(fd, f"F {len(plan.keys)}")
    backend.flush()
    _send(fd, f"A {len(plan.keys)}")
    _send(fd, "D")
    signal.pause()  # wait for SIGKILL
    while True:
        signal.pause()


def _segment_number(name: str) -> Optional[int]:
    base = name[:-4] if name.endswith(".tmp") else name
    if not (base.startswith("segment_") and base.endswith(".arrow")):
        return None
    digits = base[len("segment_"):-len(".arrow")]
    return int(digits) if digits.isdigit() else None


def _footer_start(data: bytes) -> int:
    """Offset of an Arrow IPC file's footer flatbuffer (len(data) if it cannot be found)."""
    if len(data) < 10 or data[-6:] != b"ARROW1":
        return len(data)
    footer_len = int.from_bytes(data[-10:-6], "little", signed=True)
    start = len(data) - 10 - footer_len
    return start if 0 <= start < len(data) else len(data)


def _list_keys(path: str) -> Optional[List[str]]:
    import pyarrow.ipc as ipc  # noqa: PLC0415 - only the checker needs it

    try:
        with ipc.open_file(path) as reader:
            keys: List[str] = []
            for i in range(reader.num_record_batches):
                keys.extend(reader.get_batch(i).column("key").to_pylist())
            return keys
    except Exception:  # noqa: BLE001 - an unreadable file holds no key we can count on
        return None


def _apply_damage(seg_dir: str, module_dir: str, damage: Damage, report: dict) -> None:
    if not os.path.isdir(seg_dir):
        return
    names = sorted((n for n in os.listdir(seg_dir) if _segment_number(n) is not None
                    and not n.endswith(".tmp")), key=_segment_number)
    if not names:
        return
    damaged: Dict[str, dict] = {}
    if damage.truncate is not None:
        newest = max(names, key=lambda n: (os.stat(os.path.join(seg_dir, n)).st_mtime_ns,
                                           _segment_number(n)))
        path = os.path.join(seg_dir, newest)
        size = os.path.getsize(path)
        cut = int(damage.truncate * size)
        os.truncate(path, cut)
        damaged[newest] = {"truncated_at": cut, "size": size, "must_detect": True}
    for which, flips in damage.flips:
        name = names[min(len(names) - 1, int(which * len(names)))]
        path = os.path.join(seg_dir, name)
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            if not data:
                continue
            footer = _footer_start(bytes(data))
            entry = damaged.setdefault(name, {"flips": [], "must_detect": False})
            entry.setdefault("flips", [])
            for fraction, mask in flips:
                offset = min(len(data) - 1, int(fraction * len(data)))
                data[offset] ^= mask
                entry["flips"].append(offset)
                # Bytes before the footer are covered by the segment checksum.
                if offset < footer:
                    entry["must_detect"] = True
            f.seek(0)
            f.write(data)
    if damage.schema is not None:
        schema = os.path.join(module_dir, "schema.json")
        if os.path.exists(schema):
            if damage.schema == "delete":
                os.unlink(schema)
            else:
                size = os.path.getsize(schema)
                os.truncate(schema, size // 2)
            report["schema_damage"] = damage.schema
    report["damaged"] = damaged


def checker_child(cache_dir: str, rows: RowMaker, universe: List[str], acked: List[str],
                  key_segments: Dict[str, List[str]], damaged_before: Dict[str, bool],
                  damage: Optional[Damage], round_index: int, fd: int) -> None:
    """Runs in a forked child: damages, opens, checks; writes a JSON report to ``fd``."""
    report: dict = {"failures": []}
    fail = report["failures"].append
    module_dir = os.path.join(cache_dir, MODULE_ID)
    seg_dir = os.path.join(module_dir, "segments")
    try:
        names = os.listdir(seg_dir) if os.path.isdir(seg_dir) else []
        report["tmp_after_kill"] = sorted(n for n in names if n.endswith(".tmp"))
        # Keys of every segment not listed before (segments are immutable).
        listing = {}
        for name in names:
            if name.endswith(".tmp") or _segment_number(name) is None or name in key_segments:
                continue
            listing[name] = _list_keys(os.path.join(seg_dir, name))
            if listing[name] is None:  # renamed into place, so complete: any reader must read it
                fail(f"segment {name} left by a killed writer is not a valid Arrow IPC file (pyarrow)")
        report["listing"] = listing
        if SABOTAGE == "drop":
            for name in listing:
                os.unlink(os.path.join(seg_dir, name))
        if damage is not None:
            _apply_damage(seg_dir, module_dir, damage, report)
        damaged = dict.fromkeys(damaged_before)
        damaged.update(dict.fromkeys(report.get("damaged", {})))
        segments_of: Dict[str, Set[str]] = {}
        for name, keys in {**key_segments, **listing}.items():
            for key in keys or ():
                segments_of.setdefault(key, set()).add(name)

        def lookup_all(backend, what: str) -> Set[str]:
            """Looks up every key ever planned; checks every served row; returns the found keys."""
            found: Set[str] = set()
            wrong = 0
            for start in range(0, len(universe), 512):
                chunk = universe[start:start + 512]
                results, _ = backend.get_batch(chunk)
                if SABOTAGE == "swap":
                    hits = [i for i, r in enumerate(results) if r is not None]
                    if len(hits) >= 2:
                        results[hits[0]], results[hits[1]] = results[hits[1]], results[hits[0]]
                for key, served in zip(chunk, results):
                    if served is None:
                        continue
                    found.add(key)
                    problem = rows.mismatch(key, served)
                    if problem:
                        wrong += 1
                        fail(f"{what}: WRONG VALUE served for key {key!r}: {problem}")
            report[f"{what}_found"] = len(found)
            report[f"{what}_wrong"] = wrong
            return found

        def check_acked(found: Set[str], acked_keys: List[str], skipped: Set[str], what: str) -> None:
            """Every acknowledged key is found, unless every copy of it is in a skipped damaged segment."""
            lost, excused = [], 0
            for key in dict.fromkeys(acked_keys):
                if key in found:
                    continue
                holders = segments_of.get(key, set())
                if holders and all(h in skipped for h in holders):
                    excused += 1
                else:
                    lost.append(key)
            report[f"{what}_lost"] = lost
            report["excused"] = excused
            for key in lost[:5]:
                fail(f"{what}: acknowledged key {key!r} missing "
                     f"(on disk in: {sorted(segments_of.get(key, ())) or 'no segment'})")

        # Open: must never raise.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                backend = ArrowIPCCacheBackend(cache_dir, MODULE_ID)
            except Exception as exc:  # noqa: BLE001
                fail(f"opening raised {type(exc).__name__}: {exc}")
                raise
            found = lookup_all(backend, "open")
            stats = backend.stats()
            backend.close()
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        report["warnings"] = messages
        report["skipped"] = stats["skipped_segments"]
        skip_messages = [m for m in messages if "skip" in m]
        reported = {n for n in damaged if any(n in m for m in skip_messages)}
        check_acked(found, acked, reported, "open")
        for name in sorted(names):
            if name.endswith(".arrow") and name not in damaged and any(name in m for m in skip_messages):
                fail(f"healthy segment {name} was reported/skipped")
        new_damage = report.get("damaged", {})
        # Which damage the engine must report. Checksums are verified lazily (the
        # first time a segment is about to serve a row), so a segment whose every
        # key is also held by an intact segment may never be read, and nothing
        # damaged is served either way. A truncated segment, or a segment with a
        # byte flipped before its footer that holds a key no intact segment holds
        # (serving that key needs this segment), must be reported.
        data_damaged = {n for n, d in damaged_before.items() if d}
        data_damaged |= {n for n, d in new_damage.items() if d["must_detect"]}
        for name, entry in new_damage.items():
            entry["data_damage"] = entry["must_detect"]
            if entry["must_detect"] and "truncated_at" not in entry:
                entry["must_detect"] = any(
                    not (segments_of.get(key, set()) - {name} - data_damaged)
                    for key in (key_segments.get(name) or listing.get(name) or ()))
        must = sorted(n for n, d in new_damage.items() if d["must_detect"])
        for name in must:
            if name not in reported:
                fail(f"damaged segment {name} ({new_damage[name]}) was not reported")
        if stats["skipped_segments"] < len(must):
            fail(f"stats()['skipped_segments'] = {stats['skipped_segments']} < {len(must)} damaged")
        report["undetected_damage"] = sorted(n for n in new_damage if n not in reported)
        report["detected_damage"] = sorted(n for n in new_damage if n in reported)

        # Claim the killed writers' ids: open writers until every range holding a
        # .tmp file is owned by a live writer, and put + flush a row in each.
        tmp_ranges = {_segment_number(n) // WRITER_RANGE for n in report["tmp_after_kill"]}
        claims = max(tmp_ranges, default=0) + 1
        writers, chk_keys = [], []
        warnings.simplefilter("ignore")
        for c in range(claims):
            writer = ArrowIPCCacheBackend(cache_dir, MODULE_ID, flush_every=3)
            keys = [f"chk{round_index}/{c}/{i}" for i in range(4)]
            writer.put_batch({k: rows.row(k) for k in keys})
            writer.flush()
            chk_keys.extend(keys)
            writers.append(writer)
            if writer.stats()["writer_id"] != c:
                fail(f"checker writer {c} got writer id {writer.stats()['writer_id']}")
        left = sorted(n for n in os.listdir(seg_dir) if n.endswith(".tmp"))
        report["tmp_after_claim"] = left
        for name in left:
            fail(f"leftover temporary file {name} survived its writer id being claimed")
        for writer in writers:
            writer.close()
        report["chk_keys"] = chk_keys
        universe = universe + chk_keys
        # Reopen: the checker's rows are acknowledged too.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with ArrowIPCCacheBackend(cache_dir, MODULE_ID) as backend:
                found = lookup_all(backend, "reopen")
        check_acked(found, acked + chk_keys, reported, "reopen")
    except Exception as exc:  # noqa: BLE001
        report["exception"] = "".join(traceback.format_exception(exc))
        fail(f"checker raised {type(exc).__name__}: {exc}")
    os.write(fd, json.dumps(report).encode())


# ----------------------------------------------------------------------------- parent


def _fork(target, *args) -> Tuple[int, int]:
    """Forks a child running ``target(*args, write_fd)``; returns (pid, read_fd)."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(read_fd)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            target(*args, write_fd)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)  # no atexit hooks, no inherited cleanup
    os.close(write_fd)
    return pid, read_fd


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_writers(cache_dir: str, round_plan: RoundPlan, rows: RowMaker, verbose: bool) -> Tuple[List[List[str]], List[str]]:
    """Runs the round's writers, kills them per plan; returns (acked keys per writer, problems)."""
    children = []
    for plan, (kill_event, delay) in zip(round_plan.writers, round_plan.kills):
        pid, fd = _fork(writer_child, cache_dir, plan, rows)
        children.append({"pid": pid, "fd": fd, "plan": plan, "kill_event": kill_event,
                         "delay": delay, "events": 0, "acked": 0, "buffer": b"", "killed": False,
                         "kill_at": None, "eof": False, "last": time.monotonic(), "log": []})
    problems = []

    def consume(child, data: bytes) -> None:
        child["buffer"] += data
        *lines, child["buffer"] = child["buffer"].split(b"\n")
        for line in lines:
            text = line.decode()
            child["events"] += 1
            child["log"].append(text)
            if text.startswith("A "):
                child["acked"] = max(child["acked"], int(text[2:]))

    for child in children:
        if child["kill_event"] == 0 and child["delay"] == 0.0:
            _kill(child["pid"])
            child["killed"] = True
    while not all(c["eof"] for c in children):
        now = time.monotonic()
        for child in children:
            if child["killed"] or child["eof"]:
                continue
            if child["kill_at"] is None and child["events"] >= child["kill_event"]:
                child["kill_at"] = now + child["delay"]
            if child["kill_at"] is not None and now >= child["kill_at"]:
                _kill(child["pid"])
                child["killed"] = True
            elif now - child["last"] > HANG_SECONDS:
                problems.append(f"writer {child['pid']} hung after {child['log'][-3:]}")
                _kill(child["pid"])
                child["killed"] = True
        pending_kills = [c["kill_at"] - now for c in children
                         if not c["killed"] and c["kill_at"] is not None]
        timeout = max(0.0, min(pending_kills)) if pending_kills else 1.0
        fds = [c["fd"] for c in children if not c["eof"]]
        ready, _, _ = select.select(fds, [], [], timeout)
        for child in children:
            if child["fd"] in ready:
                data = os.read(child["fd"], 65536)
                if not data:
                    child["eof"] = True
                    os.close(child["fd"])
                else:
                    child["last"] = time.monotonic()
                    consume(child, data)
    acked = []
    for child in children:
        _, status = os.waitpid(child["pid"], 0)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            problems.append(f"writer exited with status {status} (expected SIGKILL) after "
                            f"{child['log'][-3:]}")
        acked.append(child["plan"].keys[:child["acked"]])
        if verbose:
            print(f"    writer pid {child['pid']}: kill after event {child['kill_event']}"
                  f"+{child['delay'] * 1000:.1f}ms; saw {child['events']} events, "
                  f"acked {child['acked']}/{len(child['plan'].keys)}")
    return acked, problems


def run_checker(*args) -> dict:
    pid, fd = _fork(checker_child, *args)
    chunks = []
    deadline = time.monotonic() + HANG_SECONDS * 2
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            _kill(pid)
            os.waitpid(pid, 0)
            os.close(fd)
            return {"failures": ["checker hung"]}
        data = os.read(fd, 1 << 20)
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    raw = b"".join(chunks)
    try:
        report = json.loads(raw)
    except ValueError:
        return {"failures": [f"checker died (status {status}) without a report: {raw[-500:]!r}"]}
    if status != 0:
        report["failures"].append(f"checker exited with status {status}")
    return report


@dataclass
class Totals:
    trials: int = 0
    rounds: int = 0
    writers_killed: int = 0
    acked_rows: int = 0
    acked_rows_lost: int = 0
    wrong_bytes_served: int = 0
    rows_served_checked: int = 0
    excused_by_damage: int = 0
    tmp_leftovers_after_kill: int = 0
    tmp_leftovers_after_claim: int = 0
    damaged_segments: int = 0
    damaged_detected: int = 0
    damaged_undetected_harmless: int = 0
    schema_damaged: int = 0
    failed_trials: List[int] = field(default_factory=list)


def run_trial(seed: int, base_dir: str, totals: Totals, rows_scale: float, verbose: bool,
              keep: bool) -> bool:
    plan = make_plan(seed, rows_scale)
    rows = RowMaker(seed, plan.dtype, plan.fixed_len)
    cache_dir = os.path.join(base_dir, f"trial_{seed}")
    shutil.rmtree(cache_dir, ignore_errors=True)
    os.makedirs(cache_dir)
    universe: List[str] = []
    acked_all: List[str] = []
    key_segments: Dict[str, List[str]] = {}
    damaged: Dict[str, bool] = {}  # every damaged segment: whether bytes before its footer were hit
    failures: List[str] = []
    lost_keys: Set[str] = set()
    if verbose:
        print(f"trial seed={seed}: dtype={plan.dtype} fixed_len={plan.fixed_len} "
              f"rounds={len(plan.rounds)}")
    for r, round_plan in enumerate(plan.rounds):
        for w in round_plan.writers:
            universe.extend(w.keys)
        universe = list(dict.fromkeys(universe))
        acked, problems = run_writers(cache_dir, round_plan, rows, verbose)
        failures.extend(f"round {r}: {p}" for p in problems)
        totals.writers_killed += len(acked)
        for keys in acked:
            acked_all.extend(keys)
        acked_all = list(dict.fromkeys(acked_all))
        report = run_checker(cache_dir, rows, universe, acked_all, key_segments, damaged,
                             round_plan.damage, r)
        totals.rounds += 1
        failures.extend(f"round {r}: {f}" for f in report["failures"])
        key_segments.update({k: v for k, v in report.get("listing", {}).items()})
        new_damage = report.get("damaged", {})
        for name, entry in new_damage.items():
            damaged[name] = damaged.get(name, False) or entry.get("data_damage", False)
        totals.damaged_segments += len(new_damage)
        totals.damaged_detected += len(report.get("detected_damage", []))
        totals.damaged_undetected_harmless += len(report.get("undetected_damage", []))
        totals.schema_damaged += 1 if report.get("schema_damage") else 0
        totals.tmp_leftovers_after_kill += len(report.get("tmp_after_kill", []))
        totals.tmp_leftovers_after_claim += len(report.get("tmp_after_claim", []))
        totals.excused_by_damage += report.get("excused", 0)
        # Lost rows are counted once per round (the reopen repeats the open's check).
        lost = set(report.get("open_lost", [])) | set(report.get("reopen_lost", []))
        lost_keys |= lost
        totals.wrong_bytes_served += report.get("open_wrong", 0) + report.get("reopen_wrong", 0)
        totals.rows_served_checked += report.get("open_found", 0) + report.get("reopen_found", 0)
        if verbose:
            print(f"  round {r}: acked {sum(map(len, acked))} rows, damage={new_damage or None}, "
                  f"schema={report.get('schema_damage')}, warnings={len(report.get('warnings', []))}, "
                  f"skipped={report.get('skipped')}, tmp={report.get('tmp_after_kill')}")
            if report.get("exception"):
                print(report["exception"])
        chk = report.get("chk_keys", [])
        universe = list(dict.fromkeys(universe + chk))
        acked_all = list(dict.fromkeys(acked_all + chk))
        if report.get("exception") or "checker" in " ".join(report["failures"]):
            break
    totals.trials += 1
    totals.acked_rows += len(acked_all)
    totals.acked_rows_lost += len(lost_keys)
    ok = not failures
    if not ok:
        totals.failed_trials.append(seed)
        print(f"FAIL trial seed={seed} (cache kept in {cache_dir}):")
        for f in failures[:20]:
            print(f"    {f}")
        if len(failures) > 20:
            print(f"    ... {len(failures) - 20} more")
        print(f"  reproduce: python {os.path.relpath(__file__)} --seed {seed} --trials 1 --keep -v"
              + (f" --rows-scale {rows_scale}" if rows_scale != 1.0 else ""))
    elif not keep:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return ok


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1, help="trial i uses seed SEED + i")
    parser.add_argument("--dir", default=None, help="base directory (default: a temporary one)")
    parser.add_argument("--rows-scale", type=float, default=1.0, help="scale the rows per writer")
    parser.add_argument("--keep", action="store_true", help="keep every trial's cache directory")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--sabotage", choices=["drop", "swap"], default=None,
                        help="self-test of the checker: delete each round's segments (drop) or "
                             "swap two served rows (swap); the run must then fail")
    args = parser.parse_args(argv)
    global SABOTAGE  # noqa: PLW0603 - read by the forked checkers
    SABOTAGE = args.sabotage

    base_dir = args.dir or tempfile.mkdtemp(prefix="torchcachex_torture_")
    os.makedirs(base_dir, exist_ok=True)
    import pyarrow.ipc  # noqa: F401,PLC0415 - imported once here, used by the forked checkers

    totals = Totals()
    started = time.monotonic()
    for i in range(args.trials):
        run_trial(args.seed + i, base_dir, totals, args.rows_scale, args.verbose, args.keep)
        if not args.verbose and (i + 1) % 20 == 0:
            print(f"  {i + 1}/{args.trials} trials, {time.monotonic() - started:.0f}s, "
                  f"{len(totals.failed_trials)} failed", flush=True)
    elapsed = time.monotonic() - started
    if not args.dir and not args.keep and not totals.failed_trials:
        shutil.rmtree(base_dir, ignore_errors=True)

    print(f"\ncrash torture: {totals.trials} trials ({totals.rounds} rounds, "
          f"{totals.writers_killed} writers SIGKILLed) in {elapsed:.1f}s, seeds "
          f"{args.seed}..{args.seed + args.trials - 1}")
    print(f"  acknowledged rows:            {totals.acked_rows}")
    print(f"  acknowledged rows lost:       {totals.acked_rows_lost}   (must be 0)")
    print(f"  wrong bytes served:           {totals.wrong_bytes_served}   (must be 0; rows checked: "
          f"{totals.rows_served_checked})")
    print(f"  rows excused (all copies damaged): {totals.excused_by_damage}")
    print(f"  damaged segments:             {totals.damaged_segments} "
          f"(reported and skipped: {totals.damaged_detected}, harmless undetected: "
          f"{totals.damaged_undetected_harmless}); schema.json damaged: {totals.schema_damaged}")
    print(f"  .tmp leftovers after kills:   {totals.tmp_leftovers_after_kill} "
          f"(left after the range was claimed: {totals.tmp_leftovers_after_claim})")
    print(f"  failed trials:                {len(totals.failed_trials)} {totals.failed_trials[:20]}")
    summary = {k: v for k, v in totals.__dict__.items()}
    summary["elapsed_s"] = round(elapsed, 1)
    print("SUMMARY " + json.dumps(summary))
    return 0 if not totals.failed_trials else 1


if __name__ == "__main__":
    sys.exit(main())
