"""Exceptions raised by torchcachex.

The engine's exceptions (defined in :mod:`torchcachex._core`) are re-exported
here so that ``except torchcachex.errors.SchemaMismatchError`` works without
reaching into the extension module:

* :class:`Error` (``RuntimeError``): base class of every engine error.
* :class:`InvalidArgumentError` (``Error``, ``ValueError``): a bad argument.
* :class:`SchemaMismatchError` (``Error``, ``ValueError``): the module's output
  does not match what the cache directory already holds.
* :class:`CorruptFileError` (``Error``): an unreadable cache file.
* :class:`CacheIOError` (``Error``, ``OSError``): the file system refused.
* :class:`ClosedError` (``Error``): the backend was used after ``close()``.
"""

from __future__ import annotations

from ._core import (
    CacheIOError,
    ClosedError,
    CorruptFileError,
    Error,
    InvalidArgumentError,
    SchemaMismatchError,
)

__all__ = [
    "Error",
    "InvalidArgumentError",
    "SchemaMismatchError",
    "CorruptFileError",
    "CacheIOError",
    "ClosedError",
    "PickleNotAllowedError",
]


class PickleNotAllowedError(Error):
    """A cached non-tensor value is a pickle and the backend has ``allow_pickle=False``.

    Unpickling runs code chosen by whoever wrote the cache, so torchcachex never
    unpickles unless the backend was created with ``allow_pickle=True``.
    """
