"""Security: a cache directory must not be a way to run code in the reading process,
or to make torchcachex touch files outside ``cache_dir``.

* A crafted pickle in a blob column (whether written through torchcachex with
  ``allow_pickle=True`` or crafted with pyarrow in the original layout) is never
  unpickled by a backend with ``allow_pickle=False`` (the default): reading it
  raises ``PickleNotAllowedError`` and the payload's side effect never happens.
  With ``allow_pickle=True`` it is unpickled (which proves the payload is live).
* A malicious ``index.pkl`` (the original implementation's index) is never read,
  not even with ``allow_pickle=True``.
* No ``module_id`` reaches outside ``cache_dir``: path-like ids are refused
  before anything is created. Keys are data only: '/', '..', NUL, newlines and
  very long keys are stored inside segment files and never become paths.
* A segment crafted with out-of-bounds offsets is skipped with a warning (no
  crash; its rows count as missing).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import torch

from torchcachex import ArrowIPCCacheBackend, CacheModuleDecorator
from torchcachex.errors import PickleNotAllowedError


class Payload:
    """Unpickling this creates the directory ``path``: a harmless stand-in for os.system."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _malicious_pickle(marker: Path) -> bytes:
    blob = pickle.dumps(Payload(str(marker)), protocol=5)
    assert not marker.exists()
    return blob


def _write_cache_with_pickled_meta(cache_dir: Path, marker: Path) -> None:
    """A cache whose 'meta' leaf holds the payload, written by torchcachex itself."""
    with ArrowIPCCacheBackend(cache_dir, "m_v1", allow_pickle=True) as writer:
        writer.put_batch({"k0": {"x": torch.ones(2), "meta": Payload(str(marker))},
                          "k1": {"x": torch.zeros(2), "meta": Payload(str(marker))}})
    assert not marker.exists()  # pickling never runs the payload


@pytest.mark.parametrize("path", ["get_batch", "lookup_batch", "decorator"])
def test_crafted_pickle_is_not_executed_without_allow_pickle(tmp_path, path):
    marker = tmp_path / "pwned"
    cache_dir = tmp_path / "cache"
    _write_cache_with_pickled_meta(cache_dir, marker)
    with ArrowIPCCacheBackend(cache_dir, "m_v1") as backend:  # allow_pickle=False
        with pytest.raises(PickleNotAllowedError, match="allow_pickle=True"):
            if path == "get_batch":
                backend.get_batch(["k0", "k1"])
            elif path == "lookup_batch":
                backend.lookup_batch(["k0", "k1"]).output()
            else:
                module = torch.nn.Identity()
                CacheModuleDecorator(module, backend)(torch.ones(2, 2), cache_ids=["k0", "k1"])
        assert not marker.exists()
        # The refusal loses nothing: the tensor leaf and the entries are still there.
        assert len(backend) == 2 and "k0" in backend
    assert not marker.exists()


def test_allow_pickle_true_does_unpickle_the_same_blob(tmp_path):
    """The other direction: the payload is live, so the test above can fail."""
    marker = tmp_path / "pwned"
    cache_dir = tmp_path / "cache"
    _write_cache_with_pickled_meta(cache_dir, marker)
    with ArrowIPCCacheBackend(cache_dir, "m_v1", allow_pickle=True) as backend:
        results, missing = backend.get_batch(["k0"])
    assert missing == []
    assert marker.is_dir()


def _write_original_layout_cache(module_dir: Path, blob: bytes) -> None:
    """A cache in the original layout, written by pyarrow: a dict with a tensor and a blob."""
    (module_dir / "segments").mkdir(parents=True)
    schema = pa.schema(
        [("key", pa.string()), ("x_data", pa.list_(pa.float32())), ("x_shape", pa.list_(pa.int64())),
         ("meta_blob", pa.binary())],
        metadata={"output_structure": "dict", "tensor_keys": '["x"]'},
    )
    table = pa.table({"key": ["k0"], "x_data": [[1.0, 2.0]], "x_shape": [[2]], "meta_blob": [blob]},
                     schema=schema)
    with ipc.new_file(str(module_dir / "segments" / "segment_0.arrow"), schema) as writer:
        writer.write_table(table)
    (module_dir / "schema.json").write_text(
        '{"fields": [{"name": "key", "type": "string"}, {"name": "x_data", "type": "list<item: float>"},'
        ' {"name": "x_shape", "type": "list<item: int64>"}, {"name": "meta_blob", "type": "binary"}],'
        ' "metadata": {"tensor_keys": "[\\"x\\"]"}, "output_structure": "dict"}')


def test_pickle_crafted_with_pyarrow_in_the_original_layout(tmp_path):
    marker = tmp_path / "pwned"
    cache_dir = tmp_path / "cache"
    _write_original_layout_cache(cache_dir / "m_v1", _malicious_pickle(marker))
    with ArrowIPCCacheBackend(cache_dir, "m_v1") as backend:
        assert "k0" in backend
        with pytest.raises(PickleNotAllowedError):
            backend.get_batch(["k0"])
    assert not marker.exists()
    with ArrowIPCCacheBackend(cache_dir, "m_v1", allow_pickle=True) as backend:
        backend.get_batch(["k0"])
    assert marker.is_dir()


def test_malicious_index_pkl_is_never_read(tmp_path):
    marker = tmp_path / "pwned"
    cache_dir = tmp_path / "cache"
    _write_original_layout_cache(cache_dir / "m_v1", b'{"ok":1}')
    (cache_dir / "m_v1" / "index.pkl").write_bytes(_malicious_pickle(marker))
    for allow_pickle in (False, True):
        with ArrowIPCCacheBackend(cache_dir, "m_v1", allow_pickle=allow_pickle) as backend:
            results, missing = backend.get_batch(["k0"])
            assert missing == [] and results[0]["meta"] == {"ok": 1}
            backend.put_batch({"k1": {"x": torch.ones(2), "meta": {"ok": 2}}})
    assert not marker.exists()


# ------------------------------------------------------------------ paths


def _tree(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("module_id", [
    "..", "../outside", "a/../../outside", "/tmp/outside", "outside/..", "\\..\\outside",
    "ok\x00/../../outside", "x" * 256, "é" * 128,
])
def test_module_id_cannot_reach_outside_cache_dir(tmp_path, module_id):
    cache_dir = tmp_path / "root" / "cache"
    cache_dir.mkdir(parents=True)
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match="resnet50_imagenet_v1"):
        ArrowIPCCacheBackend(cache_dir, module_id)
    assert _tree(tmp_path) == before  # nothing created anywhere


def test_a_255_byte_module_id_is_a_valid_directory_name(tmp_path):
    with ArrowIPCCacheBackend(tmp_path, "m" * 255) as backend:
        backend.put_batch({"k": torch.ones(1)})
    assert (tmp_path / ("m" * 255) / "schema.json").exists()


PATHLIKE_KEYS = [
    "a/b", "a\\b", "a%2Fb", "../../../../../../tmp/escaped", "..", ".", "/etc/passwd",
    "a\x00b", "a", "", "\n", "\x00", "segment_0.arrow", "schema.json", "../schema.json",
    "ü" * 3000, "k" * 200_000, "日本語/キー", "\U0001F600",
]


def test_keys_are_only_data(tmp_path):
    cache_dir = tmp_path / "root" / "cache"
    with ArrowIPCCacheBackend(cache_dir, "m_v1", flush_every=5) as backend:
        backend.put_batch({k: torch.tensor([i], dtype=torch.int64) for i, k in enumerate(PATHLIKE_KEYS)})
    # Only the engine's own files exist, all inside cache_dir/module_id.
    files = _tree(tmp_path)
    allowed = {"root", "root/cache", "root/cache/m_v1", "root/cache/m_v1/schema.json",
               "root/cache/m_v1/segments", "root/cache/m_v1/writers",
               "root/cache/m_v1/writers/writer_0.lock"}
    extra = [f for f in files if f not in allowed
             and not (f.startswith("root/cache/m_v1/segments/segment_") and f.endswith(".arrow"))]
    assert extra == []
    assert not Path("/tmp/escaped").exists()
    # Every key is its own entry, distinct from its look-alikes, across a reopen.
    with ArrowIPCCacheBackend(cache_dir, "m_v1") as backend:
        assert len(backend) == len(PATHLIKE_KEYS)
        results, missing = backend.get_batch(PATHLIKE_KEYS)
        assert missing == []
        assert [int(r[0]) for r in results] == list(range(len(PATHLIKE_KEYS)))
        assert "a\x00" not in backend and "a\x00bc" not in backend


# ------------------------------------------------------------ crafted segment


def _buffer_offset(path: Path, column: str, buffer_index: int) -> int:
    """File offset of one Arrow buffer of a pyarrow-written segment (zero-copy read)."""
    with pa.memory_map(str(path)) as source:
        base = source.read_buffer(1).address
        source.seek(0)
        batch = ipc.open_file(source).get_batch(0)
        return batch.column(column).buffers()[buffer_index].address - base


_OPEN_CRAFTED = """
import sys, warnings
from torchcachex import ArrowIPCCacheBackend
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with ArrowIPCCacheBackend(sys.argv[1], "m_v1") as backend:
        results, missing = backend.get_batch(["k0", "k1"])
        skipped = backend.stats()["skipped_segments"]
print(missing, skipped, any("segment_0.arrow" in str(w.message) for w in caught))
"""


@pytest.mark.parametrize("column,buffer_index,value", [
    ("x_data", 1, 1 << 30),     # list offsets past the values
    ("x_data", 1, -8),          # negative offset
    ("key", 1, 1 << 29),        # string offsets past the characters
    ("x_shape", 3, 1 << 40),    # a shape claiming a huge tensor
])
def test_segment_with_out_of_bounds_offsets_is_skipped(tmp_path, column, buffer_index, value):
    """pyarrow-written segments carry no checksum: structural validation alone must
    keep every read in bounds. Run in a subprocess so that a crash fails the test."""
    cache_dir = tmp_path / "cache"
    module_dir = cache_dir / "m_v1"
    _write_original_layout_cache(module_dir, b'{"ok":1}')
    segment = module_dir / "segments" / "segment_0.arrow"
    with ipc.open_file(str(segment)) as reader:
        table = reader.read_all()
    # Two rows so that the second offset is not the first.
    table = pa.concat_tables([table, table.set_column(0, "key", pa.array(["k1"]))]).combine_chunks()
    with ipc.new_file(str(segment), table.schema) as writer:
        writer.write_table(table)
    offset = _buffer_offset(segment, column, buffer_index)
    data = bytearray(segment.read_bytes())
    width = 8 if column == "x_shape" else 4
    data[offset + width:offset + 2 * width] = value.to_bytes(width, "little", signed=True)
    segment.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-c", _OPEN_CRAFTED, str(cache_dir)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    missing, skipped, warned = proc.stdout.split("]")[0] + "]", *proc.stdout.split("]")[1].split()
    assert missing == "[0, 1]" and skipped == "1" and warned == "True", proc.stdout + proc.stderr
