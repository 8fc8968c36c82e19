"""Resource faults: a full disk, a file size limit, a directory turning read-only,
the cache directory deleted under a running process, and a cache of 100,000
segments opened within bounded file handles and memory maps.

The tmpfs test needs root (``mount``) and is skipped elsewhere; the
others run anywhere (as root, the read-only test drops its capabilities with
``capsh``).

Each fault must give a clear exception (a ``CacheIOError``, which is an
``OSError``), never a crash; rows flushed before it stay intact and readable;
rows put but not flushed stay served from memory; and once the fault is gone,
``flush()`` persists them.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from conftest import bits_equal, random_tensor, run_python

from torchcachex import ArrowIPCCacheBackend
from torchcachex.errors import CacheIOError

MODULE_ID = "faults_v1"


def _rows(ids, width=32, seed=0):
    """Deterministic float32 rows: row i depends on id i only."""
    return torch.stack([random_tensor(torch.float32, width, seed=seed * 1_000_003 + i) for i in ids])


def _assert_served(backend, ids, width=32, seed=0):
    cached = backend.lookup_batch(ids)
    assert cached.all_found, f"missing {cached.missing_positions.tolist()[:5]}"
    assert bits_equal(cached.output(), _rows(ids, width, seed))


def _tmp_files(cache_dir):
    seg_dir = Path(cache_dir) / MODULE_ID / "segments"
    return sorted(p.name for p in seg_dir.iterdir() if p.name.endswith(".tmp")) if seg_dir.exists() else []


# ----------------------------------------------------------------- small tmpfs


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs mounted at tmp_path/mnt (root only; skipped otherwise)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(path: Path) -> Path:
    """Writes a filler file until the file system is full; returns it."""
    filler = path / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        # Fill the last partial chunk too.
        while True:
            try:
                f.write(b"\0" * 512)
            except OSError:
                break
    return filler


@pytest.mark.parametrize("async_write", [True, False], ids=["async", "sync"])
def test_disk_full_during_flush(small_tmpfs, async_write):
    cache_dir = small_tmpfs / "cache"
    backend = ArrowIPCCacheBackend(cache_dir, MODULE_ID, flush_every=100_000, async_write=async_write)
    early = list(range(20))
    backend.put_batch_outputs(early, _rows(early))
    backend.flush()

    filler = _fill(small_tmpfs)
    late = list(range(100, 300))  # 200 rows x 128 B: more than is left
    backend.put_batch_outputs(late, _rows(late))
    with pytest.raises(CacheIOError, match="No space left on device") as info:
        backend.flush()
    assert isinstance(info.value, OSError)
    assert "free some space" in str(info.value) and "flush() again" in str(info.value)
    # A second flush while the disk is still full fails the same way (no crash, no hang).
    with pytest.raises(CacheIOError, match="No space left"):
        backend.flush()
    # Earlier rows intact; later rows still served from memory; no half-written file left.
    _assert_served(backend, early)
    _assert_served(backend, late)
    assert _tmp_files(cache_dir) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no segment is damaged: opening must not warn
        with ArrowIPCCacheBackend(cache_dir, MODULE_ID, current_rank=1) as reader:
            _assert_served(reader, early)
            assert not reader.lookup_batch(late).found.any()

    filler.unlink()  # space returns: the same backend persists what it holds
    backend.flush()
    backend.close()
    with ArrowIPCCacheBackend(cache_dir, MODULE_ID) as reopened:
        assert len(reopened) == len(early) + len(late)
        _assert_served(reopened, early + late)


_READ_ONLY_CHILD = """
import os, sys
sys.path.insert(0, sys.argv[2])
from test_resource_faults import MODULE_ID, _rows, _assert_served, _tmp_files
from torchcachex import ArrowIPCCacheBackend
from torchcachex.errors import CacheIOError

cache_dir = sys.argv[1]
seg_dir = os.path.join(cache_dir, MODULE_ID, "segments")
backend = ArrowIPCCacheBackend(cache_dir, MODULE_ID, flush_every=100_000)
early = list(range(10))
backend.put_batch_outputs(early, _rows(early))
backend.flush()
os.chmod(seg_dir, 0o555)  # the directory turns read-only under a running writer
late = list(range(10, 20))
backend.put_batch_outputs(late, _rows(late))
try:
    backend.flush()
except CacheIOError as exc:
    assert "not writable" in str(exc) and "Permission denied" in str(exc), exc
else:
    raise AssertionError("flush() wrote into a read-only directory")
_assert_served(backend, early + late)
with ArrowIPCCacheBackend(cache_dir, MODULE_ID) as reader:  # others may still read it
    _assert_served(reader, early)
os.chmod(seg_dir, 0o755)  # writable again: the same backend persists what it holds
backend.flush()
backend.close()
print("ok")
"""


def test_directory_turns_read_only_under_a_writer(tmp_path):
    cache_dir = tmp_path / "cache"
    command = [sys.executable, "-c", _READ_ONLY_CHILD, str(cache_dir), str(Path(__file__).parent)]
    if os.geteuid() == 0:  # root ignores permissions unless it drops its capabilities
        capsh = shutil.which("capsh")
        if capsh is None:
            pytest.skip("running as root without capsh: file permissions would be ignored")
        command = [capsh, "--drop=cap_dac_override,cap_dac_read_search", "--",
                   "-c", shlex.join(command)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr
    with ArrowIPCCacheBackend(cache_dir, MODULE_ID) as reopened:
        _assert_served(reopened, list(range(20)))


# ------------------------------------------------------- file size limit (any OS user)


_FSIZE_CHILD = """
import os, resource, signal, sys
import torch
sys.path.insert(0, sys.argv[2])
from test_resource_faults import MODULE_ID, _rows, _assert_served, _tmp_files
from torchcachex import ArrowIPCCacheBackend
from torchcachex.errors import CacheIOError

cache_dir = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write(2) then fails with EFBIG
backend = ArrowIPCCacheBackend(cache_dir, MODULE_ID, flush_every=100_000)
early = list(range(10))
backend.put_batch_outputs(early, _rows(early))
backend.flush()
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, hard))
late = list(range(100, 400))  # one segment of about 40 KB
backend.put_batch_outputs(late, _rows(late))
try:
    backend.flush()
except CacheIOError as exc:
    message = str(exc)
    assert "File too large" in message and "file size limit" in message, message
else:
    raise AssertionError("flush() succeeded past RLIMIT_FSIZE")
_assert_served(backend, early + late)
assert backend.stats()["pending_rows"] == len(late)
assert _tmp_files(cache_dir) == [], _tmp_files(cache_dir)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
backend.flush()
backend.close()
print("ok")
"""


def test_file_size_limit_during_flush(tmp_path):
    cache_dir = tmp_path / "cache"
    proc = run_python(_FSIZE_CHILD, str(cache_dir), str(Path(__file__).parent))
    assert proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr
    with ArrowIPCCacheBackend(cache_dir, MODULE_ID) as reopened:
        _assert_served(reopened, list(range(10)) + list(range(100, 400)))


# -------------------------------------------------- directory deleted under us


@pytest.mark.parametrize("async_write", [True, False], ids=["async", "sync"])
def test_cache_directory_deleted_under_a_running_process(tmp_path, async_write):
    cache_dir = tmp_path / "cache"
    backend = ArrowIPCCacheBackend(cache_dir, MODULE_ID, flush_every=4, async_write=async_write)
    early = list(range(8))
    backend.put_batch_outputs(early, _rows(early))
    backend.flush()
    shutil.rmtree(cache_dir)

    # What is mapped stays readable; lookups and refresh() neither crash nor raise.
    _assert_served(backend, early)
    assert backend.refresh() == 0
    assert not backend.lookup_batch([1000]).found.any()
    late = list(range(8, 10))  # fewer than flush_every: the put itself writes nothing
    backend.put_batch_outputs(late, _rows(late))
    with pytest.raises(CacheIOError, match="no longer exists"):
        backend.flush()
    _assert_served(backend, early + late)  # unflushed rows are still served from memory

    # Once the directory is back, the same backend persists the rows it holds.
    os.makedirs(cache_dir / MODULE_ID / "segments")
    backend.flush()
    backend.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # schema.json was deleted too: recovered from a segment
        with ArrowIPCCacheBackend(cache_dir, MODULE_ID) as reopened:
            _assert_served(reopened, late)


def test_close_after_the_directory_is_deleted_reports_the_lost_rows(tmp_path):
    cache_dir = tmp_path / "cache"
    backend = ArrowIPCCacheBackend(cache_dir, MODULE_ID, flush_every=1000)
    backend.put_batch_outputs([0, 1], _rows([0, 1]))
    backend.flush()
    shutil.rmtree(cache_dir)
    backend.put_batch_outputs([2], _rows([2]))
    with pytest.raises(CacheIOError, match="could not persist"):
        backend.close()
    backend.close()  # idempotent: the error is reported once
    # A new backend recreates the directory and works.
    with ArrowIPCCacheBackend(cache_dir, MODULE_ID) as fresh:
        assert len(fresh) == 0
        fresh.put_batch_outputs([0], _rows([0]))
        fresh.flush()
        _assert_served(fresh, [0])


# -------------------------------------------------------- 100,000 segments


def _fd_and_map_counts():
    fds = len(os.listdir("/proc/self/fd"))
    with open("/proc/self/maps") as f:
        maps = sum(1 for _ in f)
    return fds, maps


MAX_MAPPED_SEGMENTS = 8192  # Options::max_mapped_segments (include/torchcachex/options.h)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
def test_hundred_thousand_segments_open_and_serve_within_bounded_handles_and_maps(tmp_path):
    n = 100_000
    shm = Path("/dev/shm")
    # One file per row (synchronous writes: exactly flush_every rows per file);
    # on a tmpfs the 100k fsyncs cost nothing.
    base = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    try:
        fds0, maps0 = _fd_and_map_counts()
        peak_fds, peak_maps = fds0, maps0
        writer = ArrowIPCCacheBackend(base, MODULE_ID, flush_every=1, async_write=False)
        for start in range(0, n, 2000):
            ids = torch.arange(start, start + 2000)
            writer.put_batch_outputs(ids, (ids * 3).unsqueeze(1))
            fds, maps = _fd_and_map_counts()
            peak_fds, peak_maps = max(peak_fds, fds), max(peak_maps, maps)
        writer.close()
        assert len(os.listdir(base / MODULE_ID / "segments")) == n

        reader = ArrowIPCCacheBackend(base, MODULE_ID)
        assert reader.stats()["segments"] == n and len(reader) == n
        fds, maps = _fd_and_map_counts()
        peak_fds, peak_maps = max(peak_fds, fds), max(peak_maps, maps)
        # Serve every key (so every segment is mapped at some point), in shuffled batches.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        for start in range(0, n, 4096):
            ids = order[start:start + 4096]
            cached = reader.lookup_batch(ids)
            assert cached.all_found
            assert torch.equal(cached.output(), (ids * 3).unsqueeze(1))
            fds, maps = _fd_and_map_counts()
            peak_fds, peak_maps = max(peak_fds, fds), max(peak_maps, maps)
        assert reader.stats()["skipped_segments"] == 0
        reader.close()
        # No descriptor per segment; at most max_mapped_segments maps, far below
        # vm.max_map_count (65530 by default), which 100k maps would exceed.
        assert peak_fds - fds0 <= 16, (fds0, peak_fds)
        assert peak_maps - maps0 <= MAX_MAPPED_SEGMENTS + 512, (maps0, peak_maps)
    finally:
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)
