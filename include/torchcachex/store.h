// Store: a persistent key -> sample cache in a directory of Arrow IPC segments.
//
//   <cache_dir>/<module_id>/schema.json
//   <cache_dir>/<module_id>/segments/segment_<n>.arrow   (immutable)
//   <cache_dir>/<module_id>/writers/writer_<w>.lock      (one per live writer)
//
// Thread-safety: every method may be called from any thread concurrently.
// Lookups run concurrently with each other and with the background writer.
//
// Durability: rows passed to Put() are readable at once (read-your-writes)
// and durable once Flush() returns. A crash loses at most the rows not yet
// flushed. Errors of the background writer are rethrown by the next call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "torchcachex/options.h"
#include "torchcachex/output_buffer.h"
#include "torchcachex/schema.h"

namespace torchcachex {

// The rows of one leaf passed to Put(). Either dense (every row has the same
// shape and byte size, rows laid out at a fixed stride) or ragged (one span
// and one shape per row). Blob leaves are always ragged with empty shapes.
struct LeafRows {
  // Dense form (is_dense): row i is at base + i * row_stride, `row_bytes`
  // long, with shape `shape`.
  bool is_dense = false;
  const std::byte* base = nullptr;
  size_t row_stride = 0;
  size_t row_bytes = 0;
  std::vector<int64_t> shape;

  // Ragged form (!is_dense).
  std::vector<std::span<const std::byte>> rows;
  std::vector<std::vector<int64_t>> shapes;
};

// The result of GetBatch() for one leaf.
struct LeafResult {
  // Tensor leaf whose found rows all share one shape: `dense` holds
  // size() rows of `row_bytes` each (rows of missing keys are zero), and
  // `shape` is the per-row shape. Owned (large buffers return to a pool when
  // released); hand it to the caller without copying.
  bool is_dense = false;
  OutputBuffer dense;
  size_t row_bytes = 0;
  std::vector<int64_t> shape;

  // Otherwise (blob leaves, tensor leaves of varying shapes): one buffer per
  // position; empty optional for missing keys.
  std::vector<std::optional<std::vector<std::byte>>> rows;
  std::vector<std::vector<int64_t>> shapes;
};

struct GetResult {
  std::vector<uint8_t> found;  // 1 where the key was found
  std::vector<LeafResult> leaves;  // in schema leaf order; empty if no schema yet
};

struct Stats {
  uint64_t entries = 0;          // distinct keys visible to this store
  uint64_t segments = 0;         // segment files loaded
  uint64_t pending_rows = 0;     // rows put but not yet durable
  uint64_t hot_cache_rows = 0;   // rows in the hot cache
  uint64_t hits = 0;             // keys found by GetBatch since open
  uint64_t misses = 0;           // keys not found by GetBatch since open
  uint64_t rows_written = 0;     // rows made durable by this store
  uint64_t bytes_written = 0;    // segment bytes written by this store
  uint64_t write_ns = 0;         // time spent writing them (encode, write, fsyncs, rename, read-back
                                 // check), summed over the threads that wrote: bytes_written / write_ns
                                 // is the segment writer's own bandwidth
  uint64_t skipped_segments = 0; // unreadable or damaged segments reported and skipped
  uint64_t mapped_segments = 0;  // segments currently memory-mapped
  int64_t writer_id = -1;        // this store's writer id, -1 if not writing
  uint64_t index_bytes = 0;      // RAM used by the key index
};

class Store {
 public:
  // Opens (creating if needed) the cache at cache_dir/module_id.
  // module_id must be one path component: no '/', '\\', "..", ".", empty
  // or control characters (InvalidArgumentError otherwise).
  // Unreadable segments and a corrupt schema.json are reported through
  // TakeWarnings() and skipped/recovered, never fatal.
  static std::unique_ptr<Store> Open(const std::string& cache_dir,
                                     const std::string& module_id,
                                     const Options& options);

  // Flushes (best effort: errors are written to stderr) and closes.
  ~Store();

  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // The schema of this cache, if one is known (from disk or a first Put).
  std::optional<Schema> schema() const;

  // Adopts `schema` if the cache has none yet; otherwise throws
  // SchemaMismatchError naming the first difference.
  void EnsureSchema(const Schema& schema);

  // Looks up `keys` (UTF-8) and copies the found rows out. Duplicate keys are
  // allowed and each position gets the row. Later writes of a key win.
  GetResult GetBatch(std::span<const std::string_view> keys);

  // True if `key` is cached (pending, hot or on disk).
  bool Contains(std::string_view key);

  // Adds rows. `leaves` follow the schema's leaf order (EnsureSchema first).
  // Within one call a repeated key keeps its last row. Input that does not
  // match the schema throws before anything is stored; an I/O error on a
  // segment that was removed or damaged since it was opened (storing a key
  // again reads its older row's key) throws part way, with the rows before
  // it stored and readable.
  void Put(std::span<const std::string_view> keys, std::span<const LeafRows> leaves);

  // Returns once every row put before the call is durable on disk (segment
  // file and directory fsynced). Rethrows a pending background error.
  void Flush();

  // Flushes, stops the background writer and releases the writer lock.
  // Idempotent. Later calls throw ClosedError.
  void Close();

  // Loads segments written by other processes since the last scan.
  // Returns the number of new segments loaded.
  size_t Refresh();

  Stats GetStats() const;

  // Number of distinct keys visible to this store.
  size_t size() const;

  // Warnings gathered since the last call (skipped segments, recovered schema).
  std::vector<std::string> TakeWarnings();

  // The directory of this cache (cache_dir/module_id).
  const std::string& path() const;

 private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace torchcachex
