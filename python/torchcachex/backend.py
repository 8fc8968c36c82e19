"""ArrowIPCCacheBackend: the seed's backend API over the C++ ``Store``.

A backend maps stable per-sample keys to one module output per sample. Outputs
are flattened into named leaves (see :mod:`torchcachex.tree`):

* **tensor leaves** travel as raw bytes plus a per-sample shape. Writes send a
  batched tensor ``(B, *shape)`` as one ``(B, row_bytes)`` ``uint8`` view, and
  reads return one such buffer which becomes a ``(B, *shape)`` tensor without a
  copy. Every torch dtype round-trips bit-exactly.
* **non-tensor leaves** (e.g. ``{"width": 224}``) are stored per sample as JSON
  when they are plain data (``None``, ``bool``, ``int``, finite ``float``,
  ``str``, and ``list``/``dict`` of those with ``str`` keys). Anything else,
  tuples included (JSON would turn them into lists), is pickled -- only if the
  backend has ``allow_pickle=True``, both to write and to read.

Two APIs are offered:

* the seed's per-sample API: :meth:`ArrowIPCCacheBackend.get_batch` returns one
  output per sample (tensors without the batch dimension) and
  :meth:`ArrowIPCCacheBackend.put_batch` takes ``{key: output}``;
* the batched fast path used by :class:`~torchcachex.CacheModuleDecorator`:
  :meth:`ArrowIPCCacheBackend.lookup_batch` returns a :class:`CachedBatch` that
  assembles whole batched outputs, and
  :meth:`ArrowIPCCacheBackend.put_batch_outputs` stores a batched module output.
  Neither creates per-sample Python objects for tensor leaves.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import pickle
import re
import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import _core, tree
from .errors import PickleNotAllowedError, SchemaMismatchError

__all__ = ["ArrowIPCCacheBackend", "CachedBatch", "Keys", "normalize_keys"]

Device = Union[str, torch.device]

# dtype sent for blob leaves (the engine ignores it and reports "").
_BLOB_DTYPE = ""
# First byte of every pickle of protocol >= 2; JSON text never starts with it.
_PICKLE_MARK = 0x80
_PICKLE_PROTOCOL = 5


# --------------------------------------------------------------------------- keys


class Keys:
    """The normalized keys of one batch.

    ``values`` is either a 1-D ``numpy.int64`` array (integer ids: no per-key
    Python work) or a ``list[str]``. Integers name the same entry as their
    decimal string: ``7``, ``"7"`` and ``torch.tensor([7])`` are one key.
    """

    __slots__ = ("values",)

    def __init__(self, values: Union[np.ndarray, List[str]]):
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"Keys({self.values!r})"

    def take(self, positions: np.ndarray) -> "Keys":
        """The keys at ``positions`` (an int64 array)."""
        if isinstance(self.values, np.ndarray):
            return Keys(self.values[positions])
        return Keys([self.values[i] for i in positions.tolist()])

    def first_occurrences(self, positions: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Deduplicates the keys at ``positions``.

        Returns ``(first, inverse)``: ``first`` holds, for every distinct key, the
        position of its first occurrence (in order of appearance); ``inverse[j]``
        is the index into ``first`` of the key at ``positions[j]``. ``inverse`` is
        ``None`` when the keys are already distinct (then ``first is positions``).
        """
        if isinstance(self.values, np.ndarray):
            sub = self.values[positions]
            ordered = np.sort(sub)  # cheaper than np.unique for the common distinct case
            if not (ordered[1:] == ordered[:-1]).any():
                return positions, None
            _, first_idx, inverse = np.unique(sub, return_index=True, return_inverse=True)
            order = np.argsort(first_idx, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            return positions[first_idx[order]], rank[inverse.reshape(-1)].astype(np.int64)
        seen: Dict[str, int] = {}
        inverse_list = []
        first_list = []
        for pos in positions.tolist():
            key = self.values[pos]
            idx = seen.get(key)
            if idx is None:
                idx = seen[key] = len(first_list)
                first_list.append(pos)
            inverse_list.append(idx)
        if len(first_list) == len(positions):
            return positions, None
        return np.asarray(first_list, dtype=np.int64), np.asarray(inverse_list, dtype=np.int64)


_ACCEPTED_KEYS = (
    "a list/tuple of str or int (numpy integers and 0-d integer tensors included), "
    "a 1-D integer torch.Tensor (e.g. a collated LongTensor) or a 1-D integer numpy array"
)


def _key_str(key: Any, index: int) -> str:
    if type(key) is str:
        return key
    if isinstance(key, bool) or isinstance(key, np.bool_):
        raise TypeError(
            f"cache id at index {index} is a bool ({key!r}); ids must be str or int. "
            f"Accepted: {_ACCEPTED_KEYS}"
        )
    if isinstance(key, str):
        return str(key)
    if isinstance(key, (int, np.integer)):
        return str(int(key))
    if isinstance(key, torch.Tensor) and key.dim() == 0 and not key.is_floating_point() \
            and not key.is_complex() and key.dtype != torch.bool:
        return str(int(key.item()))
    raise TypeError(
        f"cache id at index {index} has unsupported type {type(key).__name__} ({key!r}); "
        f"accepted: {_ACCEPTED_KEYS}"
    )


def _int_array_keys(arr: np.ndarray) -> Keys:
    if arr.ndim != 1:
        raise ValueError(f"cache ids must be a 1-D sequence, got an array of shape {arr.shape}")
    if arr.dtype.kind == "b":
        raise TypeError(f"cache ids must be str or int, got a bool array; accepted: {_ACCEPTED_KEYS}")
    if arr.dtype.kind == "i":
        return Keys(np.ascontiguousarray(arr, dtype=np.int64))
    if arr.dtype.kind == "u":
        if arr.size == 0 or int(arr.max()) <= np.iinfo(np.int64).max:
            return Keys(np.ascontiguousarray(arr, dtype=np.int64))
        return Keys([str(int(k)) for k in arr.tolist()])
    if arr.dtype.kind in "UO":
        return Keys([_key_str(k, i) for i, k in enumerate(arr.tolist())])
    raise TypeError(f"cache ids of dtype {arr.dtype} are not supported; accepted: {_ACCEPTED_KEYS}")


def normalize_keys(keys: Any) -> Keys:
    """Normalizes a batch of cache ids.

    Accepts a ``list``/``tuple`` of ``str``/``int`` (numpy integers and 0-d
    integer tensors included), a 1-D integer ``torch.Tensor`` (moved to CPU) or
    a 1-D integer/str numpy array. ``bool`` ids and other types raise
    ``TypeError`` naming the offending index and type.
    """
    if isinstance(keys, Keys):
        return keys
    if type(keys) is torch.Tensor and keys.dtype is torch.int64 and keys.is_cpu and keys.dim() == 1 \
            and keys.is_contiguous() and not keys.requires_grad:
        return Keys(keys.numpy())  # the common case, a collated LongTensor: a view, no checks needed
    if isinstance(keys, torch.Tensor):
        if keys.is_floating_point() or keys.is_complex() or keys.dtype == torch.bool:
            raise TypeError(
                f"cache ids tensor must have an integer dtype, got {keys.dtype}; "
                f"accepted: {_ACCEPTED_KEYS}"
            )
        if keys.dim() != 1:
            raise ValueError(
                f"cache ids tensor must be 1-D (one id per sample), got shape {tuple(keys.shape)}"
            )
        return _int_array_keys(keys.detach().cpu().numpy())
    if isinstance(keys, np.ndarray):
        return _int_array_keys(keys)
    if isinstance(keys, (list, tuple)):
        return Keys([_key_str(k, i) for i, k in enumerate(keys)])
    raise TypeError(
        f"cache ids must be a batch (one id per sample), got {type(keys).__name__}; "
        f"accepted: {_ACCEPTED_KEYS}"
    )


# ----------------------------------------------------------------- leaf codecs


def _is_plain(value: Any) -> bool:
    """True if JSON round-trips ``value`` exactly (no tuples, no subclasses)."""
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_is_plain(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _is_plain(v) for k, v in value.items())
    return False


def _encode_blob(value: Any, allow_pickle: bool, leaf: str) -> bytes:
    if _is_plain(value):
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("ascii")
    if allow_pickle:
        return pickle.dumps(value, protocol=_PICKLE_PROTOCOL)
    raise TypeError(
        f"non-tensor output {_leaf_label(leaf)} of type {type(value).__name__} is not plain "
        "JSON data (None, bool, int, finite float, str, and lists/str-keyed dicts of those; "
        "tuples are not), so it can only be stored as a pickle. Pass allow_pickle=True to "
        "ArrowIPCCacheBackend if the cache directory is trusted."
    )


def _decode_blob(data: bytes, allow_pickle: bool, leaf: str, path: str) -> Any:
    if data[:1] == bytes([_PICKLE_MARK]):
        if not allow_pickle:
            raise PickleNotAllowedError(
                f"the cached value of {_leaf_label(leaf)} in {path} is a pickle; it was not "
                "unpickled because the backend has allow_pickle=False. Unpickling runs code "
                "chosen by whoever wrote the cache: pass allow_pickle=True only if you trust "
                "the cache directory."
            )
        return pickle.loads(data)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise _core.CorruptFileError(
            f"the cached value of {_leaf_label(leaf)} in {path} is neither JSON nor a pickle"
        ) from exc


def _leaf_label(name: str) -> str:
    return f"leaf {name!r}" if name else "the module output"


def _dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name[len("torch."):], None) if name.startswith("torch.") else None
    if not isinstance(dtype, torch.dtype):
        raise _core.CorruptFileError(f"cache schema names unknown torch dtype {name!r}")
    return dtype


def _tensor_bytes(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy-or-view of ``t`` with conj/neg bits resolved."""
    if t.layout != torch.strided:
        raise TypeError(f"only dense (strided) tensors can be cached, got layout {t.layout}")
    if t.is_cpu and t.is_contiguous() and not t.is_conj() and not t.is_neg():
        return t.detach()  # the common case: a view, no copy
    return t.detach().cpu().resolve_conj().resolve_neg().contiguous()


def _encode_dense(t: torch.Tensor, batch: int, leaf: str) -> tuple:
    if t.dim() == 0 or t.shape[0] != batch:
        raise ValueError(
            f"the module output must be batched along dim 0: {_leaf_label(leaf)} has shape "
            f"{tuple(t.shape)} but the batch has {batch} cache ids"
        )
    t = _tensor_bytes(t)
    shape = tuple(t.shape[1:])
    if t.numel() == 0:
        rows = np.zeros((batch, 0), dtype=np.uint8)
    else:
        rows = t.reshape(batch, -1).view(torch.uint8).numpy()
    return ("dense", rows, shape)


def _encode_row(t: torch.Tensor) -> Tuple[np.ndarray, tuple]:
    t = _tensor_bytes(t)
    if t.numel() == 0:
        return np.zeros(0, dtype=np.uint8), tuple(t.shape)
    return t.reshape(-1).view(torch.uint8).numpy(), tuple(t.shape)


def _as_words(*byte_rows: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """2-D uint8 tensors of equal row length, viewed as the widest integer
    words (8, 4, 2 or 1 bytes) that divide the row length and every storage offset."""
    width = byte_rows[0].shape[1]
    for dtype in (torch.int64, torch.int32, torch.int16):
        size = dtype.itemsize
        if width % size == 0 and all(t.storage_offset() % size == 0 for t in byte_rows):
            return tuple(t.view(dtype) for t in byte_rows)
    return byte_rows


def _decode_dense(rows: np.ndarray, shape: Sequence[int], dtype: torch.dtype, leaf: str) -> torch.Tensor:
    batch = rows.shape[0]
    numel = math.prod(shape)
    expected = numel * dtype.itemsize
    if rows.shape[1] != expected:
        raise _core.CorruptFileError(
            f"cached rows of {_leaf_label(leaf)} hold {rows.shape[1]} bytes, but shape "
            f"{tuple(shape)} of {dtype} needs {expected}"
        )
    if batch == 0 or expected == 0:
        return torch.empty((batch, *shape), dtype=dtype)
    if not rows.flags.writeable:  # torch.from_numpy warns on read-only arrays
        rows = rows.copy()
    return torch.from_numpy(rows).view(dtype).reshape(batch, *shape)


def _decode_row(buf: np.ndarray, shape: Sequence[int], dtype: torch.dtype, leaf: str) -> torch.Tensor:
    if math.prod(shape) * dtype.itemsize != buf.size:
        raise _core.CorruptFileError(
            f"a cached row of {_leaf_label(leaf)} holds {buf.size} bytes, but shape "
            f"{tuple(shape)} of {dtype} needs {math.prod(shape) * dtype.itemsize}"
        )
    if buf.size == 0:
        return torch.empty(tuple(shape), dtype=dtype)
    if not buf.flags.writeable:
        buf = buf.copy()
    return torch.from_numpy(buf).view(dtype).reshape(tuple(shape))


def _typed_rows(rows: np.ndarray) -> bool:
    """True if all-hit rows from ``get_batch_fast`` are typed, ``(B, *shape)`` of the leaf's dtype,
    rather than raw bytes, ``(B, row_bytes)`` uint8. Typed uint8 rows of shape ``(k,)`` are both."""
    return rows.dtype != np.uint8 or rows.ndim != 2


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Moves ``t`` to ``device``; CPU->CUDA goes through pinned memory, non-blocking."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# ------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Layout:
    """The cache's schema, parsed: leaves and how to rebuild an output."""

    names: Tuple[str, ...]
    kinds: Tuple[str, ...]
    dtypes: Tuple[Optional[torch.dtype], ...]
    output_structure: str
    spec: tree.Spec
    # The dtype of the only leaf when the output is that one tensor itself
    # (the common case), else None: lookup_fast returns such batches as one tensor.
    single_tensor_dtype: Optional[torch.dtype] = None

    @classmethod
    def from_schema(cls, schema: Mapping[str, Any]) -> "_Layout":
        names, kinds, dtypes = [], [], []
        for name, kind, dtype in schema["leaves"]:
            names.append(name)
            kinds.append(kind)
            dtypes.append(_dtype_from_name(dtype) if kind == tree.TENSOR else None)
        spec = tree.spec_from_schema(schema["output_structure"], names, schema.get("structure") or "")
        single = None
        if len(names) == 1 and kinds[0] == tree.TENSOR and spec.get("t") == "leaf" \
                and schema["output_structure"] == tree.TENSOR:
            single = dtypes[0]
        return cls(tuple(names), tuple(kinds), tuple(dtypes), schema["output_structure"], spec, single)


def _describe_structure(output_structure: str, spec: tree.Spec) -> str:
    return f"{output_structure} {tree.spec_to_json(spec)}"


# -------------------------------------------------------------- cached batch


class CachedBatch:
    """The result of :meth:`ArrowIPCCacheBackend.lookup_batch` for ``B`` keys.

    ``found`` is a ``(B,)`` bool array. :meth:`output` assembles the batched
    output when every key was found; :meth:`merge` fills the misses with freshly
    computed outputs. Both return tensors shaped ``(B, *shape)`` (zero-copy from
    the engine's buffer on CPU), or a list of ``B`` tensors for a leaf whose rows
    have different shapes. A non-tensor leaf becomes the one value all samples
    share, or the list of per-sample values if they differ.
    """

    def __init__(self, backend: "ArrowIPCCacheBackend", layout: Optional[_Layout],
                 found: np.ndarray, leaves: list):
        self._backend = backend
        self._layout = layout
        self.found = found
        self._leaves = leaves

    def __len__(self) -> int:
        return len(self.found)

    @property
    def num_found(self) -> int:
        """Number of keys found."""
        return int(np.count_nonzero(self.found))

    @property
    def all_found(self) -> bool:
        """True if every key was found."""
        return bool(self.found.all())

    @property
    def missing_positions(self) -> np.ndarray:
        """Positions (``int64`` array) of the keys not found, in batch order."""
        return np.flatnonzero(~self.found).astype(np.int64)

    # -- assembling

    def output(self, device: Device = "cpu") -> Any:
        """The batched output, on ``device``. Requires :attr:`all_found`."""
        if not self.all_found:
            raise ValueError("CachedBatch.output() needs every key found; use merge() for misses")
        layout = self._require_layout()
        device = torch.device(device)
        values = {name: self._cached_leaf(i, device) for i, name in enumerate(layout.names)}
        return tree.leaf_map(layout.spec, values)

    def merge(self, positions: np.ndarray, computed: Any, inverse: Optional[np.ndarray] = None,
              device: Device = "cpu") -> Any:
        """The batched output with ``computed`` filling the missing positions.

        Args:
            positions: the positions the computed rows go to (usually
                :attr:`missing_positions`).
            computed: a batched module output. Row ``inverse[j]`` of it (row ``j``
                if ``inverse`` is ``None``) is the output at ``positions[j]``.
            inverse: maps positions to computed rows (for duplicate keys).
            device: where the result goes.
        """
        device = torch.device(device)
        flat = tree.flatten(computed)
        positions = np.asarray(positions, dtype=np.int64)
        all_computed = len(positions) == len(self.found) and self.num_found == 0
        index = torch.from_numpy(positions)
        gather = None if inverse is None else torch.from_numpy(np.asarray(inverse, dtype=np.int64))
        leaf_index = {} if self._layout is None else {n: i for i, n in enumerate(self._layout.names)}
        values = {}
        for name, value in zip(flat.names, flat.values):
            i = leaf_index.get(name)
            if isinstance(value, torch.Tensor):
                rows = value if gather is None else value.index_select(0, gather.to(value.device))
                rows = rows.detach()
                if all_computed:  # positions == arange(B)
                    values[name] = rows.to(device)
                else:
                    values[name] = self._merge_tensor(i, name, index, rows, device)
            else:
                values[name] = self._merge_blob(i, name, positions, value)
        return tree.leaf_map(flat.spec, values)

    # -- per sample (seed API)

    def samples(self, device: Device = "cpu") -> List[Any]:
        """One output per position (tensors without the batch dim), ``None`` for misses."""
        device = torch.device(device)  # a bad device is an error even when all keys miss
        results: List[Any] = [None] * len(self.found)
        if self._layout is None or not self.found.any():
            return results
        layout = self._layout
        columns: Dict[str, Any] = {}
        for i, (name, kind) in enumerate(zip(layout.names, layout.kinds)):
            if kind == tree.TENSOR:
                columns[name] = self._cached_leaf(i, device)
            else:
                columns[name] = self._blob_rows(i, name)
        for pos in np.flatnonzero(self.found).tolist():
            results[pos] = tree.unflatten(layout.spec, lambda n, p=pos: columns[n][p])
        return results

    # -- helpers

    def _require_layout(self) -> _Layout:
        if self._layout is None:
            raise ValueError("the cache has no schema yet")
        return self._layout

    def _cached_leaf(self, i: int, device: torch.device) -> Any:
        """Tensor leaf ``i`` as a (B, ...) tensor or a list of B tensors (None for misses)."""
        layout = self._require_layout()
        name, kind, dtype = layout.names[i], layout.kinds[i], layout.dtypes[i]
        leaf = self._leaves[i]
        if kind != tree.TENSOR:
            return self._collapse(self._blob_bytes(i), name)
        if leaf[0] == "dense":
            return _to_device(_decode_dense(leaf[1], tuple(leaf[2]), dtype, name), device)
        return [None if row is None else _decode_row(row[0], tuple(row[1]), dtype, name).to(device)
                for row in leaf[1]]

    def _merge_tensor(self, i: Optional[int], name: str, index: torch.Tensor,
                      rows: torch.Tensor, device: torch.device) -> Any:
        cached = self._cached_leaf(i, device) if i is not None else [None] * len(self.found)
        rows = rows.to(device)
        if isinstance(cached, torch.Tensor) and cached.dtype == rows.dtype \
                and cached.shape[1:] == rows.shape[1:]:
            if rows.numel():
                # Scatter raw words, not elements: index_copy_ is not implemented
                # for every dtype (uint16...), and the widest word the rows allow
                # moves 8 bytes per step instead of 1 (5-10x faster).
                target, source = _as_words(cached.reshape(cached.shape[0], -1).view(torch.uint8),
                                           rows.contiguous().reshape(rows.shape[0], -1).view(torch.uint8))
                target.index_copy_(0, index.to(device), source)
            return cached
        out = list(cached) if isinstance(cached, torch.Tensor) else cached
        for j, pos in enumerate(index.tolist()):
            out[pos] = rows[j]
        return out

    def _merge_blob(self, i: Optional[int], name: str, positions: np.ndarray, value: Any) -> Any:
        rows = self._blob_bytes(i) if i is not None else [None] * len(self.found)
        encoded = _encode_blob(value, self._backend.allow_pickle, name)
        for pos in positions.tolist():
            rows[pos] = encoded
        return self._collapse(rows, name)

    def _blob_bytes(self, i: int) -> List[Optional[bytes]]:
        return list(self._leaves[i][1])

    def _blob_rows(self, i: int, name: str) -> List[Any]:
        decode = self._decode
        return [None if b is None else decode(b, name) for b in self._blob_bytes(i)]

    def _collapse(self, rows: List[Optional[bytes]], name: str) -> Any:
        distinct = set(rows)
        if len(distinct) == 1:
            return self._decode(rows[0], name)
        return [self._decode(b, name) for b in rows]

    def _decode(self, data: bytes, name: str) -> Any:
        return _decode_blob(data, self._backend.allow_pickle, name, self._backend.path)


# ------------------------------------------------------------------ backend

_MODULE_ID_HELP = (
    "module_id must be a single directory name: a non-empty str without '/', '\\', "
    "control characters, and not '.' or '..'. Use a stable, versioned name such as "
    "'resnet50_imagenet_v1'"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Backends that still need closing at interpreter exit; weak so that a backend
# can be garbage collected (its engine store then flushes on destruction).
_LIVE: "weakref.WeakSet[ArrowIPCCacheBackend]" = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for backend in list(_LIVE):
        try:
            backend.close()
        except Exception as exc:  # noqa: BLE001 - report, keep closing the others
            warnings.warn(f"torchcachex: closing {backend!r} at exit failed: {exc}", RuntimeWarning)


atexit.register(_close_all_at_exit)


def _forget_all_after_fork() -> None:
    """In a child process after ``fork()``: detaches every live backend from
    the engine store it inherited (that store's writer thread does not exist in
    the child and its locks may be held); each reopens lazily on first use."""
    for backend in list(_LIVE):
        backend._forget_after_fork()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_all_after_fork)

# The process that registered the exit hook below (None: none yet).
_EXIT_HOOK_PID: Optional[int] = None


def _close_at_process_exit() -> None:
    """Makes sure stores opened in this process are flushed when it exits.

    ``atexit`` covers a normal interpreter exit (the main process, ``spawn``
    children). A ``multiprocessing`` child created by ``fork`` (DataLoader
    workers) ends with ``os._exit`` after running multiprocessing's finalizers
    only, so a store reopened there also gets a finalizer. Registered lazily,
    on the first reopen in the process: ``multiprocessing`` clears the
    finalizers it inherited when a child starts.
    """
    global _EXIT_HOOK_PID
    pid = os.getpid()
    if _EXIT_HOOK_PID == pid:
        return
    _EXIT_HOOK_PID = pid
    try:
        from multiprocessing import util as mp_util

        mp_util.Finalize(None, _close_all_at_exit, exitpriority=0)
    except Exception:  # noqa: BLE001 - best effort; explicit flush() always works
        pass


class _Unopened:
    """Stands in for a backend's engine store until its first use.

    A backend holds one after ``fork()`` (in the child) and after unpickling:
    the first attribute access opens a fresh ``_core.Store`` with the
    backend's options (:meth:`ArrowIPCCacheBackend._reopen`), which then
    replaces this object, so later calls cost nothing extra.
    """

    __slots__ = ("_backend",)

    def __init__(self, backend: "ArrowIPCCacheBackend"):
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend._reopen(), name)

    def __len__(self) -> int:
        return len(self._backend._reopen())


def _check_module_id(module_id: Any) -> str:
    if not isinstance(module_id, str):
        raise TypeError(f"{_MODULE_ID_HELP}; got {type(module_id).__name__}")
    if (not module_id or module_id in (".", "..") or "/" in module_id or "\\" in module_id
            or _CONTROL.search(module_id)):
        raise ValueError(f"{_MODULE_ID_HELP}; got {module_id!r}")
    try:
        size = len(module_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{_MODULE_ID_HELP}; got {module_id!r}, which is not valid Unicode "
                         "(it contains a lone surrogate)") from None
    if size > 255:  # NAME_MAX of every common file system
        raise ValueError(f"{_MODULE_ID_HELP}; got a name of {size} bytes (UTF-8), but a directory "
                         f"name holds at most 255: {module_id[:40]!r}...")
    return module_id


def _next_module_id(module_id: str) -> str:
    match = re.fullmatch(r"(.*_v)(\d+)", module_id)
    return f"{match.group(1)}{int(match.group(2)) + 1}" if match else f"{module_id}_v2"


def _positive_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


_RANK_HELP = "take it from the launcher as an int, e.g. current_rank=int(os.environ['RANK'])"


def _check_writer_rank(writer_rank: Any) -> Union[int, str]:
    if isinstance(writer_rank, str):
        if writer_rank == "all":
            return writer_rank
        raise ValueError(
            f"writer_rank must be an int rank (only that rank writes to disk) or 'all' (every rank "
            f"writes its own segments), got {writer_rank!r}"
        )
    if isinstance(writer_rank, bool) or not isinstance(writer_rank, (int, np.integer)):
        raise TypeError(
            f"writer_rank must be an int rank (only that rank writes to disk) or 'all' (every rank "
            f"writes its own segments), got {type(writer_rank).__name__} {writer_rank!r}"
        )
    if writer_rank < 0:
        raise ValueError(f"writer_rank must be a rank >= 0 or 'all', got {writer_rank!r}")
    return int(writer_rank)


def _check_current_rank(current_rank: Any) -> Optional[int]:
    if current_rank is None:
        return None
    if isinstance(current_rank, bool) or not isinstance(current_rank, (int, np.integer)):
        raise TypeError(
            f"current_rank must be an int or None (single process), got "
            f"{type(current_rank).__name__} {current_rank!r}; {_RANK_HELP}"
        )
    if current_rank < 0:
        raise ValueError(f"current_rank must be >= 0 or None, got {current_rank!r}")
    return int(current_rank)


class ArrowIPCCacheBackend:
    """A per-sample disk cache of module outputs in ``cache_dir/module_id``.

    Args:
        cache_dir: directory holding one sub-directory per ``module_id``.
        module_id: stable name of the cached computation, one directory name;
            change it (``"..._v2"``) when the module changes.
        lru_size: rows a non-writing rank keeps in RAM (its hot cache). A
            writing backend serves its rows from pending buffers and
            memory-mapped segments, so the OS page cache is its hot cache.
        async_write: write segments on the engine's background thread (``True``)
            or in the calling thread. Either way :meth:`flush` makes rows durable.
        max_workers: how many sealed segments may wait for the writer before
            ``put`` blocks (backpressure). The engine has one writer thread per
            cache; this bounds the memory of its queue.
        flush_every: rows per segment file. ``None`` (the default): 2048 rows,
            and with ``async_write=True`` at least 1 MB, so that tiny rows (a few
            floats) are written in files large enough that their fsyncs do not
            rule the writer. An int: exactly that many rows per segment. With
            ``async_write=True``, rows put while the writer is still busy with an
            earlier segment join the next one (up to 16 MB), so a writer that
            falls behind writes fewer, larger files. ``flush()`` makes every row
            durable either way.
        writer_rank: which DDP rank writes to disk. An int (default ``0``, the
            single-writer pattern): only that rank persists; every other rank
            keeps its own results in its hot cache. ``"all"``: every rank
            persists its own results into its own segment range (each claims a
            writer id on its first write; no coordination needed), so after
            ``flush()``, a barrier and ``refresh()`` every rank serves every
            sample any rank computed. See ``docs/distributed.md``.
        current_rank: this process's rank. ``None`` means single-process: this
            backend writes. With an int ``writer_rank``, a rank other than
            ``writer_rank`` writes nothing to disk; it keeps its own results in
            its hot cache.
        allow_pickle: allow storing and loading non-JSON, non-tensor values with
            pickle. Leave ``False`` unless you trust the cache directory:
            unpickling runs code chosen by whoever wrote the cache.

    Rows are readable at once after a put and durable after :meth:`flush`
    (also done by :meth:`close`, on context-manager exit and at interpreter exit).

    Processes: a backend may be used in a child created by ``fork()`` (e.g.
    DataLoader workers): the child leaves the parent's engine store alone and
    opens its own on first use. A backend also pickles (``spawn`` workers) as
    its directory and options; the copy opens its own store on first use.
    Either way the new store sees what is on disk (flush first), not the
    parent's unflushed rows or hot cache, and if it writes, it claims its own
    writer id; its rows are flushed when the process exits normally (a
    ``multiprocessing`` finalizer covers forked DataLoader workers, which skip
    ``atexit``), and :meth:`flush` makes them durable earlier (a killed worker
    loses its unflushed rows). See ``docs/distributed.md``. ``copy.copy``/``copy.deepcopy``
    return the backend itself: copies of a model share its cache handle.
    """

    def __init__(
        self,
        cache_dir: Union[str, "os.PathLike[str]"],
        module_id: str,
        lru_size: int = 4096,
        async_write: bool = True,
        max_workers: int = 2,
        flush_every: Optional[int] = None,
        writer_rank: int = 0,
        current_rank: Optional[int] = None,
        allow_pickle: bool = False,
    ):
        if not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be a str or os.PathLike, got {type(cache_dir).__name__}")
        self.cache_dir = os.fspath(cache_dir)
        if isinstance(self.cache_dir, bytes):
            self.cache_dir = os.fsdecode(self.cache_dir)
        if "\0" in self.cache_dir:  # the OS would cut the path there: the cache would land elsewhere
            raise ValueError(f"cache_dir must not contain a NUL character, got {self.cache_dir!r}")
        if not isinstance(allow_pickle, (bool, np.bool_)):
            # bool("false") is True: a config string must not silently enable unpickling.
            raise TypeError(f"allow_pickle must be a bool, got {type(allow_pickle).__name__} "
                            f"{allow_pickle!r}")
        self.module_id = _check_module_id(module_id)
        self.lru_size = _positive_int("lru_size", lru_size, 0)
        self.flush_every = None if flush_every is None else _positive_int("flush_every", flush_every, 1)
        self.max_workers = _positive_int("max_workers", max_workers, 1)
        self.async_write = bool(async_write)
        self.writer_rank = _check_writer_rank(writer_rank)
        self.current_rank = _check_current_rank(current_rank)
        self.allow_pickle = bool(allow_pickle)
        self.persist = (self.current_rank is None or self.writer_rank == "all"
                        or self.current_rank == self.writer_rank)
        self._closed = False
        self._layout: Optional[_Layout] = None
        self._ensured: Optional[tuple] = None  # (names, dtypes, structure, spec) last checked
        # The dtype of the last checked layout when it is one bare tensor (else None): a put of
        # a plain torch.Tensor of this dtype has that layout, so it skips flattening and checking.
        self._ensured_tensor_dtype: Optional[torch.dtype] = None
        self._reopen_lock = threading.Lock()
        self._store = self._open_store()
        _LIVE.add(self)
        self._emit_warnings()

    # -- engine store: open, reopen after fork / unpickling

    def _open_store(self) -> "_core.Store":
        return _core.Store(
            self.cache_dir,
            self.module_id,
            hot_cache_rows=self.lru_size,
            # None: the engine's defaults (2048 rows, async segments of at least 1 MB).
            **({} if self.flush_every is None else {"flush_every": self.flush_every, "min_segment_bytes": 0}),
            async_write=self.async_write,
            max_queued_segments=self.max_workers,
            persist=self.persist,
        )

    def _reopen(self) -> "_core.Store":
        """The engine store, opened now if this backend holds an :class:`_Unopened`."""
        with self._reopen_lock:
            store = self._store
            if isinstance(store, _Unopened):
                if self._closed:
                    raise _core.ClosedError("the cache is closed; open a new backend to use it again")
                store = self._store = self._open_store()
                _close_at_process_exit()
                for message in store.take_warnings():
                    warnings.warn(f"torchcachex: {message}", RuntimeWarning, stacklevel=4)
        return store

    def _forget_after_fork(self) -> None:
        """Runs in the child after ``fork()``: abandons the inherited store.

        The parent's store is never flushed, closed or destroyed here (its
        writer thread does not exist in the child, and destroying it would
        release the parent's writer lock); a fresh store opens on first use.
        """
        self._reopen_lock = threading.Lock()  # the parent's may have been held
        store = self._store
        if not isinstance(store, _Unopened):
            self._store = _Unopened(self)
            store.forget()

    def __getstate__(self) -> Dict[str, Any]:
        return {
            "cache_dir": self.cache_dir,
            "module_id": self.module_id,
            "lru_size": self.lru_size,
            "async_write": self.async_write,
            "max_workers": self.max_workers,
            "flush_every": self.flush_every,
            "writer_rank": self.writer_rank,
            "current_rank": self.current_rank,
            "allow_pickle": self.allow_pickle,
            "closed": self._closed,
        }

    def __setstate__(self, state: Dict[str, Any]) -> None:
        for name in ("cache_dir", "module_id", "lru_size", "async_write", "max_workers",
                     "flush_every", "writer_rank", "current_rank", "allow_pickle"):
            setattr(self, name, state[name])
        self.persist = (self.current_rank is None or self.writer_rank == "all"
                        or self.current_rank == self.writer_rank)
        self._closed = bool(state["closed"])
        self._layout = None
        self._ensured = None
        self._ensured_tensor_dtype = None
        self._reopen_lock = threading.Lock()
        self._store = _Unopened(self)  # opened on first use
        if not self._closed:
            _LIVE.add(self)

    def __copy__(self) -> "ArrowIPCCacheBackend":
        return self

    def __deepcopy__(self, memo: Dict[int, Any]) -> "ArrowIPCCacheBackend":
        return self

    # -- seed API

    def get_batch(self, keys: Any, map_location: Device = "cpu") -> Tuple[List[Any], List[int]]:
        """Looks up a batch of keys.

        Returns ``(results, missing_positions)``: ``results[i]`` is the output of
        sample ``i`` (its structure, tensors without the batch dimension, on
        ``map_location``) or ``None`` if it is not cached; ``missing_positions``
        lists the positions of the misses.
        """
        cached = self.lookup_batch(keys)
        return cached.samples(map_location), cached.missing_positions.tolist()

    def put_batch(self, items: Mapping[Any, Any]) -> None:
        """Stores per-sample outputs: ``{key: output}`` (tensors without batch dim).

        Every sample must have the same output structure and dtypes; tensor
        shapes may differ between samples.
        """
        if not isinstance(items, Mapping):
            raise TypeError(f"put_batch expects a mapping {{key: output}}, got {type(items).__name__}")
        keys = normalize_keys(list(items.keys()))
        if not len(keys):
            return
        flats = [tree.flatten(output) for output in items.values()]
        first = flats[0]
        for key, flat in zip(keys.values, flats):
            if flat.spec != first.spec or flat.kinds() != first.kinds():
                raise ValueError(
                    f"sample {key!r} has a different output structure than the first sample: "
                    f"{_describe_structure(flat.output_structure, flat.spec)} vs "
                    f"{_describe_structure(first.output_structure, first.spec)}"
                )
        payload, dtypes = [], []
        for j, (name, kind) in enumerate(zip(first.names, first.kinds())):
            column = [flat.values[j] for flat in flats]
            if kind == tree.BLOB:
                payload.append(("blob", [_encode_blob(v, self.allow_pickle, name) for v in column]))
                dtypes.append(None)
                continue
            dtype = column[0].dtype
            if any(t.dtype != dtype for t in column):
                raise ValueError(f"samples disagree on the dtype of {_leaf_label(name)}")
            dtypes.append(dtype)
            if all(t.shape == column[0].shape for t in column):
                payload.append(_encode_dense(torch.stack([t.detach() for t in column]), len(keys), name))
            else:
                payload.append(("ragged", [_encode_row(t) for t in column]))
        self._ensure_schema(first, dtypes)
        self._store.put_batch(keys.values, payload)

    # -- batched fast path (used by CacheModuleDecorator)

    def lookup_batch(self, keys: Any) -> CachedBatch:
        """Looks up a batch of keys; returns a :class:`CachedBatch`.

        The fast path: tensor leaves stay one ``(B, ...)`` buffer each, with no
        per-sample Python objects.
        """
        keys, hit, first, second = self._look_up(keys)
        return self._cached_batch(len(keys), hit, first, second)

    def lookup_fast(self, keys: Any) -> Union[torch.Tensor, CachedBatch]:
        """:meth:`lookup_batch` with the all-hit fast path of :class:`CacheModuleDecorator`:
        when every key is found and the cached output is one tensor, returns that
        ``(B, *shape)`` CPU tensor directly (zero-copy from the engine's buffer);
        otherwise the :class:`CachedBatch` that :meth:`lookup_batch` returns."""
        return self._fast_result(*self._look_up(keys))

    def _lookup_for_forward(self, keys: Keys) -> Union[torch.Tensor, CachedBatch, None]:
        """:meth:`lookup_fast` for :class:`CacheModuleDecorator`, with one more answer: ``None``
        when no key is cached and the keys are pairwise distinct (a first epoch), so that the
        module runs on the batch as called, with no per-batch bookkeeping in Python."""
        keys, hit, first, second = self._look_up(keys, summarize_misses=True)
        if first is None:  # no key cached, keys pairwise distinct (else the general answer)
            return None
        return self._fast_result(keys, hit, first, second)

    def _fast_result(self, keys: Keys, hit: bool, first: Any, second: Any) -> Union[torch.Tensor, CachedBatch]:
        """:meth:`lookup_fast`'s answer for a ``_look_up`` result."""
        if hit and first.size > 0 and first.flags.writeable:
            dtype = self._layout.single_tensor_dtype
            if dtype is not None:
                if _typed_rows(first):
                    return torch.from_numpy(first)
                if first.shape[1] == math.prod(second) * dtype.itemsize:
                    return torch.from_numpy(first).view(dtype).reshape(len(keys), *second)
        return self._cached_batch(len(keys), hit, first, second)

    def _look_up(self, keys: Any, summarize_misses: bool = False) -> Tuple[Keys, bool, Any, Any]:
        """One engine lookup: ``(keys, hit, first, second)`` as ``_core.Store.get_batch_fast``
        returns them, with the layout loaded once the cache has a schema."""
        keys = normalize_keys(keys)
        hit, first, second, messages = self._store.get_batch_fast(keys.values, summarize_misses)
        if self._layout is None and (hit or second):  # (a summarized miss: both falsy)
            self._load_layout()
        if messages:
            self._warn(messages)
        return keys, hit, first, second

    def _cached_batch(self, batch: int, hit: bool, first: Any, second: Any) -> CachedBatch:
        """The :class:`CachedBatch` of a ``_look_up`` result."""
        if hit:  # every key found, one dense leaf: first = rows, second = row shape
            if _typed_rows(first):  # as raw rows: (B, row_bytes) of bytes
                first = first.reshape(batch, -1).view(np.uint8)
            return CachedBatch(self, self._layout, np.ones(batch, dtype=bool), [("dense", first, second)])
        return CachedBatch(self, self._layout if second else None, np.asarray(first, dtype=bool), second)

    def put_batch_outputs(self, keys: Any, output: Any) -> None:
        """Stores a batched module output: one row per key along dim 0.

        Tensor leaves must be batched (``shape[0] == len(keys)``); a non-tensor
        leaf describes the whole batch and is stored for every sample. Everything
        is validated and encoded before the cache is touched, so a put rejected
        for its input leaves the cache as it was.
        """
        keys = normalize_keys(keys)
        batch = len(keys)
        if batch == 0:
            return
        if type(output) is torch.Tensor and output.dtype is self._ensured_tensor_dtype:
            # The layout of the last put (one bare tensor of this dtype), already checked. A
            # contiguous CPU tensor goes to the engine as its numpy view, with no further Python
            # work; put_dense refuses any other array, and torch refuses a view of a tensor that
            # requires grad, has its conj/neg bit set, lives on a GPU or has no numpy dtype.
            try:
                rows = output.numpy()
            except (RuntimeError, TypeError):
                rows = None
            if rows is None or not self._store.put_dense(keys.values, rows):
                self._store.put_batch(keys.values, [_encode_dense(output, batch, self._ensured[0][0])])
            return
        flat = tree.flatten(output)
        payload, dtypes = [], []
        for name, value in zip(flat.names, flat.values):
            if isinstance(value, torch.Tensor):
                payload.append(_encode_dense(value, batch, name))
                dtypes.append(value.dtype)
            else:
                payload.append(("blob", [_encode_blob(value, self.allow_pickle, name)] * batch))
                dtypes.append(None)
        self._ensure_schema(flat, dtypes)
        self._store.put_batch(keys.values, payload)

    # -- schema

    def _load_layout(self) -> Optional[_Layout]:
        schema = self._store.schema()
        self._layout = None if schema is None else _Layout.from_schema(schema)
        return self._layout

    def _mismatch(self, difference: str) -> SchemaMismatchError:
        difference = difference.rstrip().rstrip(".")
        difference = difference[:1].upper() + difference[1:]
        return SchemaMismatchError(
            f"{difference}. The cache at {self.path} was written by a module with a different "
            f"output; if the module changed, use a new module_id (e.g. "
            f"'{_next_module_id(self.module_id)}')"
        )

    def _ensure_schema(self, flat: tree.Flattened, dtypes: Sequence[Optional[torch.dtype]]) -> None:
        layout_key = (tuple(flat.names), tuple(dtypes), flat.output_structure, flat.spec)
        if layout_key == self._ensured:  # the same output layout as the last put: already checked
            return
        leaves = [
            (name, tree.TENSOR, str(dtype)) if dtype is not None else (name, tree.BLOB, _BLOB_DTYPE)
            for name, dtype in zip(flat.names, dtypes)
        ]
        try:
            self._store.ensure_schema(leaves, flat.output_structure, tree.spec_to_json(flat.spec))
        except SchemaMismatchError as exc:
            raise self._mismatch(str(exc)) from None
        layout = self._layout or self._load_layout()
        if layout is None:  # pragma: no cover - the engine just adopted a schema
            raise _core.Error("the cache did not record its schema")
        if layout.output_structure != flat.output_structure or not tree.structures_equal(layout.spec, flat.spec):
            raise self._mismatch(
                f"output structure differs: the cache holds "
                f"{_describe_structure(layout.output_structure, layout.spec)}, the module returned "
                f"{_describe_structure(flat.output_structure, flat.spec)}"
            )
        self._ensured = layout_key
        self._ensured_tensor_dtype = dtypes[0] if flat.output_structure == tree.TENSOR else None

    # -- management

    @property
    def path(self) -> str:
        """The cache directory of this module: ``cache_dir/module_id``."""
        return os.path.join(self.cache_dir, self.module_id)

    def flush(self) -> None:
        """Blocks until every row put so far is durable on disk."""
        self._store.flush()

    def close(self) -> None:
        """Flushes and releases the cache. Idempotent; later use raises ``ClosedError``."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        with self._reopen_lock:
            store = self._store
        if not isinstance(store, _Unopened):  # never opened here: nothing to flush
            store.close()

    def refresh(self) -> int:
        """Picks up segments written by other processes; returns how many were loaded."""
        loaded = self._store.refresh()
        self._emit_warnings()
        return loaded

    def stats(self) -> Dict[str, int]:
        """Engine counters: entries, segments, pending_rows, hits, misses, bytes..."""
        return dict(self._store.stats())

    def _emit_warnings(self) -> None:
        self._warn(self._store.take_warnings())

    @staticmethod
    def _warn(messages: Sequence[str]) -> None:
        for message in messages:
            warnings.warn(f"torchcachex: {message}", RuntimeWarning, stacklevel=4)

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: Any) -> bool:
        if isinstance(key, torch.Tensor) and key.dim() == 1 and key.numel() == 1:
            key = key[0]
        return self._store.contains(_key_str(key, 0))

    def __enter__(self) -> "ArrowIPCCacheBackend":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"entries={len(self)}"
        return (f"ArrowIPCCacheBackend(cache_dir={self.cache_dir!r}, module_id={self.module_id!r}, "
                f"{state}, persist={self.persist})")
