// Options of a Store. Defaults match the Python ArrowIPCCacheBackend.
#pragma once

#include <cstddef>

namespace torchcachex {

struct Options {
  // Rows kept in RAM by a store that does not persist (see `persist`).
  // A persisting store serves its rows from pending buffers and memory-mapped
  // segments, so the OS page cache is its hot cache. 0 disables.
  size_t hot_cache_rows = 4096;

  // Seal the pending buffer into a segment when it holds this many rows
  // (async_write: unless an earlier sealed buffer still waits for a writer;
  // then it keeps filling and the next idle writer seals it)...
  size_t flush_every = 2048;
  // ...or this many bytes: large rows then stream to disk in pieces (the
  // writer starts sooner and an epoch-end flush has less left to write),
  // memory stays bounded and int32 Arrow offsets valid.
  size_t max_pending_bytes = size_t{16} << 20;
  // With async_write, a batch is due at flush_every rows only once it also
  // holds this many bytes: segments of tiny rows are then not so small that
  // their per-file costs (two fsyncs, a rename, a mapping) rule the writer.
  // flush() and close() write smaller ones. 0: exactly flush_every rows.
  // Synchronous stores ignore it.
  size_t min_segment_bytes = size_t{1} << 20;

  // Write sealed segments on a background thread (true) or in the calling
  // thread (false). Either way `Flush()` makes everything durable.
  bool async_write = true;

  // Sealed buffers that may wait for the background writer before Put blocks
  // (backpressure). At least 1.
  size_t max_queued_segments = 2;

  // Segments kept memory-mapped at once. Caches with more segments map the
  // others on demand (least recently used are unmapped), which keeps the
  // process well below the kernel's vm.max_map_count (65530 by default).
  size_t max_mapped_segments = 8192;

  // False for ranks that must not write (DDP non-writer ranks): their puts
  // stay in the hot cache and nothing is written to disk.
  bool persist = true;
};

}  // namespace torchcachex
