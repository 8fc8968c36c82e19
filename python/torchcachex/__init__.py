"""torchcachex: a per-sample disk cache for the outputs of frozen PyTorch modules.

Wrap a frozen, expensive module in :class:`CacheModuleDecorator` with an
:class:`ArrowIPCCacheBackend`; pass stable per-sample ``cache_ids`` with each
batch. Cached samples are served from disk without running the module; only
the misses are computed, and their outputs are appended to the cache.
"""

from .backend import ArrowIPCCacheBackend
from .decorator import CacheModuleDecorator
from .errors import SchemaMismatchError

__version__ = "0.1.0"

__all__ = ["ArrowIPCCacheBackend", "CacheModuleDecorator", "SchemaMismatchError", "__version__"]
