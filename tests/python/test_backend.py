"""ArrowIPCCacheBackend: storage semantics users rely on."""

from __future__ import annotations

import gc
import math
import os
import pickle
import weakref

import numpy as np
import pytest
import torch
from conftest import bits_equal, random_tensor

from torchcachex import ArrowIPCCacheBackend, SchemaMismatchError, _core
from torchcachex.errors import ClosedError, PickleNotAllowedError

ALL_DTYPES = [
    torch.float16, torch.bfloat16, torch.float32, torch.float64,
    torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz,
    torch.int8, torch.int16, torch.int32, torch.int64,
    torch.uint8, torch.uint16, torch.uint32, torch.uint64,
    torch.bool, torch.complex64, torch.complex128,
]


# ----------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_every_dtype_round_trips_bit_exactly_across_a_restart(make_backend, dtype):
    batch = random_tensor(dtype, 6, 2, 3)
    backend = make_backend()
    backend.put_batch_outputs(list(range(6)), batch)
    assert bits_equal(backend.lookup_batch(list(range(6))).output(), batch)  # read-your-writes
    backend.close()

    reopened = make_backend()
    cached = reopened.lookup_batch([5, 0, 3])
    assert cached.all_found
    assert bits_equal(cached.output(), batch[[5, 0, 3]])
    fast = reopened.lookup_fast([5, 0, 3])  # the decorator's all-hit path: one tensor
    assert type(fast) is torch.Tensor and fast.dtype == dtype
    assert bits_equal(fast, batch[[5, 0, 3]])


def test_float_nan_payloads_survive(make_backend):
    payloads = [0x7FC00000, 0x7FC00001, 0xFFC12345, 0x7F800001, 0x7FBFFFFF]  # quiet, signed, signalling
    batch = torch.from_numpy(np.array(payloads, dtype=np.uint32).view(np.float32).reshape(5, 1))
    assert all(math.isnan(v) for v in batch.flatten().tolist())
    backend = make_backend()
    backend.put_batch_outputs(["a", "b", "c", "d", "e"], batch)
    backend.close()
    out = make_backend().lookup_batch(["a", "b", "c", "d", "e"]).output()
    assert out.numpy().view(np.uint32).flatten().tolist() == payloads


def test_per_sample_api_returns_outputs_and_missing_positions(make_backend):
    backend = make_backend()
    backend.put_batch({"a": {"x": torch.arange(3.0), "meta": {"w": 1}}, "b": {"x": torch.ones(3), "meta": {"w": 1}}})
    results, missing = backend.get_batch(["b", "zzz", "a"])
    assert missing == [1]
    assert results[1] is None
    assert torch.equal(results[0]["x"], torch.ones(3)) and results[0]["meta"] == {"w": 1}
    assert torch.equal(results[2]["x"], torch.arange(3.0))


def test_per_sample_outputs_of_different_shapes(make_backend):
    backend = make_backend()
    backend.put_batch({1: torch.ones(2, 3), 2: torch.zeros(5, 3)})
    results, missing = backend.get_batch([1, 2])
    assert missing == []
    assert results[0].shape == (2, 3) and results[1].shape == (5, 3)
    assert torch.equal(results[1], torch.zeros(5, 3))


def test_zero_element_rows_and_scalar_rows(make_backend):
    empty_rows = make_backend("empty_v1")
    empty_rows.put_batch_outputs([0, 1], torch.empty(2, 0, 4))
    assert empty_rows.lookup_batch([1, 0]).output().shape == (2, 0, 4)

    scalars = make_backend("scalar_v1")
    scalars.put_batch_outputs([0, 1, 2], torch.tensor([1.5, -2.0, 3.25]))
    out = scalars.lookup_batch([2, 0]).output()
    assert out.shape == (2,) and out.tolist() == [3.25, 1.5]
    results, _ = scalars.get_batch([1])
    assert results[0].shape == () and results[0].item() == -2.0


def test_shapes_that_vary_between_batches_come_back_as_a_list(make_backend):
    backend = make_backend()
    backend.put_batch_outputs([0, 1], torch.ones(2, 5, 8))
    backend.put_batch_outputs([2, 3], torch.zeros(2, 7, 8))
    same = backend.lookup_batch([0, 1]).output()
    assert isinstance(same, torch.Tensor) and same.shape == (2, 5, 8)
    mixed = backend.lookup_batch([0, 2, 1]).output()
    assert isinstance(mixed, list) and [t.shape for t in mixed] == [(5, 8), (7, 8), (5, 8)]
    assert torch.equal(mixed[1], torch.zeros(7, 8))


def test_non_tensor_leaves_collapse_to_one_value_or_per_sample_list(make_backend):
    backend = make_backend(allow_pickle=False)
    backend.put_batch_outputs([0, 1], {"x": torch.ones(2, 1), "meta": {"width": 224}})
    backend.put_batch_outputs([2], {"x": torch.ones(1, 1), "meta": {"width": 112}})
    assert backend.lookup_batch([0, 1]).output()["meta"] == {"width": 224}
    assert backend.lookup_batch([0, 2]).output()["meta"] == [{"width": 224}, {"width": 112}]


def test_json_values_round_trip_exactly(make_backend):
    value = {"s": "ünï\u0000code", "i": 2**70, "f": -0.0, "b": True, "n": None, "l": [1, [2.5, "x"]], "d": {}}
    backend = make_backend()
    backend.put_batch_outputs(["k"], {"x": torch.ones(1), "meta": value})
    backend.close()
    got = make_backend().lookup_batch(["k"]).output()["meta"]
    assert got == value and math.copysign(1.0, got["f"]) == -1.0


# ----------------------------------------------------------------------- keys


def test_int_str_and_tensor_ids_name_the_same_entry_across_a_restart(make_backend):
    backend = make_backend()
    backend.put_batch_outputs([7], torch.full((1, 2), 7.0))
    backend.put_batch_outputs(torch.tensor([8]), torch.full((1, 2), 8.0))
    backend.put_batch_outputs(["9"], torch.full((1, 2), 9.0))
    backend.close()

    reopened = make_backend()
    for ids in (["7", "8", "9"], [7, 8, 9], torch.tensor([7, 8, 9]), np.array([7, 8, 9]),
                (np.int64(7), np.int32(8), 9), [torch.tensor(7), 8, "9"]):
        cached = reopened.lookup_batch(ids)
        assert cached.all_found, ids
        assert cached.output()[:, 0].tolist() == [7.0, 8.0, 9.0]
    assert 7 in reopened and "7" in reopened and torch.tensor([7]) in reopened
    assert 10 not in reopened
    assert len(reopened) == 3


def test_unicode_and_very_long_keys(make_backend):
    keys = ["ключ-🙂", "日本語", "x" * 10_000, "", " spaced key\twith\ttabs"]
    backend = make_backend()
    backend.put_batch_outputs(keys, torch.arange(5.0).reshape(5, 1))
    backend.close()
    reopened = make_backend()
    out = reopened.lookup_batch(list(reversed(keys))).output()
    assert out.flatten().tolist() == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert "x" * 9_999 not in reopened


def test_duplicate_keys_in_a_lookup_get_the_same_row(make_backend):
    backend = make_backend()
    backend.put_batch_outputs(["a", "b"], torch.tensor([[1.0], [2.0]]))
    assert backend.lookup_batch(["a", "b", "a", "a"]).output().flatten().tolist() == [1.0, 2.0, 1.0, 1.0]


def test_repeated_key_in_one_put_keeps_the_last_row(make_backend):
    backend = make_backend()
    backend.put_batch_outputs(["a", "a"], torch.tensor([[1.0], [2.0]]))
    assert backend.lookup_batch(["a"]).output().item() == 2.0
    assert len(backend) == 1


# ---------------------------------------------------------------- safety


def test_non_json_values_need_allow_pickle(make_backend):
    strict = make_backend("strict_v1")
    with pytest.raises(TypeError, match="allow_pickle=True"):
        strict.put_batch_outputs([0], {"x": torch.ones(1, 1), "meta": {"size": (224, 224)}})
    assert len(strict) == 0

    trusting = make_backend("trusting_v1", allow_pickle=True)
    trusting.put_batch_outputs([0], {"x": torch.ones(1, 1), "meta": {"size": (224, 224), "nan": float("nan")}})
    meta = trusting.lookup_batch([0]).output()["meta"]
    assert meta["size"] == (224, 224) and isinstance(meta["size"], tuple) and math.isnan(meta["nan"])


def test_pickled_entries_are_not_loaded_without_allow_pickle(make_backend):
    writer = make_backend(allow_pickle=True)
    writer.put_batch_outputs([0], {"x": torch.ones(1, 1), "meta": (1, 2)})
    writer.close()
    with pytest.raises(PickleNotAllowedError, match="allow_pickle"):
        make_backend(allow_pickle=False).lookup_batch([0]).output()
    with pytest.raises(PickleNotAllowedError):
        make_backend(allow_pickle=False).get_batch([0])


class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_crafted_pickle_in_the_cache_never_runs_without_allow_pickle(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_RunsCode(str(marker)), protocol=2)
    store = _core.Store(str(tmp_path / "cache"), "evil_v1")
    store.ensure_schema([("", "blob", "torch.uint8")], "blob", "")
    store.put_batch(["k"], [("blob", [evil])])
    store.flush()
    store.close()

    with ArrowIPCCacheBackend(tmp_path / "cache", "evil_v1") as backend:
        with pytest.raises(PickleNotAllowedError):
            backend.get_batch(["k"])
        with pytest.raises(PickleNotAllowedError):
            backend.lookup_batch(["k"]).output()
    assert not marker.exists()

    # Positive control: the blob really runs code once the user opts in.
    with ArrowIPCCacheBackend(tmp_path / "cache", "evil_v1", allow_pickle=True) as backend:
        backend.get_batch(["k"])
    assert marker.exists()


# ---------------------------------------------------------------- schema


def test_schema_mismatch_explains_and_suggests_a_new_module_id(make_backend):
    backend = make_backend("features_v1")
    backend.put_batch_outputs([0], torch.ones(1, 2))
    backend.close()
    other = make_backend("features_v1")
    with pytest.raises(SchemaMismatchError) as info:
        other.put_batch_outputs([1], torch.ones(1, 2, dtype=torch.float64))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert other.path in message
    assert "different output" in message and "'features_v2'" in message
    # The failed put changed nothing.
    assert len(other) == 1 and other.lookup_batch([0]).all_found and 1 not in other


def test_structure_mismatch_with_identical_leaves_is_detected(make_backend):
    backend = make_backend("pair")
    backend.put_batch_outputs([0], (torch.ones(1), torch.ones(1)))
    with pytest.raises(SchemaMismatchError, match="'pair_v2'"):
        backend.put_batch_outputs([1], [torch.ones(1), torch.ones(1)])
    assert 1 not in backend


def test_puts_after_a_tensor_put_are_still_checked_against_the_schema(make_backend):
    # Once one bare tensor of a dtype has been put, later puts of plain tensors of that dtype skip
    # the layout check; every other output must still be checked, in the same backend.
    backend = make_backend()
    backend.put_batch_outputs([0, 1], torch.ones(2, 3))
    with pytest.raises(SchemaMismatchError, match="torch.float64 in the output but torch.float32"):
        backend.put_batch_outputs([2], torch.ones(1, 3, dtype=torch.float64))
    with pytest.raises(SchemaMismatchError, match="is a dict but the cache stores a tensor"):
        backend.put_batch_outputs([3], {"a": torch.ones(1, 3)})
    with pytest.raises(ValueError, match="batched along dim 0"):
        backend.put_batch_outputs([4, 5], torch.ones(3, 3))
    backend.put_batch_outputs([6], torch.full((1, 5), 2.0).t().contiguous().t())  # a non-contiguous view
    backend.put_batch_outputs([7], torch.nn.Parameter(torch.full((1, 2), 3.0)))  # a Tensor subclass
    assert all(k not in backend for k in (2, 3, 4, 5))
    assert torch.equal(backend.lookup_fast([6]), torch.full((1, 5), 2.0))
    assert torch.equal(backend.lookup_fast([7]), torch.full((1, 2), 3.0))


def test_tensor_puts_store_exact_rows_for_every_memory_layout(make_backend):
    # Bare tensors after the first go to the engine as numpy views where they can; transposed,
    # strided, grad-requiring, negated and conjugated tensors must still be stored as their values.
    backend = make_backend()
    backend.put_batch_outputs([0, 1], torch.zeros(2, 3))
    table = torch.arange(100 * 3, dtype=torch.float32).view(100, 3)
    layouts = {
        10: torch.arange(12.0).view(3, 4).t(),  # (4, 3), transposed
        20: table[::7][:4],  # rows 7 apart
        30: torch.ones(4, 3, requires_grad=True) * 2,
        40: torch._neg_view(table[:4]),
    }
    for start, output in layouts.items():
        backend.put_batch_outputs(list(range(start, start + 4)), output)
    for start, output in layouts.items():
        assert torch.equal(backend.lookup_fast(list(range(start, start + 4))), output.detach().resolve_neg())

    cube = make_backend("cube")
    cube.put_batch_outputs([0], torch.zeros(1, 2, 3, dtype=torch.complex64))
    values = torch.randn(3, 2, 3, dtype=torch.complex64)
    cube.put_batch_outputs([1, 2, 3], values.conj())  # conjugate bit set
    cube.put_batch_outputs([4, 5], values[1:].permute(0, 2, 1).contiguous().permute(0, 2, 1))
    assert torch.equal(cube.lookup_fast([1, 2, 3]), values.conj().resolve_conj())
    assert torch.equal(cube.lookup_fast([4, 5]), values[1:])


def test_leaf_kind_change_is_a_schema_mismatch(make_backend):
    backend = make_backend()
    backend.put_batch_outputs([0], {"a": torch.ones(1, 1), "b": torch.ones(1, 1)})
    with pytest.raises(SchemaMismatchError):
        backend.put_batch_outputs([1], {"a": torch.ones(1, 1), "b": "text"})


# --------------------------------------------------------------- lifecycle


def test_context_manager_flushes_and_close_is_idempotent(tmp_path):
    with ArrowIPCCacheBackend(tmp_path, "ctx_v1", async_write=True) as backend:
        backend.put_batch_outputs(list(range(10)), torch.arange(10.0).reshape(10, 1))
    backend.close()
    assert "closed" in repr(backend)
    with pytest.raises(ClosedError):
        backend.lookup_batch([0])
    with ArrowIPCCacheBackend(tmp_path, "ctx_v1") as reopened:
        assert len(reopened) == 10
        assert reopened.lookup_batch([9]).output().item() == 9.0


def test_an_unreferenced_backend_is_collected_and_its_rows_persist(tmp_path):
    backend = ArrowIPCCacheBackend(tmp_path, "gc_v1")
    backend.put_batch_outputs([0, 1], torch.ones(2, 2))
    ref = weakref.ref(backend)
    del backend
    gc.collect()
    assert ref() is None  # the exit-time flush hook holds no strong reference
    with ArrowIPCCacheBackend(tmp_path, "gc_v1") as reopened:
        assert len(reopened) == 2


def test_flush_makes_rows_durable_and_stats_count_them(make_backend):
    backend = make_backend(flush_every=4, async_write=False)
    assert backend.stats()["write_seconds"] == 0.0
    backend.put_batch_outputs(list(range(10)), torch.zeros(10, 3))
    backend.flush()
    stats = backend.stats()
    assert stats["entries"] == 10 and stats["pending_rows"] == 0 and stats["rows_written"] == 10
    assert stats["write_seconds"] > 0.0  # three segments written, each with two fsyncs
    backend.lookup_batch([0, 99])
    stats = backend.stats()
    assert stats["hits"] >= 1 and stats["misses"] >= 1


@pytest.mark.parametrize("flush_every, async_write, segments", [
    (None, True, 1),     # the default: async segments of tiny rows hold at least 1 MB
    (2048, True, 2),     # an explicit flush_every: exactly that many rows per segment
    (None, False, 2),    # synchronous: 2048 rows per segment
])
def test_segments_of_tiny_rows(make_backend, flush_every, async_write, segments):
    backend = make_backend(flush_every=flush_every, async_write=async_write)
    feats = torch.randn(3000, 16)  # about 280 KB of segment bytes
    for start in range(0, 3000, 256):
        backend.put_batch_outputs(torch.arange(start, min(start + 256, 3000)), feats[start:start + 256])
    backend.flush()
    stats = backend.stats()
    assert stats["rows_written"] == 3000 and stats["segments"] == segments
    assert torch.equal(backend.lookup_fast(torch.arange(3000)), feats)


def test_repr_and_attributes(make_backend, tmp_path):
    backend = make_backend("resnet50_imagenet_v1")
    assert backend.module_id == "resnet50_imagenet_v1"
    assert backend.cache_dir == str(tmp_path / "cache")
    assert backend.path == os.path.join(str(tmp_path / "cache"), "resnet50_imagenet_v1")
    assert "resnet50_imagenet_v1" in repr(backend) and "entries=0" in repr(backend)


def test_non_writer_rank_keeps_results_in_memory_only(make_backend, tmp_path):
    rank1 = make_backend(writer_rank=0, current_rank=1)
    assert not rank1.persist
    rank1.put_batch_outputs([0, 1], torch.ones(2, 3))
    assert rank1.lookup_batch([0, 1]).all_found  # served from its hot cache
    rank1.flush()
    rank1.close()
    segments = tmp_path / "cache" / "features_v1" / "segments"
    assert not list(segments.glob("segment_*"))
    assert len(make_backend()) == 0


def test_refresh_sees_rows_written_by_another_store(make_backend):
    reader = make_backend(current_rank=1)
    writer = make_backend(current_rank=0)
    writer.put_batch_outputs(["x"], torch.ones(1, 2))
    writer.flush()
    reader.refresh()
    assert "x" in reader
    assert reader.lookup_batch(["x"]).all_found


def test_a_corrupt_segment_is_reported_and_its_rows_recomputed(tmp_path):
    with ArrowIPCCacheBackend(tmp_path, "m_v1") as backend:
        backend.put_batch_outputs([0, 1], torch.ones(2, 3))
    segment = next((tmp_path / "m_v1" / "segments").glob("segment_*.arrow"))
    segment.write_bytes(segment.read_bytes()[:64])  # truncated, as after a disk failure
    with pytest.warns(RuntimeWarning, match="segment"):
        backend = ArrowIPCCacheBackend(tmp_path, "m_v1")
    with backend:
        assert backend.stats()["skipped_segments"] == 1
        cached = backend.lookup_batch([0, 1])
        assert cached.missing_positions.tolist() == [0, 1]
        backend.put_batch_outputs([0, 1], torch.full((2, 3), 2.0))
        assert torch.equal(backend.lookup_batch([1]).output(), torch.full((1, 3), 2.0))


# ----------------------------------------------------------------- lookup_fast


def test_lookup_fast_returns_the_tensor_itself_when_every_key_is_cached(make_backend):
    features = torch.randn(5, 3, 4)
    backend = make_backend()
    backend.put_batch_outputs([10, 11, 12, 13, 14], features)
    got = backend.lookup_fast(torch.tensor([14, 10, 12]))
    assert type(got) is torch.Tensor
    assert bits_equal(got, features[[4, 0, 2]])
    backend.close()
    reopened = make_backend()  # served from the segment on disk, not pending rows
    assert bits_equal(reopened.lookup_fast([13, 11]), features[[3, 1]])


@pytest.mark.parametrize("row_shape", [(), (7,), (2, 3, 4)], ids=str)
def test_lookup_fast_keeps_the_row_shape(make_backend, row_shape):
    features = random_tensor(torch.float16, 4, *row_shape)
    backend = make_backend()
    backend.put_batch_outputs([0, 1, 2, 3], features)
    got = backend.lookup_fast([3, 1])
    assert type(got) is torch.Tensor and got.shape == (2, *row_shape)
    assert bits_equal(got, features[[3, 1]])
    got[0].zero_()  # the result is the caller's own: writable, and the cache is unchanged
    assert bits_equal(backend.lookup_fast([3]), features[[3]])


def test_lookup_fast_falls_back_to_a_cached_batch_on_misses_and_structured_outputs(make_backend):
    backend = make_backend()
    backend.put_batch_outputs([0, 1], torch.ones(2, 3))
    partial = backend.lookup_fast([1, 7])
    assert not isinstance(partial, torch.Tensor)
    assert partial.found.tolist() == [True, False]

    structured = make_backend(module_id="dict_out")
    out = {"a": torch.arange(4.0).reshape(2, 2), "b": torch.zeros(2, 1)}
    structured.put_batch_outputs([0, 1], out)
    batch = structured.lookup_fast([1, 0])
    assert not isinstance(batch, torch.Tensor) and batch.found.all()
    assert bits_equal(batch.output()["a"], out["a"][[1, 0]])
