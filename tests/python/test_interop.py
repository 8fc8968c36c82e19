"""Segments are standard Arrow IPC files: other tools read what we write, and we
serve caches whose segments pyarrow wrote in the original torchcachex layout."""

import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import torch

from torchcachex import ArrowIPCCacheBackend


def _segments(cache_dir: Path, module_id: str):
    return sorted((cache_dir / module_id / "segments").glob("segment_*.arrow"))


@pytest.fixture
def written_cache(tmp_path):
    """A cache with 6 single-tensor samples and 6 dict samples, flushed."""
    features = {f"s{i}": torch.arange(4, dtype=torch.float32) + 10 * i for i in range(6)}
    with ArrowIPCCacheBackend(tmp_path, "single") as backend:
        backend.put_batch(features)
        backend.flush()
    dicts = {
        f"d{i}": {"visual": torch.full((2, 3), float(i)), "meta": {"width": 64 + i}} for i in range(6)
    }
    with ArrowIPCCacheBackend(tmp_path, "multi") as backend:
        backend.put_batch(dicts)
        backend.flush()
    return tmp_path, features, dicts


def test_pyarrow_reads_our_segments(written_cache):
    cache_dir, features, dicts = written_cache
    table = pa.concat_tables(ipc.open_file(p).read_all() for p in _segments(cache_dir, "single"))
    assert table.schema.field("key").type == pa.string()
    assert table.schema.field("data").type == pa.list_(pa.float32())
    assert table.schema.field("shape").type == pa.list_(pa.int64())
    rows = {k: (d, s) for k, d, s in zip(*(table.column(c).to_pylist() for c in ("key", "data", "shape")))}
    assert rows.keys() == features.keys()
    for key, tensor in features.items():
        assert rows[key] == (tensor.tolist(), [4])

    multi = pa.concat_tables(ipc.open_file(p).read_all() for p in _segments(cache_dir, "multi"))
    assert multi.column_names == ["key", "visual_data", "visual_shape", "meta_blob"]
    for key, data, shape, blob in zip(*(multi.column(c).to_pylist() for c in multi.column_names)):
        expected = dicts[key]
        assert data == expected["visual"].flatten().tolist()
        assert shape == [2, 3]
        assert json.loads(blob) == expected["meta"]


def test_polars_reads_our_segments(written_cache):
    pl = pytest.importorskip("polars")
    cache_dir, features, _ = written_cache
    frame = pl.concat([pl.read_ipc(p) for p in _segments(cache_dir, "single")])
    assert frame.columns == ["key", "data", "shape"]
    got = dict(zip(frame["key"].to_list(), frame["data"].to_list()))
    assert got == {k: v.tolist() for k, v in features.items()}


def test_duckdb_queries_our_segments(written_cache):
    duckdb = pytest.importorskip("duckdb")
    cache_dir, features, _ = written_cache
    # DuckDB's own Arrow-file reader is an extension fetched from the network;
    # offline it scans the Arrow table that pyarrow decoded from our file.
    segment_table = pa.concat_tables(ipc.open_file(p).read_all() for p in _segments(cache_dir, "single"))
    rows = duckdb.sql("SELECT key, data[1] AS first, len(data) AS n FROM segment_table ORDER BY key").fetchall()
    assert rows == sorted((k, float(v[0]), 4) for k, v in features.items())


# ---------------------------------------------------------------- original layout


def _write_original_cache(root: Path, module_id: str, table: pa.Table, metadata, output_structure, batches=1):
    """Writes a cache the way the original Python implementation laid it out."""
    directory = root / module_id
    (directory / "segments").mkdir(parents=True)
    with ipc.new_file(str(directory / "segments" / "segment_0.arrow"), table.schema) as writer:
        for chunk in table.to_batches(max_chunksize=max(1, table.num_rows // batches)):
            writer.write_batch(chunk)
    schema_json = {
        "fields": [{"name": f.name, "type": str(f.type)} for f in table.schema],
        "metadata": metadata,
        "output_structure": output_structure,
    }
    (directory / "schema.json").write_text(json.dumps(schema_json))
    # The original kept a pickled index beside; it must never be unpickled.
    (directory / "index.pkl").write_bytes(_exploding_pickle(root / "index_was_unpickled"))


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _exploding_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Exploit(marker))


def test_serves_an_original_single_tensor_cache(tmp_path):
    values = np.arange(15, dtype=np.float32).reshape(5, 3)
    table = pa.table(
        {
            "key": [f"img_{i}" for i in range(5)],
            "data": pa.array([row.tolist() for row in values], type=pa.list_(pa.float32())),
            "shape": pa.array([[3]] * 5, type=pa.list_(pa.int64())),
        }
    )
    _write_original_cache(tmp_path, "orig", table, {"torch_dtype": "torch.float32"}, "tensor", batches=2)
    backend = ArrowIPCCacheBackend(tmp_path, "orig")
    results, missing = backend.get_batch(["img_3", "img_0", "img_9"])
    assert missing == [2]
    assert torch.equal(results[0], torch.from_numpy(values[3]))
    assert torch.equal(results[1], torch.from_numpy(values[0]))
    assert not (tmp_path / "index_was_unpickled").exists()
    backend.close()


def _original_dict_table():
    return pa.table(
        {
            "key": ["a", "b"],
            "visual_data": pa.array([[1.0, 2.0], [3.0, 4.0]], type=pa.list_(pa.float32())),
            "visual_shape": pa.array([[2], [2]], type=pa.list_(pa.int64())),
            "meta_blob": pa.array([pickle.dumps({"w": 1}), pickle.dumps({"w": 2})], type=pa.binary()),
        }
    )


def test_serves_an_original_dict_cache_with_pickled_blobs_only_when_allowed(tmp_path):
    _write_original_cache(tmp_path, "orig_dict", _original_dict_table(), {"tensor_keys": '["visual"]'}, "dict")
    trusted = ArrowIPCCacheBackend(tmp_path, "orig_dict", allow_pickle=True)
    results, missing = trusted.get_batch(["b", "a"])
    assert missing == []
    assert torch.equal(results[0]["visual"], torch.tensor([3.0, 4.0]))
    assert results[0]["meta"] == {"w": 2}
    assert results[1]["meta"] == {"w": 1}
    trusted.close()

    untrusted = ArrowIPCCacheBackend(tmp_path, "orig_dict")
    with pytest.raises(Exception, match="allow_pickle"):
        untrusted.get_batch(["a"])
    untrusted.close()


def test_serves_an_original_tuple_cache(tmp_path):
    table = pa.table(
        {
            "key": ["x", "y"],
            "item0_data": pa.array([[1, 2], [3, 4]], type=pa.list_(pa.int64())),
            "item0_shape": pa.array([[2], [2]], type=pa.list_(pa.int64())),
            "item1_data": pa.array([[0.5], [1.5]], type=pa.list_(pa.float64())),
            "item1_shape": pa.array([[1], [1]], type=pa.list_(pa.int64())),
        }
    )
    _write_original_cache(tmp_path, "orig_tuple", table, {}, "tuple")
    backend = ArrowIPCCacheBackend(tmp_path, "orig_tuple")
    results, missing = backend.get_batch(["y"])
    assert missing == []
    first, second = results[0]
    assert isinstance(results[0], tuple)
    assert torch.equal(first, torch.tensor([3, 4], dtype=torch.int64))
    assert torch.equal(second, torch.tensor([1.5], dtype=torch.float64))
    backend.close()


def test_extends_an_original_cache_with_new_rows(tmp_path):
    values = np.ones((2, 3), dtype=np.float32)
    table = pa.table(
        {
            "key": ["old_0", "old_1"],
            "data": pa.array([row.tolist() for row in values], type=pa.list_(pa.float32())),
            "shape": pa.array([[3]] * 2, type=pa.list_(pa.int64())),
        }
    )
    _write_original_cache(tmp_path, "orig_grow", table, {"torch_dtype": "torch.float32"}, "tensor")
    with ArrowIPCCacheBackend(tmp_path, "orig_grow") as backend:
        backend.put_batch({"new_0": torch.zeros(3)})
    reopened = ArrowIPCCacheBackend(tmp_path, "orig_grow")
    results, missing = reopened.get_batch(["old_1", "new_0"])
    assert missing == []
    assert torch.equal(results[0], torch.ones(3)) and torch.equal(results[1], torch.zeros(3))
    reopened.close()
