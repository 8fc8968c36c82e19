"""The bad-input table (docs/bad_inputs.md): every bad input we tried, what the user
gets, and proof that nothing already cached is lost.

Every case runs against a cache holding two flushed modules, ``t_v1`` (a single
float32 tensor per sample) and ``d_v1`` (a dict of a tensor and a JSON leaf), both
open for writing. The case does the bad thing and checks the exception type and
message; then the same backends (unless the case closed them) and freshly opened
ones must still serve every earlier row bit-exactly. Each case's ``doc`` is one row
of docs/bad_inputs.md; ``test_the_docs_table_lists_every_case`` keeps the two in
step (regenerate the table with ``python tests/python/test_bad_input_table.py``).
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from conftest import FrozenLinear, Recorder, bits_equal, inputs_for, random_tensor  # noqa: E402

from torchcachex import ArrowIPCCacheBackend, CacheModuleDecorator  # noqa: E402
from torchcachex.errors import (  # noqa: E402
    CacheIOError,
    ClosedError,
    PickleNotAllowedError,
    SchemaMismatchError,
)

IDS = list(range(8))
DOCS = Path(__file__).resolve().parents[2] / "docs" / "bad_inputs.md"


def t_rows(ids):
    return torch.stack([random_tensor(torch.float32, 3, seed=1000 + i) for i in ids])


def d_rows(ids):
    return {"emb": torch.stack([random_tensor(torch.float32, 2, seed=2000 + i) for i in ids]),
            "meta": {"src": "a"}}


class Ctx:
    """The cache every case starts from, plus helpers."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.cache_dir = tmp_path / "cache"
        self.t = ArrowIPCCacheBackend(self.cache_dir, "t_v1", flush_every=3)
        self.t.put_batch_outputs(IDS, t_rows(IDS))
        self.t.flush()
        self.d = ArrowIPCCacheBackend(self.cache_dir, "d_v1", flush_every=3)
        self.d.put_batch_outputs(IDS, d_rows(IDS))
        self.d.flush()
        self.extra: List[ArrowIPCCacheBackend] = []

    def backend(self, module_id: str, **kwargs) -> ArrowIPCCacheBackend:
        backend = ArrowIPCCacheBackend(self.cache_dir, module_id, **kwargs)
        self.extra.append(backend)
        return backend

    def module_dir(self, module_id: str) -> Path:
        return self.cache_dir / module_id

    def side_cache(self, module_id: str = "x_v1", n: int = 6, flush_every: int = 3) -> List[Path]:
        """A third, flushed cache to damage; returns its segment files, oldest first."""
        with ArrowIPCCacheBackend(self.cache_dir, module_id, flush_every=flush_every) as side:
            side.put_batch_outputs(list(range(n)), t_rows(range(n)))
        seg_dir = self.module_dir(module_id) / "segments"
        return sorted(seg_dir.glob("segment_*.arrow"), key=lambda p: int(p.stem.split("_")[1]))

    def check_intact(self) -> None:
        for backend, rows in ((self.t, t_rows), (self.d, d_rows)):
            if not backend._closed:
                _check_served(backend, rows)
        for backend in [self.t, self.d, *self.extra]:
            try:
                backend.close()
            except Exception:  # noqa: BLE001 - some cases leave a backend that cannot flush
                pass
        for module_id, rows in (("t_v1", t_rows), ("d_v1", d_rows)):
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # the earlier caches are not damaged: no warning
                with ArrowIPCCacheBackend(self.cache_dir, module_id) as reopened:
                    _check_served(reopened, rows)


def _check_served(backend, rows) -> None:
    cached = backend.lookup_batch(IDS)
    assert cached.all_found, f"{backend.module_id}: lost {cached.missing_positions.tolist()}"
    out, want = cached.output(), rows(IDS)
    if isinstance(want, dict):
        assert bits_equal(out["emb"], want["emb"]) and out["meta"] == want["meta"]
    else:
        assert bits_equal(out, want)


@dataclass
class Case:
    id: str
    fn: Callable[[Ctx], None]
    input: str
    gets: str
    state: str
    group: str


CASES: Dict[str, Case] = {}
GROUP = ["ids"]


def case(id: str, input: str, gets: str, state: str = "unchanged"):
    def register(fn):
        assert id not in CASES, id
        CASES[id] = Case(id, fn, input, gets, state, GROUP[0])
        return fn
    return register


def decorated(ctx: Ctx, backend=None, module=None):
    return CacheModuleDecorator(module or FrozenLinear(in_features=4, out_features=3), backend or ctx.t)


# ============================================================== ids

GROUP[0] = "Cache ids"


@case("no_ids", "decorator called without `cache_ids=` (tensor input, no `key_from_batch_fn`)",
      "`ValueError`: says to pass `cache_ids=`, a dict batch with `\"cache_ids\"`, or `key_from_batch_fn`")
def _(ctx):
    with pytest.raises(ValueError, match="cache_ids="):
        decorated(ctx)(inputs_for([0, 1]))


@case("dict_batch_without_ids", "dict batch without a `\"cache_ids\"` entry",
      "`ValueError` naming `cache_ids`")
def _(ctx):
    with pytest.raises(ValueError, match="cache_ids"):
        decorated(ctx)({"x": inputs_for([0, 1])})


@case("too_few_ids", "2 ids for a batch of 3 samples", "`ValueError`: \"got 2 cache ids for a batch of 3 samples\"")
def _(ctx):
    with pytest.raises(ValueError, match="got 2 cache ids for a batch of 3 samples"):
        decorated(ctx)(inputs_for([0, 1, 2]), cache_ids=[0, 1])


@case("too_many_ids", "4 ids for a batch of 3 samples", "`ValueError`: \"got 4 cache ids for a batch of 3 samples\"")
def _(ctx):
    with pytest.raises(ValueError, match="got 4 cache ids for a batch of 3 samples"):
        decorated(ctx)(inputs_for([0, 1, 2]), cache_ids=[0, 1, 2, 3])


@case("float_ids", "float ids `[1.5, 2.5]`", "`TypeError`: \"cache id at index 0 has unsupported type float\" + accepted types")
def _(ctx):
    with pytest.raises(TypeError, match="index 0 has unsupported type float"):
        decorated(ctx)(inputs_for([0, 1]), cache_ids=[1.5, 2.5])


@case("none_id", "`None` among the ids", "`TypeError` naming index 1 and `NoneType`")
def _(ctx):
    with pytest.raises(TypeError, match="index 1 has unsupported type NoneType"):
        ctx.t.get_batch(["a", None])


@case("bool_ids", "bool ids `[True, False]` (would silently alias 1 and 0)", "`TypeError`: ids must be str or int")
def _(ctx):
    with pytest.raises(TypeError, match="bool"):
        ctx.t.lookup_batch([True, False])


@case("bytes_id", "a `bytes` id", "`TypeError` naming the index and `bytes`")
def _(ctx):
    with pytest.raises(TypeError, match="index 1 has unsupported type bytes"):
        ctx.t.put_batch({"a": torch.ones(3), b"b": torch.ones(3)})


@case("float_tensor_ids", "a float tensor of ids", "`TypeError`: ids tensor must have an integer dtype")
def _(ctx):
    with pytest.raises(TypeError, match="integer dtype"):
        decorated(ctx)(inputs_for([0, 1]), cache_ids=torch.tensor([0.0, 1.0]))


@case("bool_tensor_ids", "a bool tensor of ids", "`TypeError`: integer dtype needed")
def _(ctx):
    with pytest.raises(TypeError, match="integer dtype"):
        ctx.t.lookup_batch(torch.tensor([True, False]))


@case("2d_id_tensor", "a 2-D id tensor", "`ValueError`: must be 1-D (one id per sample)")
def _(ctx):
    with pytest.raises(ValueError, match="1-D"):
        ctx.t.lookup_batch(torch.zeros(2, 2, dtype=torch.long))


@case("float_numpy_ids", "a float64 numpy array of ids", "`TypeError`: dtype float64 not supported")
def _(ctx):
    with pytest.raises(TypeError, match="float64"):
        ctx.t.lookup_batch(np.array([0.5, 1.5]))


@case("set_ids", "a `set` of ids (no order)", "`TypeError`: must be a batch, got set")
def _(ctx):
    with pytest.raises(TypeError, match="got set"):
        ctx.t.lookup_batch({"a", "b"})


@case("str_as_ids", "a single string `\"ab\"` as the ids", "`TypeError`: got str (not split into characters)")
def _(ctx):
    with pytest.raises(TypeError, match="got str"):
        ctx.t.lookup_batch("ab")


@case("scalar_id", "a bare int `7` as the ids", "`TypeError`: got int; pass a list")
def _(ctx):
    with pytest.raises(TypeError, match="got int"):
        ctx.t.lookup_batch(7)


@case("generator_ids", "a generator of ids", "`TypeError`: got generator")
def _(ctx):
    with pytest.raises(TypeError, match="got generator"):
        ctx.t.lookup_batch(i for i in range(2))


@case("lone_surrogate_id", "a str id with a lone surrogate (`\"\\ud800\"`, not encodable as UTF-8)",
      "`UnicodeEncodeError` (a `ValueError`): surrogates not allowed")
def _(ctx):
    with pytest.raises(UnicodeEncodeError, match="surrogates not allowed"):
        ctx.t.put_batch_outputs(["ok", "\ud800"], t_rows([0, 1]))
    with pytest.raises(UnicodeEncodeError):
        ctx.t.lookup_batch(["\ud800"])
    assert "ok" not in ctx.t  # the batch was refused as a whole


@case("duplicate_ids_in_batch", "the same id twice in one decorator batch (sampling with replacement)",
      "accepted: computed once (first occurrence) and served to every position naming it", "unchanged + new row")
def _(ctx):
    module = FrozenLinear(in_features=4, out_features=3)
    out = CacheModuleDecorator(module, ctx.backend("dup_v1"))(inputs_for([5, 5, 6]), cache_ids=[5, 5, 6])
    assert module.seen == [5, 6]
    assert torch.equal(out[0], out[1])


@case("duplicate_ids_in_put", "the same id twice in one `put_batch_outputs` with different rows",
      "accepted: the later row wins (as for a later put)", "unchanged + new row")
def _(ctx):
    backend = ctx.backend("dupput_v1")
    backend.put_batch_outputs([7, 7], torch.tensor([[1.0], [2.0]]))
    results, _ = backend.get_batch([7])
    assert results[0].tolist() == [2.0]


@case("huge_and_negative_int_ids", "ids `2**70` and `-1`", "accepted: just keys (their decimal strings)", "unchanged + new rows")
def _(ctx):
    backend = ctx.backend("bigint_v1")
    backend.put_batch_outputs([2**70, -1], torch.tensor([[1.0], [2.0]]))
    assert backend.lookup_batch([str(2**70), "-1"]).all_found


# ============================================================== construction

GROUP[0] = "Opening a cache"


def _rejects_module_id(ctx, module_id, exc=ValueError, match="resnet50_imagenet_v1"):
    before = sorted(os.listdir(ctx.cache_dir))
    with pytest.raises(exc, match=match):
        ArrowIPCCacheBackend(ctx.cache_dir, module_id)
    assert sorted(os.listdir(ctx.cache_dir)) == before  # nothing created


@case("module_id_empty", "`module_id=\"\"`", "`ValueError` suggesting a plain versioned name such as 'resnet50_imagenet_v1'")
def _(ctx):
    _rejects_module_id(ctx, "")


@case("module_id_dotdot", "`module_id=\"..\"` or `\".\"`", "`ValueError` (same advice); nothing created")
def _(ctx):
    _rejects_module_id(ctx, "..")
    _rejects_module_id(ctx, ".")


@case("module_id_slash", "`module_id` with `/` (`\"a/b\"`, `\"../escape\"`, `\"/abs\"`)", "`ValueError`; nothing created outside or inside `cache_dir`")
def _(ctx):
    for module_id in ("a/b", "../escape", "/abs"):
        _rejects_module_id(ctx, module_id)


@case("module_id_backslash", "`module_id` with `\\`", "`ValueError`")
def _(ctx):
    _rejects_module_id(ctx, "a\\b")


@case("module_id_control", "`module_id` with a control character (tab, NUL, DEL)", "`ValueError`")
def _(ctx):
    for module_id in ("tab\there", "nul\x00", "del\x7f"):
        _rejects_module_id(ctx, module_id)


@case("module_id_too_long", "`module_id` longer than 255 bytes (UTF-8)", "`ValueError`: a directory name holds at most 255 bytes")
def _(ctx):
    _rejects_module_id(ctx, "x" * 256, match="at most 255")
    _rejects_module_id(ctx, "é" * 128, match="at most 255")


@case("module_id_surrogate", "`module_id` with a lone surrogate", "`ValueError`: not valid Unicode")
def _(ctx):
    _rejects_module_id(ctx, "m\ud800", match="not valid Unicode")


@case("module_id_not_str", "`module_id=None`, `5` or `b\"bytes\"`", "`TypeError` naming `module_id`")
def _(ctx):
    for module_id in (None, 5, b"bytes"):
        _rejects_module_id(ctx, module_id, TypeError, "module_id")


@case("cache_dir_wrong_type", "`cache_dir=42`", "`TypeError`: must be a str or os.PathLike")
def _(ctx):
    with pytest.raises(TypeError, match="cache_dir"):
        ArrowIPCCacheBackend(42, "m_v1")


@case("cache_dir_nul", "`cache_dir` containing a NUL character", "`ValueError` (the OS would cut the path there and write elsewhere); nothing created")
def _(ctx):
    before = sorted(os.listdir(ctx.tmp))
    with pytest.raises(ValueError, match="NUL"):
        ArrowIPCCacheBackend(str(ctx.tmp / "a") + "\x00b", "m_v1")
    assert sorted(os.listdir(ctx.tmp)) == before


@case("cache_dir_is_a_file", "`cache_dir` is an existing file", "`CacheIOError` (an `OSError`): exists and is not a directory")
def _(ctx):
    blocker = ctx.tmp / "file"
    blocker.write_text("x")
    with pytest.raises(CacheIOError, match="not a directory"):
        ArrowIPCCacheBackend(blocker, "m_v1")


@case("bad_sizes", "`lru_size=-1`, `flush_every=0`, `flush_every=1.5`, `max_workers=0`", "`ValueError`: must be an int >= N, naming the argument")
def _(ctx):
    for kwargs in ({"lru_size": -1}, {"flush_every": 0}, {"flush_every": 1.5}, {"max_workers": 0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            ArrowIPCCacheBackend(ctx.cache_dir, "t_v1", **kwargs)


@case("bad_ranks", "`writer_rank=\"x\"`, `current_rank=\"0\"`, `current_rank=-1`", "`ValueError`/`TypeError` explaining int ranks (e.g. `int(os.environ['RANK'])`)")
def _(ctx):
    with pytest.raises(ValueError, match="writer_rank"):
        ArrowIPCCacheBackend(ctx.cache_dir, "t_v1", writer_rank="x")
    with pytest.raises(TypeError, match=r"int\(os.environ\['RANK'\]\)"):
        ArrowIPCCacheBackend(ctx.cache_dir, "t_v1", current_rank="0")
    with pytest.raises(ValueError, match="current_rank must be >= 0"):
        ArrowIPCCacheBackend(ctx.cache_dir, "t_v1", current_rank=-1)


@case("allow_pickle_not_bool", "`allow_pickle=\"false\"` (a config string; `bool(\"false\")` is True)", "`TypeError`: must be a bool; pickle stays off")
def _(ctx):
    for value in ("false", "no", 1, None):
        with pytest.raises(TypeError, match="allow_pickle must be a bool"):
            ArrowIPCCacheBackend(ctx.cache_dir, "t_v1", allow_pickle=value)


@case("trainable_module", "a module with trainable parameters (training mode)", "`ValueError`: names the parameters; freeze with `requires_grad_(False)` or pass `enforce_stateless=False`")
def _(ctx):
    with pytest.raises(ValueError, match=r"requires_grad_\(False\)"):
        CacheModuleDecorator(nn.Linear(4, 3), ctx.t)


@case("not_a_module", "a plain function instead of an `nn.Module`", "`TypeError` asking for an `nn.Module`")
def _(ctx):
    with pytest.raises(TypeError, match="nn.Module"):
        CacheModuleDecorator(lambda x: x, ctx.t)


# ============================================================== outputs

GROUP[0] = "Module outputs and puts"


@case("dtype_mismatch", "an output of another dtype than the cache's (float64 into a float32 cache)",
      "`SchemaMismatchError` (a `ValueError`): \"...torch.float64 in the output but torch.float32 in the cache...\" + suggests `module_id` `t_v2`")
def _(ctx):
    with pytest.raises(SchemaMismatchError, match=r"torch.float64 in the output but torch.float32 in the cache.*'t_v2'"):
        ctx.t.put_batch_outputs([100], torch.ones(1, 3, dtype=torch.float64))
    assert isinstance(SchemaMismatchError("x"), ValueError)


@case("structure_mismatch", "a dict (or tuple) output into a single-tensor cache", "`SchemaMismatchError`: \"The output is a dict but the cache stores a tensor\" + new `module_id`")
def _(ctx):
    with pytest.raises(SchemaMismatchError, match="is a dict but the cache stores a tensor"):
        ctx.t.put_batch_outputs([100], {"a": torch.ones(1, 3)})
    with pytest.raises(SchemaMismatchError, match="is a tuple but the cache stores a tensor"):
        ctx.t.put_batch_outputs([100], (torch.ones(1, 3),))


@case("leaf_renamed", "a dict output whose key changed (`meta` -> `info`)", "`SchemaMismatchError`: \"Leaf 1 is named 'info' in the output but 'meta' in the cache\"")
def _(ctx):
    with pytest.raises(SchemaMismatchError, match="named 'info' in the output but 'meta' in the cache"):
        ctx.d.put_batch_outputs([100], {"emb": torch.ones(1, 2), "info": {"src": "a"}})


@case("leaf_added", "a dict output with an extra leaf", "`SchemaMismatchError`: \"The output has 3 leaves but the cache stores 2 (emb, meta)\"")
def _(ctx):
    with pytest.raises(SchemaMismatchError, match="has 3 leaves but the cache stores 2"):
        ctx.d.put_batch_outputs([100], {"emb": torch.ones(1, 2), "meta": {}, "z": torch.ones(1, 1)})


@case("leaf_kind_changed", "a tensor where the cache holds a non-tensor leaf", "`SchemaMismatchError`: \"Leaf 'meta' is a tensor in the output but a blob in the cache\"")
def _(ctx):
    with pytest.raises(SchemaMismatchError, match="'meta' is a tensor in the output but a blob"):
        ctx.d.put_batch_outputs([100], {"emb": torch.ones(1, 2), "meta": torch.ones(1, 1)})


@case("none_output", "a module returning `None` (or an int) into a tensor cache", "`SchemaMismatchError`: \"The output is a blob but the cache stores a tensor\"")
def _(ctx):
    with pytest.raises(SchemaMismatchError, match="is a blob but the cache stores a tensor"):
        ctx.t.put_batch_outputs([100], None)


@case("non_json_leaf", "a non-tensor leaf that is not plain JSON (tuple, set, bytes, numpy scalar, object) without `allow_pickle`",
      "`TypeError`: names the leaf and type, lists what JSON stores, says to pass `allow_pickle=True` if the directory is trusted; nothing written")
def _(ctx):
    backend = ctx.backend("json_v1")
    for value in ((1, 2), {1, 2}, b"ab", np.float32(1.0), object()):
        with pytest.raises(TypeError, match=r"leaf 'm' of type .* allow_pickle=True"):
            backend.put_batch_outputs([0], {"x": torch.ones(1), "m": value})
    assert len(backend) == 0


@case("non_finite_float_leaf", "a NaN/inf float in a non-tensor leaf", "`TypeError` (JSON has no NaN/inf): needs `allow_pickle=True`")
def _(ctx):
    for value in (float("nan"), float("inf"), {"score": float("-inf")}):
        with pytest.raises(TypeError, match="allow_pickle=True"):
            ctx.d.put_batch_outputs([100], {"emb": torch.ones(1, 2), "meta": value})


@case("non_str_dict_keys", "an output dict with non-str keys (`{0: x}`)", "`TypeError`: output dicts need str keys")
def _(ctx):
    with pytest.raises(TypeError, match="str keys"):
        ctx.backend("intkeys_v1").put_batch_outputs([0], {0: torch.ones(1)})


@case("sparse_output", "a sparse (non-strided) tensor output", "`TypeError`: only dense (strided) tensors can be cached")
def _(ctx):
    with pytest.raises(TypeError, match="strided"):
        ctx.backend("sparse_v1").put_batch_outputs([0], torch.ones(1, 3).to_sparse())


@case("unbatched_output", "an output without the batch dimension (a scalar, or a transposed tensor)", "`ValueError`: \"must be batched along dim 0: ... has shape (4, 2) but the batch has 2 cache ids\"")
def _(ctx):
    with pytest.raises(ValueError, match="batched along dim 0"):
        CacheModuleDecorator(Recorder(lambda x: x.sum()), ctx.backend("scalar_v1"))(inputs_for([0, 1]), cache_ids=[0, 1])
    with pytest.raises(ValueError, match=r"shape \(4, 2\).*2 cache ids"):
        CacheModuleDecorator(Recorder(lambda x: x.t()), ctx.backend("tr_v1"))(inputs_for([0, 1]), cache_ids=[0, 1])


@case("put_batch_not_a_mapping", "`put_batch([tensor])` (a list, not `{key: output}`)", "`TypeError`: expects a mapping {key: output}")
def _(ctx):
    with pytest.raises(TypeError, match="mapping"):
        ctx.t.put_batch([torch.ones(3)])


@case("put_batch_mixed_structures", "`put_batch` samples with different structures or dtypes", "`ValueError`: names the sample and both structures / the leaf whose dtypes disagree; nothing written")
def _(ctx):
    with pytest.raises(ValueError, match="different output structure"):
        ctx.t.put_batch({100: torch.ones(3), 101: (torch.ones(3),)})
    with pytest.raises(ValueError, match="dtype"):
        ctx.t.put_batch({100: torch.ones(3), 101: torch.ones(3, dtype=torch.float64)})
    assert 100 not in ctx.t


# ============================================================== reading

GROUP[0] = "Reading"


@case("pickle_without_allow_pickle", "reading a pickled value with `allow_pickle=False`", "`PickleNotAllowedError`: says it was not unpickled and why; nothing is unpickled")
def _(ctx):
    with ArrowIPCCacheBackend(ctx.cache_dir, "pk_v1", allow_pickle=True) as writer:
        writer.put_batch_outputs([0], {"x": torch.ones(1), "m": (1, 2)})
    with pytest.raises(PickleNotAllowedError, match="allow_pickle=False"):
        ctx.backend("pk_v1").get_batch([0])


@case("map_location_invalid", "`get_batch(keys, map_location=\"nonsense\")`", "`RuntimeError` from torch: expected a device type (also when every key misses)")
def _(ctx):
    with pytest.raises(RuntimeError, match="device"):
        ctx.t.get_batch([0], map_location="nonsense")
    with pytest.raises(RuntimeError, match="device"):
        ctx.t.get_batch([100], map_location="nonsense")


@case("map_location_cuda_without_gpu", "`map_location=\"cuda\"` on a machine without a GPU", "`RuntimeError` from torch (no accelerator); misses alone return `None` without touching CUDA")
def _(ctx):
    if torch.cuda.is_available():
        pytest.skip("a GPU is available: map_location='cuda' is valid here")
    with pytest.raises(RuntimeError):
        ctx.t.get_batch([0], map_location="cuda")
    assert ctx.t.get_batch([100], map_location="cuda") == ([None], [0])


# ============================================================== lifecycle

GROUP[0] = "Closed backends"


@case("use_after_close", "`get_batch`/`lookup_batch`/`put_batch`/`flush`/`len`/`in`/`stats`/`refresh` or a decorator call after `close()`",
      "`ClosedError`: \"the cache is closed; open a new backend to use it again\"; `close()` again is a no-op", "unchanged (closing flushed it)")
def _(ctx):
    ctx.t.close()
    calls = [lambda: ctx.t.get_batch([0]), lambda: ctx.t.lookup_batch([0]),
             lambda: ctx.t.put_batch_outputs([100], torch.ones(1, 3)), lambda: ctx.t.put_batch({100: torch.ones(3)}),
             ctx.t.flush, lambda: len(ctx.t), lambda: 0 in ctx.t, ctx.t.stats, ctx.t.refresh,
             lambda: decorated(ctx)(inputs_for([0]), cache_ids=[0])]
    for call in calls:
        with pytest.raises(ClosedError, match="closed"):
            call()
    ctx.t.close()


# ============================================================== files

GROUP[0] = "Damaged or foreign files in the cache directory"


def _open_side(ctx, module_id="x_v1"):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = ctx.backend(module_id)
    return backend, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


@case("flipped_segment", "a segment with a flipped byte (bit rot, power loss)", "`RuntimeWarning` \"checksum mismatch ... rows will be recomputed\" when first read; its rows are misses, never wrong bytes", "other segments intact; its rows recomputed")
def _(ctx):
    segments = ctx.side_cache()
    data = bytearray(segments[0].read_bytes())
    data[len(data) // 3] ^= 0x5A
    segments[0].write_bytes(bytes(data))
    backend, messages = _open_side(ctx)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cached = backend.lookup_batch(list(range(6)))
    messages += [str(w.message) for w in caught]
    assert any("segment_0.arrow" in m and "recomputed" in m for m in messages), messages
    assert cached.found.tolist() == [False] * 3 + [True] * 3
    assert backend.stats()["skipped_segments"] == 1


@case("truncated_segment", "a truncated segment", "`RuntimeWarning` \"skipping unreadable segment ... (no trailing ARROW1 magic)\" at open", "other segments intact; its rows recomputed")
def _(ctx):
    segments = ctx.side_cache()
    os.truncate(segments[-1], segments[-1].stat().st_size // 2)
    backend, messages = _open_side(ctx)
    assert any("skipping unreadable segment" in m and segments[-1].name in m for m in messages), messages
    assert backend.lookup_batch(list(range(6))).found.tolist() == [True] * 3 + [False] * 3


@case("empty_or_non_arrow_segment", "a zero-byte file, or a text file, named `segment_<n>.arrow`", "`RuntimeWarning` \"not an Arrow IPC file\"; skipped", "other segments intact")
def _(ctx):
    ctx.side_cache()
    seg_dir = ctx.module_dir("x_v1") / "segments"
    (seg_dir / "segment_50.arrow").write_bytes(b"")
    (seg_dir / "segment_51.arrow").write_text("hello, not arrow")
    backend, messages = _open_side(ctx)
    assert sum("not an Arrow IPC file" in m for m in messages) == 2, messages
    assert backend.lookup_batch(list(range(6))).all_found


@case("stray_files", "unrelated files in `segments/` (`README.txt`, `segment_x.arrow`, `*.arrow.tmp` of a live writer)", "ignored silently (only `segment_<n>.arrow` are segments)")
def _(ctx):
    ctx.side_cache()
    seg_dir = ctx.module_dir("x_v1") / "segments"
    (seg_dir / "README.txt").write_text("notes")
    (seg_dir / "segment_x.arrow").write_text("x")
    backend, messages = _open_side(ctx)
    assert messages == []
    assert backend.lookup_batch(list(range(6))).all_found


@case("foreign_segment", "a segment of another module (other dtype) copied into `segments/`", "`RuntimeWarning` \"does not match the cache schema: column 'data' is list<item: double> but the schema needs list<item: float>\"; skipped", "other segments intact")
def _(ctx):
    ctx.side_cache()
    with ArrowIPCCacheBackend(ctx.cache_dir, "f64_v1") as other:
        other.put_batch_outputs([100], torch.ones(1, 3, dtype=torch.float64))
    shutil.copy(ctx.module_dir("f64_v1") / "segments" / "segment_0.arrow",
                ctx.module_dir("x_v1") / "segments" / "segment_99.arrow")
    backend, messages = _open_side(ctx)
    assert any("segment_99.arrow" in m and "does not match the cache schema" in m for m in messages), messages
    assert backend.lookup_batch(list(range(6))).all_found
    assert not backend.lookup_batch([100]).all_found


@case("corrupt_schema_json", "a corrupt (truncated, not JSON) or deleted `schema.json`", "`RuntimeWarning`: \"ignoring corrupt schema.json (recovering it from the segments)\"; rewritten", "intact: every row served")
def _(ctx):
    ctx.side_cache()
    schema = ctx.module_dir("x_v1") / "schema.json"
    schema.write_text("{not json")
    backend, messages = _open_side(ctx)
    assert any("recovering it from the segments" in m for m in messages), messages
    assert backend.lookup_batch(list(range(6))).all_found
    backend.close()
    schema.unlink()
    backend, messages = _open_side(ctx)
    assert any("recovered the schema" in m for m in messages), messages
    assert backend.lookup_batch(list(range(6))).all_found


@case("foreign_schema_json", "a valid `schema.json` of another module copied over this one's",
      "`RuntimeWarning` per segment: \"does not match the cache schema\"; every segment skipped (a put of the real output then raises `SchemaMismatchError`). Delete `schema.json` to recover it from the segments",
      "files untouched; served again once `schema.json` is deleted")
def _(ctx):
    ctx.side_cache()
    with ArrowIPCCacheBackend(ctx.cache_dir, "f64_v1") as other:
        other.put_batch_outputs([100], torch.ones(1, 3, dtype=torch.float64))
    schema = ctx.module_dir("x_v1") / "schema.json"
    shutil.copy(ctx.module_dir("f64_v1") / "schema.json", schema)
    backend, messages = _open_side(ctx)
    assert sum("does not match the cache schema" in m for m in messages) == 2, messages
    assert not backend.lookup_batch(list(range(6))).found.any()
    backend.close()
    schema.unlink()
    backend, messages = _open_side(ctx)
    assert backend.lookup_batch(list(range(6))).all_found


# ============================================================== runner


def test_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input(tmp_path, case_id):
    ctx = Ctx(tmp_path)
    CASES[case_id].fn(ctx)
    ctx.check_intact()


# Rows of docs/bad_inputs.md backed by tests in other files (path, test, input, gets, state).
OTHER_ROWS = [
    ("Opening a cache", "tests/python/test_bad_input.py::test_read_only_cache_dir",
     "a read-only cache directory", "reads work; a write raises `CacheIOError` (an `OSError`) \"... not writable: fix its permissions, choose another cache_dir, or open it on a non-writer rank\"; a new module there cannot be created", "unchanged"),
    ("Resource faults", "tests/python/test_resource_faults.py::test_directory_turns_read_only_under_a_writer",
     "the directory turns read-only under a running writer", "`CacheIOError` from `flush()`: Permission denied, \"not writable\"; rows stay served from memory; `flush()` persists them once writable", "unchanged; unflushed rows kept"),
    ("Resource faults", "tests/python/test_resource_faults.py::test_disk_full_during_flush",
     "disk full during a flush", "`CacheIOError` from `flush()`: \"No space left on device ... free some space, then call flush() again\"; no partial file left", "flushed rows intact; unflushed rows kept and persisted once space returns"),
    ("Resource faults", "tests/python/test_resource_faults.py::test_file_size_limit_during_flush",
     "a file size limit (RLIMIT_FSIZE) hit during a flush", "`CacheIOError`: \"File too large (a file size limit was hit ...: raise it or use a smaller flush_every, then call flush() again)\"", "flushed rows intact; unflushed rows kept"),
    ("Resource faults", "tests/python/test_resource_faults.py::test_cache_directory_deleted_under_a_running_process",
     "the cache directory deleted under a running process", "lookups keep serving mapped rows; `flush()` raises `CacheIOError` \"... the cache directory no longer exists ...\"; no crash", "what was on disk is gone (deleted by the user); rows in memory persist if the directory is recreated"),
    ("Resource faults", "tests/python/test_resource_faults.py::test_close_after_the_directory_is_deleted_reports_the_lost_rows",
     "`close()` after the directory was deleted, with unflushed rows", "`CacheIOError`: \"closing the cache could not persist its last rows: ...\" (once)", "a new backend recreates the directory"),
    ("Cache ids", "tests/python/test_security.py::test_keys_are_only_data",
     "keys with `/`, `..`, NUL, newlines, `schema.json`, emoji, 3000 × `ü`, 200,000 chars", "accepted: just keys, stored inside segments; no file named after a key; each distinct from its look-alikes", "unchanged + new rows"),
    ("Cache ids", "tests/python/test_backend.py::test_unicode_and_very_long_keys",
     "unicode and very long keys", "accepted; round-trip across a restart", "unchanged + new rows"),
    ("Opening a cache", "tests/python/test_security.py::test_module_id_cannot_reach_outside_cache_dir",
     "path-like `module_id`s (`a/../../outside`, `/tmp/outside`, `\\..\\outside`, NUL tricks)", "`ValueError`; nothing created anywhere", "unchanged"),
    ("Reading", "tests/python/test_security.py::test_crafted_pickle_is_not_executed_without_allow_pickle",
     "a crafted pickle (code-running payload) in a blob column, read with `allow_pickle=False` (get_batch, lookup_batch, decorator)", "`PickleNotAllowedError`; the payload never runs", "unchanged"),
    ("Reading", "tests/python/test_security.py::test_malicious_index_pkl_is_never_read",
     "a malicious `index.pkl` (original implementation's index)", "ignored, even with `allow_pickle=True`; the index is rebuilt from segments", "unchanged"),
    ("Damaged or foreign files in the cache directory", "tests/python/test_security.py::test_segment_with_out_of_bounds_offsets_is_skipped",
     "a segment (no checksum, pyarrow-written) with out-of-bounds list/string offsets or a huge shape", "`RuntimeWarning`, segment skipped; no crash, no out-of-bounds read", "other segments intact"),
    ("Damaged or foreign files in the cache directory", "tests/python/test_crash_torture.py::test_crash_torture_ci_run",
     "writers SIGKILLed mid-put/flush; newest segment truncated; random bytes flipped; schema.json truncated/deleted (200 seeded trials)", "opening never raises; damaged segments reported and skipped", "no acknowledged row lost, no wrong byte served"),
]


def render_docs() -> str:
    groups: Dict[str, List[tuple]] = {}
    for c in CASES.values():
        groups.setdefault(c.group, []).append(
            (f"tests/python/test_bad_input_table.py::test_bad_input[{c.id}]", c.input, c.gets, c.state))
    for group, test, input_, gets, state in OTHER_ROWS:
        groups.setdefault(group, []).append((test, input_, gets, state))
    lines = [
        "# Bad inputs: what you get",
        "",
        "Every bad input we tried, what the user gets, and what happens to what is already cached.",
        "Each row names the test that backs it; every test passes. The rows of",
        "`tests/python/test_bad_input_table.py` run against a cache holding two flushed modules and then",
        "check that both still serve every earlier row bit-exactly, in the same backends and after a",
        "reopen (\"unchanged\"). This file is generated from that test file:",
        "`python tests/python/test_bad_input_table.py > docs/bad_inputs.md`.",
        "",
        "Exceptions: `SchemaMismatchError` and `InvalidArgumentError` are `ValueError`s; `CacheIOError` is an",
        "`OSError`; `ClosedError`, `CorruptFileError` and `PickleNotAllowedError` derive from",
        "`torchcachex.errors.Error` (a `RuntimeError`). All live in `torchcachex.errors`.",
        "",
    ]
    n = 0
    for group, rows in groups.items():
        lines += [f"## {group}", "", "| # | input | you get | cached data | test |", "|---|---|---|---|---|"]
        for test, input_, gets, state in rows:
            n += 1
            lines.append(f"| {n} | {input_} | {gets} | {state} | `{test}` |")
        lines.append("")
    lines.append(f"{n} rows.")
    return "\n".join(lines) + "\n"


def test_the_docs_table_lists_every_case():
    assert DOCS.read_text() == render_docs(), (
        "docs/bad_inputs.md is out of date: python tests/python/test_bad_input_table.py > docs/bad_inputs.md")


def test_every_test_named_by_the_docs_exists():
    root = DOCS.parents[1]
    for _, test, *_ in OTHER_ROWS:
        path, name = test.split("::")
        assert f"def {name}(" in (root / path).read_text(), test


if __name__ == "__main__":
    sys.stdout.write(render_docs())
