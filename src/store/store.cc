// Store: ties together the segment set, the key index, the pending buffers,
// the hot cache and the background writer.
//
// Locking: `mu` (shared_mutex) guards all state below it in Impl. Lookups
// hold it shared for the whole lookup + copy, so the pending buffers and the
// segment list cannot change under them. Put, publish and refresh hold it
// exclusively. Segment files are written with `mu` released, by the
// background writer and, while they would otherwise wait for it, by callers
// of Put and Flush (two threads copying into the page cache on two cores);
// `write_mu` serializes writers in synchronous mode (lock order: write_mu, then mu).
//
// Invariants:
//  - `index` maps a key to its newest row, written or not, as RowLocation{slot,
//    row}. A batch reserves its slot in `segments` when it becomes active: until
//    it is published, `segments[slot]` is null and `pending_batch_in_slot[slot]`
//    is the batch (active or sealed); rows are located by their number in it.
//    A batch becomes exactly one segment file with the same rows in the same
//    order, so publishing it moves no index entry: the slot's segment is set
//    and its pending batch cleared, O(1) under `mu` whatever the batch size.
//  - A later put of a key, and a later segment loaded by a scan, replace the
//    key's entry (later rows within a segment win).
//  - `sealed` is oldest first. Its batches may be written in any order and
//    concurrently (each claimed by one writer, numbered in queue order), but
//    are published strictly in queue order, so a later put of a key wins.
#include "torchcachex/store.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <iostream>
#include <mutex>
#include <pthread.h>
#include <shared_mutex>
#include <span>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "format/ipc_writer.h"
#include "format/schema_json.h"
#include "index/key_index.h"
#include "store/hot_cache.h"
#include "store/pending_batch.h"
#include "store/segment.h"
#include "store/segment_opener.h"
#include "torchcachex/errors.h"
#include "util/file.h"
#include "util/hash.h"
#include "util/large_allocator.h"
#include "util/memory.h"
#include "util/prefetch.h"
#include "util/stream_copy.h"

namespace torchcachex {
namespace {

// Writer w numbers its segments in [w * kWriterRange, (w + 1) * kWriterRange),
// so writers never collide and writer 0 matches the original numbering.
constexpr uint64_t kWriterRange = 1'000'000'000ULL;
// Lookups that miss rescan the segment directory at most this often.
constexpr int64_t kAutoRefreshIntervalNs = 1'000'000'000;
// A directory mtime this recent may still change within the same clock tick,
// so it is not trusted to mean "nothing new".
constexpr int64_t kMtimeSettleNs = 2'000'000'000;

// Thrown by a lookup running under the shared lock that needs a segment
// mapped; the lookup is then retried under the exclusive lock.
struct NeedsMapping {};

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t WallNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void ValidateModuleId(const std::string& id) {
  const char* hint = " Use one plain name such as 'resnet50_imagenet_v1'.";
  if (id.empty()) throw InvalidArgumentError("module_id must not be empty." + std::string(hint));
  if (id == "." || id == "..") {
    throw InvalidArgumentError("module_id '" + id + "' would escape the cache directory." + hint);
  }
  for (unsigned char c : id) {
    if (c == '/' || c == '\\') {
      throw InvalidArgumentError("module_id '" + id + "' contains a path separator; it must be a single "
                                 "directory name." + hint);
    }
    if (c < 0x20 || c == 0x7f) {
      throw InvalidArgumentError("module_id contains a control character." + std::string(hint));
    }
  }
}

uint64_t NumElements(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw InvalidArgumentError("tensor shapes must not have negative dimensions");
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

std::string StripTrailingSlashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

}  // namespace

struct Store::Impl {
  // Where a looked-up key's row is.
  static constexpr uint32_t kNoSegment = 0xFFFFFFFFu;  // "no candidate" in batched lookups
  // Batched lookups are software-pipelined (see Lookup) when their chains of
  // dependent loads miss the core's caches: the index has this many entries,
  // or the last batch of rows moved (gathered by a lookup, or
  // stored by a put) had rows this wide. Moving rows of 512 bytes and more
  // pushes even a small index and its key column out of cache between
  // batches. For 10k entries, per batch of 256: 11% faster for 512-byte rows,
  // 16% for 2 KB rows, 2% for 16 KB rows, and 2% slower for 64-byte rows,
  // which all stay cached (benchmarks/NOTES.md, round 6). The all-miss
  // lookups of a first epoch follow the previous batch's put (round 7).
  static constexpr size_t kPipelineMinEntries = 65536;
  static constexpr size_t kPipelineMinRowBytes = 512;
  // Gathers of rows at least this large prefetch the page heads of the next
  // row (see FillLeaf); kPageBytes: the page size the prefetcher stops at.
  static constexpr size_t kPageHeadPrefetchMinRowBytes = 8192;
  static constexpr size_t kPageBytes = 4096;
  static constexpr size_t kPutPrefetchDistance = 16;  // rows ahead, see Put
  static constexpr size_t kOpenThreads = 8;  // threads opening segment files at open and refresh
  static constexpr size_t kMaxSpareBatchBytes = size_t{64} << 20;  // larger batches are freed once published
  static constexpr size_t kMaxSpareBatches = 2;                      // see spares
  static constexpr size_t kSpareExtraBytes = size_t{2} << 20;         // see SpareRows

  struct Found {
    const BatchView* batch = nullptr;  // null: not found, or a hot-cache row
    int64_t row = 0;
    int hot = -1;                      // index into the lookup's hot rows
    const UniformRows* uniform = nullptr;  // per leaf, for a segment row; else null
  };

  std::string dir, segments_dir, writers_dir, schema_path;
  Options options;

  mutable std::shared_mutex mu;
  std::condition_variable_any cv;  // state changes of the writer / sealed queue
  bool closed = false;
  std::optional<Schema> schema;
  std::mutex schema_sync_mu;     // serializes SyncSchema; guards schema_unsynced
  bool schema_unsynced = false;  // schema.json renamed into place, not yet fsynced
  std::vector<std::unique_ptr<Segment>> segments;  // RowLocation.segment indexes this; null: pending
  // Parallel to `segments`: the unpublished batch whose rows a null slot
  // holds, else null (see the invariants above).
  std::vector<const PendingBatch*> pending_batch_in_slot;
  size_t mapped_count = 0;   // segments with mapped() true
  // Bytes per row of the last batch moved: a lookup's dense leaves (when it
  // found rows) or a put's first row (a hint, see kPipelineMinRowBytes;
  // written under the shared lock, hence atomic).
  std::atomic<size_t> last_row_bytes{0};
  size_t clock_hand = 0;     // next eviction candidate
  std::unordered_set<uint64_t> reported_damaged;  // segment numbers already warned about
  std::unordered_set<uint64_t> seen_segment_numbers;     // loaded or skipped
  KeyIndex index;
  std::shared_ptr<PendingBatch> active;
  // Empty batches, the next active one taken from the back; at most
  // kMaxSpareBatches. A published batch's buffers join them (already faulted
  // in). Once the active batch is half full and no spare is at hand, the
  // background writer makes one ahead (PrepareSpare): else the next active
  // batch is a fresh allocation that the caller's puts fault in page by page
  // (4 MB: 1024 faults, 1.3-2.5 ms here). Two, not one: a writer that
  // publishes a batch before the next put has made the spare that the put
  // would have taken, and with room for one, the published batch replaced it,
  // freed, and a new one was made at the next half-full batch: a 4 MB map,
  // fault-in and unmap per segment. Guarded by mu.
  std::vector<std::shared_ptr<PendingBatch>> spares;
  bool spare_wanted = false;     // requested from the writer
  bool spare_in_making = false;  // the writer is making it, mu released
  // A new active batch that is not a spare (the first of a store, or of an
  // epoch after Flush) has its row buffers reserved but not faulted in: the
  // background writer, idle then, faults in the rest of them (PopulateActive)
  // while the caller's puts fill the first pages, instead of those puts
  // faulting in 4 MB page by page (2 ms of a store's first puts here).
  // Guarded by mu.
  bool populate_active_wanted = false;
  // Batches to free, by the background writer with mu released: Flush
  // releases the spares (between epochs, hold no write buffers), and
  // unmapping two populated 4 MB batches took the caller 1.3-1.6 ms of a
  // 6 ms epoch-end flush. Guarded by mu.
  std::vector<std::shared_ptr<PendingBatch>> retired;
  // The index's next table, made ahead by the background writer
  // (PrepareIndexGrowth); used by the growth it was made for. Guarded by mu.
  KeyIndex::PreparedTable next_index_table;
  // A put found that the index will grow before the writer's next turn (see
  // NextIndexCapacity) and no table is made for it. Guarded by mu.
  bool index_growth_wanted = false;
  // A sealed batch: waiting to be written, being written (claimed), or
  // written and waiting for the batches before it to be published.
  struct SealedBatch {
    std::shared_ptr<PendingBatch> batch;
    uint32_t slot = 0;                 // reserved in `segments`, see the invariants
    std::optional<uint64_t> number;    // its segment number, fixed at the first claim
    bool claimed = false;              // a writer is writing it now
    std::unique_ptr<Segment> written;  // written, not yet published
  };
  // Elements are only popped once written, so a claimed element's address
  // stays valid while its writer runs with mu released.
  std::deque<SealedBatch> sealed;
  uint32_t active_slot = 0;  // slot reserved by `active` (when there is one)
  int64_t trusted_dir_mtime = -1;  // segments dir mtime known to be fully scanned

  // Writer state (guarded by mu).
  std::unique_ptr<FileLock> writer_lock;
  int64_t writer_id = -1;
  uint64_t next_segment_number = 0;
  std::thread writer_thread;
  bool stop_writer = false;
  bool writer_paused = false;      // after an error, until the next Put/Flush retries
  std::exception_ptr writer_error; // not yet reported to the caller
  uint64_t sealed_total = 0;       // batches ever sealed
  uint64_t published_total = 0;    // batches ever published
  std::mutex write_mu;             // synchronous-mode writers

  mutable HotCache hot;  // internally synchronized
  std::atomic<int64_t> last_auto_refresh_ns{0};
  std::atomic<uint64_t> hits{0}, misses{0};
  std::atomic<uint64_t> rows_written{0}, bytes_written{0}, write_ns{0};
  uint64_t skipped_segments = 0;
  uint64_t damaged_segments = 0;  // guarded by warnings_mu
  // Bumped when a segment is first found damaged; the index excludes the
  // damaged segments once reindexed_generation catches up (mu exclusive).
  std::atomic<uint64_t> damage_generation{0};
  std::atomic<uint64_t> reindexed_generation{0};

  std::mutex warnings_mu;
  std::vector<std::string> warnings;

  explicit Impl(const Options& o) : options(o), hot(o.persist ? 0 : o.hot_cache_rows) {
    if (options.max_queued_segments == 0) options.max_queued_segments = 1;
    if (options.flush_every == 0) options.flush_every = 1;
  }

  void Warn(std::string message) {
    std::lock_guard lock(warnings_mu);
    warnings.push_back(std::move(message));
  }

  void ThrowIfClosed() const {
    if (closed) throw ClosedError("the cache is closed; open a new backend to use it again");
  }

  // Key of an indexed row. With `exclusive` (mu held exclusively) an unmapped
  // segment is mapped on demand; otherwise NeedsMapping is thrown.
  KeyIndex::KeyAt KeyAtFn(bool exclusive) {
    return [this, exclusive](RowLocation loc) {
      Segment* segment = segments[loc.segment].get();
      if (segment == nullptr) return pending_batch_in_slot[loc.segment]->KeyOf(loc.row);  // not yet published
      if (!segment->mapped()) {
        if (!exclusive) throw NeedsMapping{};
        MapSegment(loc.segment);
      }
      return segment->KeyOfRow(loc.row);
    };
  }

  // ---- memory maps (mu held exclusively) --------------------------------------

  void MapSegment(uint32_t slot) {
    Segment& segment = *segments[slot];
    if (segment.mapped()) return;
    segment.Map(*schema);
    segment.Touch();
    ++mapped_count;
  }

  // Unmaps least recently used segments (clock sweep) until at most
  // max_mapped_segments are mapped. Only called when no lookup holds views.
  void EvictToCap() {
    size_t cap = std::max<size_t>(1, options.max_mapped_segments);
    size_t budget = 2 * segments.size() + 1;  // two sweeps clear every reference bit
    while (mapped_count > cap && budget-- > 0) {
      Segment* segment = segments[clock_hand].get();
      clock_hand = (clock_hand + 1) % segments.size();
      if (segment == nullptr || !segment->mapped() || segment->TakeReferenced()) continue;
      segment->Unmap();
      --mapped_count;
    }
  }

  // ---- segments ------------------------------------------------------------

  // Adds a loaded (mapped) segment of another writer, or of an earlier
  // session: its rows enter the index, newest last. mu held exclusively.
  void AddSegment(std::unique_ptr<Segment> owned) {
    const uint32_t slot = NewSlot();
    Segment* segment = owned.get();
    segments[slot] = std::move(owned);
    ++mapped_count;
    seen_segment_numbers.insert(segment->number());
    index.Reserve(index.size() + static_cast<size_t>(segment->num_rows()), &next_index_table);
    IndexRows(slot);
  }

  // Appends an empty slot to `segments` (and `pending_batch_in_slot`); returns
  // its number. mu held exclusively.
  uint32_t NewSlot() {
    if (segments.size() >= kNoSegment) {
      throw IOError("the cache holds too many segments for one process (" + std::to_string(segments.size()) +
                    "); compact it or open it again");
    }
    segments.emplace_back();
    pending_batch_in_slot.push_back(nullptr);
    return static_cast<uint32_t>(segments.size() - 1);
  }

  // Points the index at every complete row of the mapped segment in `slot`
  // (later rows replace earlier copies of a key). mu held exclusively.
  //
  // Inserting is a random access into a table of up to hundreds of MB per row
  // (a cache and TLB miss each), so the hashes of the batch are computed first
  // and the home slot of row i + D is prefetched while row i is inserted:
  // opening a cache of 10M entries and publishing a segment into it are bound
  // by memory latency, and this overlaps the misses.
  void IndexRows(uint32_t slot) {
    KeyIndex::KeyAt key_at = KeyAtFn(/*exclusive=*/true);
    constexpr int64_t kDistance = 16;
    int64_t row = 0;
    std::vector<uint64_t> hashes;
    for (const BatchView& batch : segments[slot]->batches()) {
      const int64_t n = batch.num_rows;
      hashes.resize(static_cast<size_t>(n));
      for (int64_t local = 0; local < n; ++local) hashes[local] = HashKey(KeyAt(batch, local));
      for (int64_t local = 0; local < std::min(n, kDistance); ++local) index.PrefetchHome(hashes[local]);
      for (int64_t local = 0; local < n; ++local, ++row) {
        if (local + kDistance < n) index.PrefetchHome(hashes[local + kDistance]);
        if (!RowIsComplete(batch, local)) continue;
        index.Upsert(hashes[local], KeyAt(batch, local), RowLocation{slot, static_cast<uint32_t>(row)}, key_at);
      }
    }
  }

  // Points the index at every row of the unpublished batch in `slot` (later
  // rows replace earlier copies of a key). mu held exclusively.
  void IndexPendingRows(uint32_t slot) {
    const PendingBatch& batch = *pending_batch_in_slot[slot];
    KeyIndex::KeyAt key_at = KeyAtFn(/*exclusive=*/true);
    index.Reserve(index.size() + static_cast<size_t>(batch.num_rows()));
    for (int64_t row = 0; row < batch.num_rows(); ++row) {
      const std::string_view key = batch.KeyOf(row);
      index.Upsert(HashKey(key), key, RowLocation{slot, static_cast<uint32_t>(row)}, key_at);
    }
  }

  // After a segment was found damaged, rebuilds the index without the
  // damaged segments (unpublished rows included, in slot order), so that keys
  // with an intact older copy elsewhere are served from it. Rare (damage),
  // O(entries). mu held exclusively.
  void ReindexWithoutDamaged() {
    uint64_t generation = damage_generation.load();
    if (generation == reindexed_generation.load()) return;
    std::unordered_set<uint64_t> damaged;
    {
      std::lock_guard lock(warnings_mu);
      damaged = reported_damaged;
    }
    index = KeyIndex();
    for (uint32_t slot = 0; slot < segments.size(); ++slot) {
      if (segments[slot] == nullptr) {  // not yet published
        if (pending_batch_in_slot[slot] != nullptr) IndexPendingRows(slot);
        continue;
      }
      if (damaged.count(segments[slot]->number())) continue;
      MapSegment(slot);
      IndexRows(slot);
      EvictToCap();
    }
    reindexed_generation.store(generation);
  }

  std::string SegmentPath(uint64_t number) const { return segments_dir + "/" + SegmentFileName(number); }

  // Loads segment files not seen before (in number order). Caller holds mu
  // exclusively. Returns how many were loaded.
  size_t ScanSegments() {
    if (!PathExists(segments_dir)) return 0;
    int64_t mtime = ModificationTimeNs(segments_dir);
    if (mtime == trusted_dir_mtime) return 0;
    std::vector<uint64_t> numbers;
    for (const std::string& name : ListDirectory(segments_dir)) {
      uint64_t number;
      // This store's own segment, renamed into place but not yet published,
      // is left to Publish: its slot and index entries exist already.
      if (ParseSegmentFileName(name, &number) && !seen_segment_numbers.count(number) &&
          !IsOwnUnpublished(number)) {
        numbers.push_back(number);
      }
    }
    std::sort(numbers.begin(), numbers.end());
    size_t next = 0;
    // Until a schema is known, each file is first asked for one.
    while (next < numbers.size() && !schema) {
      const std::string path = SegmentPath(numbers[next]);
      if (!LoadSchemaJson(/*warn=*/false)) RecoverSchemaFrom(path);
      if (!schema) {
        seen_segment_numbers.insert(numbers[next++]);
        ++skipped_segments;
      }
    }
    // Helper threads open (map, parse, validate) the files while this thread
    // indexes the earlier ones in number order (later segments win). At most
    // half the mapping cap is opened ahead.
    const std::span<const uint64_t> rest = std::span(numbers).subspan(next);
    constexpr size_t kFilesPerThread = 64;  // fewer: not worth a thread
    SegmentOpener opener(rest.size(),
                         std::min(kOpenThreads, (rest.size() + kFilesPerThread - 1) / kFilesPerThread),
                         std::clamp<size_t>(options.max_mapped_segments / 2, 1, 4096),
                         [&](size_t i) { return Segment::Open(SegmentPath(rest[i]), rest[i], *schema); });
    // Each file's size, and the bytes of the files after it (to size the
    // index below).
    std::vector<uint64_t> sizes(rest.size()), bytes_after(rest.size(), 0);
    for (size_t i = 0; i < rest.size(); ++i) sizes[i] = FileSizeOrZero(SegmentPath(rest[i]));
    for (size_t i = rest.size(); i-- > 1;) bytes_after[i - 1] = bytes_after[i] + sizes[i];
    uint64_t indexed_rows = 0, indexed_bytes = 0;
    size_t loaded = 0;
    for (size_t i = 0; i < rest.size(); ++i) {
      SegmentOpener::Opened opened = opener.Next();
      if (!opened.segment) {
        seen_segment_numbers.insert(rest[i]);
        ++skipped_segments;
        Warn("skipping unreadable segment (its rows will be recomputed): " + opened.error);
        continue;
      }
      // Room for this file's rows and those still to come, estimated from
      // the rows per byte of the files indexed so far (segments differ in
      // size: group commit makes larger ones): the index grows about once
      // instead of doubling (a rehash of every entry) again and again, and
      // is not sized for more rows than the files hold.
      indexed_rows += static_cast<uint64_t>(opened.segment->num_rows());
      indexed_bytes += sizes[i];
      const auto to_come = static_cast<size_t>(
          indexed_bytes == 0 ? 0.0
                             : static_cast<double>(indexed_rows) / static_cast<double>(indexed_bytes) *
                                   static_cast<double>(bytes_after[i]));
      index.Reserve(index.size() + static_cast<size_t>(opened.segment->num_rows()) + to_come);
      AddSegment(std::move(opened.segment));
      EvictToCap();
      ++loaded;
    }
    trusted_dir_mtime = (WallNowNs() - mtime > kMtimeSettleNs) ? mtime : -1;
    return loaded;
  }

  // Adopts the schema of schema.json if it exists and is valid (another
  // process may have written it since this store opened). `warn`: report a
  // corrupt file (RecoverSchemaFrom reports it otherwise).
  bool LoadSchemaJson(bool warn) {
    if (!PathExists(schema_path)) return false;
    try {
      schema = format::DecodeSchemaJson(ReadFileToString(schema_path));
      return true;
    } catch (const Error& e) {
      if (warn) Warn(std::string("ignoring corrupt schema.json (recovering it from the segments): ") + e.what());
      return false;
    }
  }

  // Adopts the schema declared by segment `path` (schema.json being absent or
  // corrupt), and rewrites schema.json from it when this store may write.
  void RecoverSchemaFrom(const std::string& path) {
    try {
      schema = Segment::ReadSchema(path);
    } catch (const Error& e) {
      Warn(std::string("skipping unreadable segment (its rows will be recomputed): ") + path + ": " +
           e.what());
      return;
    }
    Warn("schema.json is missing or corrupt in '" + dir + "'; recovered the schema from " + path);
    if (options.persist && IsWritableDirectory(dir)) {
      try {
        WriteFileAtomically(schema_path, format::EncodeSchemaJson(*schema));
      } catch (const Error& e) {
        Warn(std::string("could not rewrite schema.json: ") + e.what());
      }
    }
  }

  // ---- writing -------------------------------------------------------------

  // Claims a writer id (lock file) and the next free segment number of its
  // range. Caller holds mu exclusively.
  void ClaimWriter() {
    if (writer_id >= 0) return;
    CreateDirectories(segments_dir);
    CreateDirectories(writers_dir);
    for (int64_t w = 0;; ++w) {
      auto lock = FileLock::TryAcquire(writers_dir + "/writer_" + std::to_string(w) + ".lock");
      if (!lock) continue;
      writer_lock = std::move(lock);
      writer_id = w;
      break;
    }
    uint64_t begin = static_cast<uint64_t>(writer_id) * kWriterRange;
    uint64_t end = begin + kWriterRange;
    next_segment_number = begin;
    for (const std::string& name : ListDirectory(segments_dir)) {
      uint64_t number;
      bool is_tmp = name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0;
      if (!ParseSegmentFileName(is_tmp ? name.substr(0, name.size() - 4) : name, &number)) continue;
      if (number < begin || number >= end) continue;
      if (is_tmp) {
        RemoveFile(segments_dir + "/" + name);  // a dead writer's leftover: we own this range now
      } else {
        next_segment_number = std::max(next_segment_number, number + 1);
      }
    }
  }

  void SealActive() {
    if (!active || active->num_rows() == 0) return;
    active->UpdateView();
    SealedBatch& entry = sealed.emplace_back();
    entry.batch = std::move(active);
    entry.slot = active_slot;
    active.reset();
    ++sealed_total;
  }

  // Makes schema.json durable if EnsureSchema wrote it without fsync; returns
  // once it is (a concurrent caller waits for the first). Any thread, mu not
  // required.
  void SyncSchema() {
    std::lock_guard guard(schema_sync_mu);
    if (!schema_unsynced) return;
    SyncFileAndDirectory(schema_path);
    schema_unsynced = false;
  }

  // Writes one sealed batch to a new segment file, durably. mu is not held;
  // several writers may run at once, each on its own claimed batch. Its time,
  // from start to read-back check, is added to write_ns.
  std::unique_ptr<Segment> WriteBatch(const PendingBatch& batch, uint64_t number) {
    const auto start = std::chrono::steady_clock::now();
    SyncSchema();  // before any segment relies on it
    std::string path = SegmentPath(number);
    std::string tmp = path + ".tmp";
    uint64_t bytes = 0;
    try {
      auto file = WritableFile::Create(tmp);
      bytes = format::WriteSegment(batch.Table(), [&](std::span<const std::byte> piece) { file->Append(piece); });
      file->Sync();
      file->Close();
      RenameFile(tmp, path);
    } catch (...) {
      try {
        RemoveFile(tmp);
      } catch (...) {
      }
      throw;
    }
    SyncDirectory(segments_dir);
    auto segment = Segment::Open(path, number, *schema);
    // Publishing relies on this: the index already points at the rows by
    // their number in the batch (see the invariants).
    if (segment->num_rows() != batch.num_rows()) {
      throw IOError("segment " + path + " reads back " + std::to_string(segment->num_rows()) + " rows, but " +
                    std::to_string(batch.num_rows()) + " were written");
    }
    segment->MarkVerified();  // written and checksummed by this process
    rows_written += static_cast<uint64_t>(batch.num_rows());
    bytes_written += bytes;
    write_ns += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
    return segment;
  }

  // Serves the rows of the written batch at the front of `sealed` from its
  // segment file instead of its buffers: the index entries stay, only the
  // slot changes hands (see the invariants). The caller then pops it.
  // Caller holds mu exclusively.
  void Publish(SealedBatch& front) {
    const uint32_t slot = front.slot;
    seen_segment_numbers.insert(front.written->number());
    segments[slot] = std::move(front.written);
    pending_batch_in_slot[slot] = nullptr;
    ++mapped_count;
    EvictToCap();
    ++published_total;
    cv.notify_all();
  }

  // Whether segment `number` is one this store is writing or has written and
  // not yet published (a scan must leave it to Publish). mu held.
  bool IsOwnUnpublished(uint64_t number) const {
    for (const SealedBatch& entry : sealed) {
      if (entry.number == number) return true;
    }
    return false;
  }

  // The oldest sealed batch that is neither claimed nor written, or null. mu held.
  SealedBatch* NextUnclaimed() {
    for (SealedBatch& entry : sealed) {
      if (!entry.claimed && !entry.written) return &entry;
    }
    return nullptr;
  }

  // Whether the active batch holds `flush_every` rows (and, async, at least
  // min_segment_bytes). Put seals it then only if no sealed batch is waiting
  // for a writer; otherwise it keeps growing (up to max_pending_bytes) and
  // the next idle writer seals it (group commit: a writer that falls behind
  // writes fewer, larger files instead of a queue of small ones, each paying
  // a create, two fsyncs and a rename). mu held.
  bool ActiveDue() const {
    return active && static_cast<size_t>(active->num_rows()) >= options.flush_every &&
           (!options.async_write || active->bytes() >= options.min_segment_bytes);
  }

  // How many rows of `row_bytes` (as RowBytes counts them) a batch holds
  // once it is due (ActiveDue) or full: what a new batch's buffers are sized
  // for, so that filling it does not reallocate them.
  size_t RowsPerBatch(size_t row_bytes) const {
    row_bytes = std::max<size_t>(1, row_bytes);
    size_t due = options.flush_every;
    if (options.async_write) due = std::max(due, options.min_segment_bytes / row_bytes + 1);
    return std::min(due, options.max_pending_bytes / row_bytes + 1);
  }

  // The next batch for an idle writer: the oldest unclaimed sealed batch,
  // else the active batch, sealed here, if it is due; or null. mu held
  // exclusively.
  SealedBatch* NextWritable() {
    if (SealedBatch* entry = NextUnclaimed()) return entry;
    if (!ActiveDue()) return nullptr;
    SealActive();
    return &sealed.back();
  }

  // Claims `entry`, writes it with mu released, then publishes every written
  // batch at the front of the queue (in queue order). `lock` holds mu
  // exclusively on entry and on return. A failed write returns its error and
  // leaves the batch unclaimed, keeping its number for the retry.
  std::exception_ptr WriteClaimed(SealedBatch* entry, std::unique_lock<std::shared_mutex>& lock) {
    entry->claimed = true;
    if (!entry->number) entry->number = next_segment_number++;
    std::shared_ptr<PendingBatch> batch = entry->batch;
    const uint64_t number = *entry->number;
    lock.unlock();
    std::unique_ptr<Segment> segment;
    std::exception_ptr error;
    try {
      segment = WriteBatch(*batch, number);
    } catch (...) {
      error = std::current_exception();
    }
    batch.reset();  // the queue entry keeps it alive; once published, its buffers may be reused
    lock.lock();
    entry->claimed = false;
    if (error) return error;
    entry->written = std::move(segment);
    while (!sealed.empty() && sealed.front().written) {
      Publish(sealed.front());
      std::shared_ptr<PendingBatch> batch = std::move(sealed.front().batch);
      sealed.pop_front();
      // Nothing refers to a published batch any more (its slot is the
      // segment's now and lookups hold mu): keep its buffers for the next
      // active batch, whose pages are then already faulted in.
      if (batch.use_count() == 1 && batch->bytes() <= kMaxSpareBatchBytes && spares.size() < kMaxSpareBatches) {
        batch->Clear();
        spares.push_back(std::move(batch));
      }
    }
    return nullptr;
  }

  // Records a background write error: the writers pause until a later Put or
  // Flush resumes them, and the next call reports it.
  void SetWriterError(std::exception_ptr error) {
    writer_error = std::move(error);
    writer_paused = true;
    cv.notify_all();
  }

  // Async mode: waits (mu held exclusively through `lock`) until `done()` or
  // a writer error, writing unclaimed sealed batches in this thread meanwhile,
  // in parallel with the background writer, instead of idling.
  template <class Done>
  void HelpWriteUntil(std::unique_lock<std::shared_mutex>& lock, Done done) {
    while (!done() && !writer_error && !closed) {
      SealedBatch* entry = writer_paused ? nullptr : NextWritable();
      if (entry == nullptr) {
        cv.wait(lock);
        continue;
      }
      if (std::exception_ptr error = WriteClaimed(entry, lock)) SetWriterError(error);
    }
  }

  // Body of the background writer thread.
  void WriterLoop() {
    std::unique_lock lock(mu);
    while (true) {
      cv.wait(lock, [&] {
        return stop_writer || !retired.empty() ||
               (!writer_paused && (spare_wanted || populate_active_wanted || index_growth_wanted ||
                                   NextUnclaimed() != nullptr || ActiveDue()));
      });
      if (!retired.empty()) {
        std::vector<std::shared_ptr<PendingBatch>> batches = std::move(retired);
        retired.clear();
        lock.unlock();
        batches.clear();
        lock.lock();
        continue;
      }
      if (populate_active_wanted && !stop_writer) {
        PopulateActive(lock);
        continue;
      }
      if (spare_wanted && !stop_writer) {
        PrepareSpare(lock);
        continue;
      }
      if (index_growth_wanted && !stop_writer) {
        PrepareIndexGrowth(lock);
        continue;
      }
      SealedBatch* entry = writer_paused ? nullptr : NextWritable();
      if (entry == nullptr) break;  // stop requested and nothing writable left
      if (std::exception_ptr error = WriteClaimed(entry, lock)) SetWriterError(error);
      PrepareIndexGrowth(lock);
    }
  }

  // Background writer, mu held exclusively through `lock`: faults in the
  // unfilled buffers of the active batch with mu released (see
  // populate_active_wanted), holding a reference so that they stay allocated.
  void PopulateActive(std::unique_lock<std::shared_mutex>& lock) {
    populate_active_wanted = false;
    if (!active) return;
    std::shared_ptr<PendingBatch> batch = active;
    const std::vector<std::span<std::byte>> unfilled = batch->UnfilledBuffers();
    lock.unlock();
    for (std::span<std::byte> buffer : unfilled) PopulateForWrite(buffer.data(), buffer.size());
    lock.lock();
  }

  // The rows a spare batch has room for: the rows a batch falls due at
  // (RowsPerBatch), and as many again up to kSpareExtraBytes more, up to a
  // full batch (max_pending_bytes). An async batch that falls due while the
  // writer is busy keeps filling (see AppendAndIndex); with rows of 64 bytes
  // most did, and growing a batch copies every buffer into fresh memory that
  // the caller faults in page by page. Spares are made in the background, so
  // the room costs the caller nothing; a store's first batch, and the first
  // after a Flush, are sized for RowsPerBatch only (an epoch's last puts, or
  // a put and a flush, would not fill more). mu held.
  size_t SpareRows() const {
    const size_t row_bytes = std::max<size_t>(1, last_row_bytes.load(std::memory_order_relaxed));
    const size_t due = RowsPerBatch(row_bytes);
    const size_t extra = std::min(due, kSpareExtraBytes / row_bytes + 1);
    return std::min(due + extra, options.max_pending_bytes / row_bytes + 1);
  }

  // Background writer, mu held exclusively through `lock`: makes the spare
  // batch that spare_wanted asks for, with buffers for SpareRows() rows like
  // the active batch's and their pages faulted in, with mu released.
  void PrepareSpare(std::unique_lock<std::shared_mutex>& lock) {
    spare_wanted = false;
    if (!spares.empty() || !active || !schema) return;
    const PendingBatch::Capacity capacity = active->capacity().ForRows(SpareRows());
    const Schema batch_schema = *schema;
    spare_in_making = true;
    lock.unlock();
    std::shared_ptr<PendingBatch> batch;
    try {
      batch = std::make_shared<PendingBatch>(batch_schema);
      batch->ReserveAndPopulate(capacity);
    } catch (const std::bad_alloc&) {
      batch.reset();  // then Put allocates the next active batch, as without a spare
    }
    lock.lock();
    spare_in_making = false;
    // Not after a Flush (no active batch then): between epochs, hold no write buffers.
    if (batch && spares.empty() && active) spares.push_back(std::move(batch));
  }

  // The capacity of the table the index will next grow into, if that
  // happens before the background writer's next turn; else 0. The puts made
  // meanwhile are estimated as a batch (RowsPerBatch of the last rows put:
  // with tiny rows and async writes, more than flush_every, see
  // min_segment_bytes) plus as many rows as are pending now: with tiny rows,
  // the caller puts tens of thousands of rows while one segment is written.
  // A put grows the index by one doubling (a growth only takes a prepared
  // table of exactly its capacity), and an empty index's first table is
  // small. mu held.
  size_t NextIndexCapacity() const {
    if (index.capacity() == 0) return 0;
    const size_t batch = RowsPerBatch(last_row_bytes.load(std::memory_order_relaxed));
    const size_t capacity = index.GrowthFor(index.size() + PendingRows() + batch);
    return std::min(capacity, 2 * index.capacity());
  }

  // Whether NextIndexCapacity() asks for a table that is not made yet. mu held.
  bool IndexGrowthUnprepared() const {
    const size_t capacity = NextIndexCapacity();
    return capacity != 0 && next_index_table.capacity() != capacity;
  }

  // Background writer, mu held exclusively through `lock`: makes the table of
  // NextIndexCapacity() now, with mu released (after each segment it writes,
  // and when a put asks, see index_growth_wanted). Growing a large index is
  // mostly the kernel zeroing the new table's pages (a 3.4M-entry index:
  // ~200 ms, all lookups and puts waiting); with the table made ahead, the
  // put that grows it only moves the entries.
  void PrepareIndexGrowth(std::unique_lock<std::shared_mutex>& lock) {
    index_growth_wanted = false;
    if (next_index_table.capacity() <= index.capacity()) next_index_table = {};  // outgrown
    const size_t capacity = NextIndexCapacity();
    if (capacity == 0 || next_index_table.capacity() == capacity) return;
    lock.unlock();
    KeyIndex::PreparedTable table;
    try {
      table = KeyIndex::Prepare(capacity);
    } catch (const std::bad_alloc&) {  // then the index grows under mu, as it would have
    }
    lock.lock();
    if (table.capacity() > index.capacity()) next_index_table = std::move(table);
  }

  // Synchronous mode: writes every sealed batch in the calling thread.
  void WriteSealedInCaller() {
    std::lock_guard write_lock(write_mu);
    std::unique_lock lock(mu);
    while (SealedBatch* entry = NextUnclaimed()) {
      if (std::exception_ptr error = WriteClaimed(entry, lock)) std::rethrow_exception(error);
    }
  }

  // Throws (once) an error of the background writer. The writer stays
  // paused until a later Put or Flush asks it to retry (ResumeWriter).
  void RethrowWriterError() {
    if (!writer_error) return;
    std::exception_ptr error = writer_error;
    writer_error = nullptr;
    std::rethrow_exception(error);
  }

  void ResumeWriter() {
    writer_paused = false;
    cv.notify_all();
  }

  // ---- reading -------------------------------------------------------------

  // Finds `key` in pending rows, segments or the hot cache. Caller holds mu
  // (exclusively if `exclusive`: then segments are mapped on demand; shared:
  // NeedsMapping is thrown if a needed segment is unmapped). Rows of damaged
  // segments are reported once and treated as missing.
  Found Find(std::string_view key, std::vector<HotCache::Row>* hot_rows, bool exclusive) {
    return Find(key, NeedsHash() ? HashKey(key) : 0, hot_rows, KeyAtFn(exclusive));
  }

  // Whether Find uses the key's hash (an empty store does not need it).
  bool NeedsHash() const { return index.size() > 0; }

  // Find with the key's hash computed (only used if NeedsHash()). With
  // `indexed` false the caller knows that the index holds no entry with the
  // hash's tag (KeyIndex::Candidate found none), and only the hot cache is
  // searched.
  Found Find(std::string_view key, uint64_t hash, std::vector<HotCache::Row>* hot_rows,
             const KeyIndex::KeyAt& key_at, bool indexed = true) {
    Found found;
    if (indexed && index.size() > 0) {
      if (auto loc = index.Find(hash, key, key_at)) {
        if (segments[loc->segment] == nullptr) {  // not yet published
          found.batch = &pending_batch_in_slot[loc->segment]->view();
          found.row = loc->row;
          return found;
        }
        const Segment& segment = *segments[loc->segment];
        std::string problem;
        if (segment.VerifyOnce(*schema, &problem)) {
          auto [batch, row] = segment.Locate(loc->row);
          found.batch = batch;
          found.row = row;
          found.uniform = segment.UniformRowsOf(batch);
          return found;
        }
        ReportDamaged(segment, problem);
      }
    }
    if (hot_rows != nullptr && hot.size() > 0) {
      hot.With(key, [&](const HotCache::Row& row) {
        found.hot = static_cast<int>(hot_rows->size());
        hot_rows->push_back(row);
      });
    }
    return found;
  }

  void ReportDamaged(const Segment& segment, const std::string& problem) {
    std::lock_guard lock(warnings_mu);
    if (reported_damaged.insert(segment.number()).second) {
      warnings.push_back("skipping damaged segment: " + problem);
      ++damaged_segments;
      ++damage_generation;
    }
  }

  // Looks up under the shared lock; if a needed segment is unmapped, again
  // under the exclusive lock (mapping it), then unmaps down to the cap.
  // If the lookup found a segment damaged, reindexes without it and looks up
  // again, so that intact older copies of its keys are served.
  GetResult LookupAnyMode(std::span<const std::string_view> keys) {
    {
      std::shared_lock lock(mu);
      ThrowIfClosed();
      try {
        GetResult result = Lookup(keys, /*exclusive=*/false);
        if (damage_generation.load() == reindexed_generation.load()) return result;
      } catch (const NeedsMapping&) {
      }
    }
    std::unique_lock lock(mu);
    ThrowIfClosed();
    GetResult result = Lookup(keys, /*exclusive=*/true);
    // Each pass drops at least one more damaged segment, so this ends.
    while (damage_generation.load() != reindexed_generation.load()) {
      ReindexWithoutDamaged();
      result = Lookup(keys, /*exclusive=*/true);
    }
    EvictToCap();
    return result;
  }

  GetResult Lookup(std::span<const std::string_view> keys, bool exclusive) {
    const size_t n = keys.size();
    GetResult result;
    result.found.assign(n, 0);
    std::vector<Found> found(n);
    std::vector<HotCache::Row> hot_rows;
    const KeyIndex::KeyAt key_at = KeyAtFn(exclusive);
    if (index.size() < kPipelineMinEntries &&
        last_row_bytes.load(std::memory_order_relaxed) < kPipelineMinRowBytes) {  // all in cache
      for (size_t i = 0; i < n; ++i) {
        found[i] = Find(keys[i], NeedsHash() ? HashKey(keys[i]) : 0, &hot_rows, key_at);
        result.found[i] = (found[i].batch != nullptr || found[i].hot >= 0) ? 1 : 0;
      }
    } else {
      // Software pipeline over the batch: a random lookup is a chain of
      // dependent cache misses (index slot -> key offsets -> key bytes), so
      // key i + 3D has its slot prefetched, key i + 2D its key offsets and key
      // i + D its key bytes while key i is looked up: the misses of
      // different keys overlap instead of adding up.
      constexpr size_t kDistance = 8;
      std::vector<uint64_t> hashes(n);
      std::vector<RowLocation> candidates(n, RowLocation{kNoSegment, 0});
      auto prefetchable = [&](const RowLocation& loc) -> const Segment* {
        if (loc.segment == kNoSegment || loc.segment >= segments.size()) return nullptr;
        const Segment* segment = segments[loc.segment].get();
        return segment != nullptr && segment->mapped() ? segment : nullptr;
      };
      for (size_t i = 0; i < n + 3 * kDistance; ++i) {
        if (i < n) {
          hashes[i] = HashKey(keys[i]);
          index.PrefetchHome(hashes[i]);
        }
        if (i >= kDistance && i - kDistance < n) {
          const size_t j = i - kDistance;
          if (auto candidate = index.Candidate(hashes[j])) {
            candidates[j] = *candidate;
            if (const Segment* segment = prefetchable(*candidate)) segment->PrefetchKeyOffsets(candidate->row);
          }
        }
        if (i >= 2 * kDistance && i - 2 * kDistance < n) {
          const size_t j = i - 2 * kDistance;
          if (const Segment* segment = prefetchable(candidates[j])) segment->PrefetchKey(candidates[j].row);
        }
        if (i >= 3 * kDistance) {
          const size_t j = i - 3 * kDistance;
          // No candidate: no tag match on the key's probe path, so Find would
          // walk it again to the same answer (most of a miss's cost).
          found[j] = Find(keys[j], hashes[j], &hot_rows, key_at, candidates[j].segment != kNoSegment);
          result.found[j] = (found[j].batch != nullptr || found[j].hot >= 0) ? 1 : 0;
        }
      }
    }
    if (!schema) return result;
    result.leaves.resize(schema->leaves.size());
    size_t row_bytes = 0;  // of the dense leaves
    for (size_t l = 0; l < schema->leaves.size(); ++l) {
      FillLeaf(l, found, hot_rows, &result.leaves[l]);
      row_bytes += result.leaves[l].row_bytes;
    }
    // A lookup that found nothing moved no rows: the hint stays the last put's.
    if (std::find(result.found.begin(), result.found.end(), 1) != result.found.end()) {
      last_row_bytes.store(row_bytes, std::memory_order_relaxed);
    }
    return result;
  }

  void FillLeaf(size_t l, const std::vector<Found>& found, const std::vector<HotCache::Row>& hot_rows,
                LeafResult* out) const {
    const LeafSpec& spec = schema->leaves[l];
    const size_t n = found.size();
    auto shape_of = [&](const Found& f) {
      return f.hot >= 0 ? hot_rows[f.hot][l].shape : CellShape(f.batch->leaves[l], f.row);
    };
    // The row's batch summary if its rows are uniform (offsets and shape
    // known without reading them), else null.
    auto uniform_rows = [&](const Found& f) -> const UniformRows* {
      return f.uniform != nullptr && f.uniform[l].uniform() ? &f.uniform[l] : nullptr;
    };
    if (spec.kind == LeafKind::kTensor) {
      // Dense when every found row has the same shape.
      bool any = false, uniform = true;
      std::vector<int64_t> shape;
      const UniformRows* matched = nullptr;  // a batch summary whose shape is `shape`
      for (const Found& f : found) {
        if (f.batch == nullptr && f.hot < 0) continue;
        const UniformRows* rows = uniform_rows(f);
        if (!any) {
          shape = rows != nullptr ? rows->shape : shape_of(f);
          any = true;
        } else if (rows != nullptr) {
          if (rows != matched && rows->shape != shape) {
            uniform = false;
            break;
          }
        } else if (f.hot >= 0 ? hot_rows[f.hot][l].shape != shape : !SameShape(f.batch->leaves[l], f.row, shape)) {
          uniform = false;
          break;
        }
        if (rows != nullptr) matched = rows;
      }
      if (any && uniform) {
        out->is_dense = true;
        out->shape = shape;
        out->row_bytes = static_cast<size_t>(NumElements(shape)) * ElementSize(spec.dtype);
        out->dense = AllocateOutputBuffer(n * out->row_bytes);
        // A uniform row's bytes: where they start, and whether they are
        // exactly the output row (else CopyTensorCell reads the offsets).
        auto uniform_source = [&](const Found& f) -> const std::byte* {
          const UniformRows* rows = uniform_rows(f);
          if (rows == nullptr) return nullptr;
          const LeafView& leaf = f.batch->leaves[l];
          const auto width = static_cast<int64_t>(leaf.storage_width);
          if (static_cast<size_t>(rows->elements * width) != out->row_bytes) return nullptr;
          return leaf.data.values + f.row * rows->elements * width;
        };
        // Rows of kPageHeadPrefetchMinRowBytes and more span several pages,
        // and the hardware prefetcher stops at every 4 KB page boundary: while
        // row i is copied, the first two lines of each page of row i + 1 are
        // prefetched, so that its page walks and streams start early
        // (benchmarks/NOTES.md, round 8: 16 KB rows at batch 64, shuffled,
        // 10% faster; sequential unchanged). Smaller rows are copied without
        // software prefetch: prefetching whole next rows was slower (round 6:
        // 2 KB rows 4-8%, 16 KB rows 5% and cached 16-byte rows 13%).
        const bool prefetch_pages = out->row_bytes >= kPageHeadPrefetchMinRowBytes;
        auto prefetch_page_heads = [&](size_t i) {
          if (i >= n || found[i].batch == nullptr) return;
          if (const std::byte* src = uniform_source(found[i])) {
            for (size_t offset = 0; offset < out->row_bytes; offset += kPageBytes) {
              Prefetch(src + offset);
              if (offset + 64 < out->row_bytes) Prefetch(src + offset + 64);
            }
          }
        };
        if (prefetch_pages) prefetch_page_heads(0);
        for (size_t i = 0; i < n; ++i) {
          std::byte* dst = out->dense.get() + i * out->row_bytes;
          const Found& f = found[i];
          if (prefetch_pages) prefetch_page_heads(i + 1);
          if (const std::byte* src = f.batch != nullptr ? uniform_source(f) : nullptr) {
            if (out->row_bytes > 0) std::memcpy(dst, src, out->row_bytes);
          } else if (f.batch != nullptr) {
            CopyTensorCell(f.batch->leaves[l], f.row, dst);
          } else if (f.hot >= 0) {
            // row_bytes may be 0 (empty tensors), with a null bytes.data().
            if (out->row_bytes > 0) std::memcpy(dst, hot_rows[f.hot][l].bytes.data(), out->row_bytes);
          } else {
            std::memset(dst, 0, out->row_bytes);
          }
        }
        return;
      }
    }
    out->rows.resize(n);
    out->shapes.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const Found& f = found[i];
      if (f.hot >= 0) {
        out->rows[i] = hot_rows[f.hot][l].bytes;
        out->shapes[i] = hot_rows[f.hot][l].shape;
      } else if (f.batch != nullptr) {
        const LeafView& leaf = f.batch->leaves[l];
        if (spec.kind == LeafKind::kTensor) {
          std::vector<std::byte> bytes(CellTensorBytes(leaf, f.row, ElementSize(spec.dtype)));
          CopyTensorCell(leaf, f.row, bytes.data());
          out->rows[i] = std::move(bytes);
          out->shapes[i] = CellShape(leaf, f.row);
        } else {
          auto blob = BlobCell(leaf, f.row);
          out->rows[i] = std::vector<std::byte>(blob.begin(), blob.end());
        }
      }
    }
  }

  static bool SameShape(const LeafView& leaf, int64_t row, const std::vector<int64_t>& shape) {
    if (CellRank(leaf, row) != shape.size()) return false;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (CellDim(leaf, row, d) != shape[d]) return false;
    }
    return true;
  }

  // Appends row i of `leaves` under keys[i] (whose HashKey is hashes[i]) to
  // the active batch and points the index at it, for every i in order,
  // sealing batches as they fill. Put's loop; mu held exclusively.
  void AppendAndIndex(std::span<const std::string_view> keys, std::span<const LeafRows> leaves,
                      std::span<const uint64_t> hashes, const KeyIndex::KeyAt& key_at) {
    const size_t n = keys.size();
    for (size_t i = 0; i < n; ++i) {
      if (i + kPutPrefetchDistance < n) index.PrefetchHome(hashes[i + kPutPrefetchDistance]);
      const size_t row_bytes = RowBytes(leaves, i);
      if (active && active->num_rows() > 0 && active->WouldOverflow(row_bytes)) SealActive();
      if (!active) {
        if (spares.empty()) {
          active = std::make_shared<PendingBatch>(*schema);
          populate_active_wanted = options.async_write;  // after the Reserve below
        } else {
          active = std::move(spares.back());
          spares.pop_back();
        }
        active_slot = NewSlot();
        pending_batch_in_slot[active_slot] = active.get();
        // Keys of growing ids lengthen by a digit now and then: room for two more.
        active->Reserve(RowsPerBatch(row_bytes), keys[i].size() + 2, leaves, i);
      }
      const int64_t row = active->Append(keys[i], leaves, i);
      index.Upsert(hashes[i], keys[i], RowLocation{active_slot, static_cast<uint32_t>(row)}, key_at);
      // Full: seal. Due (flush_every rows) while a sealed batch still waits
      // for a writer (async): keep filling, see ActiveDue.
      if (active->bytes() >= options.max_pending_bytes ||
          (ActiveDue() && (!options.async_write || NextUnclaimed() == nullptr))) {
        SealActive();
      }
    }
  }

  // After AppendAndIndex, however it ended: fences the rows' streamed stores
  // and points the active batch's view at its current buffers, so that the
  // rows the index holds are readable once mu is released; then unmaps down
  // to the cap (verifying a key against an older row may have mapped its
  // segment). mu held exclusively.
  void MakeAppendedRowsReadable() {
    StreamFence();
    if (active) active->UpdateView();
    EvictToCap();
  }

  // ---- validation of Put input ---------------------------------------------

  void ValidatePut(size_t n, std::span<const LeafRows> leaves) const {
    if (leaves.size() != schema->leaves.size()) {
      throw SchemaMismatchError("the output has " + std::to_string(leaves.size()) +
                                " leaves but the cache stores " + std::to_string(schema->leaves.size()));
    }
    for (size_t l = 0; l < leaves.size(); ++l) {
      const LeafSpec& spec = schema->leaves[l];
      const LeafRows& rows = leaves[l];
      std::string name = spec.name.empty() ? "output" : "leaf '" + spec.name + "'";
      if (spec.kind == LeafKind::kBlob) {
        if (rows.is_dense || rows.rows.size() != n) {
          throw InvalidArgumentError(name + ": expected one blob per key (" + std::to_string(n) + ")");
        }
        continue;
      }
      size_t element = ElementSize(spec.dtype);
      if (rows.is_dense) {
        if (rows.row_bytes != NumElements(rows.shape) * element) {
          throw InvalidArgumentError(name + ": row size " + std::to_string(rows.row_bytes) +
                                     " bytes does not match its shape and dtype");
        }
        if (n > 0 && rows.row_bytes > 0 && rows.base == nullptr) {
          throw InvalidArgumentError(name + ": missing data");
        }
      } else {
        if (rows.rows.size() != n || rows.shapes.size() != n) {
          throw InvalidArgumentError(name + ": expected one row and one shape per key (" +
                                     std::to_string(n) + ")");
        }
        for (size_t i = 0; i < n; ++i) {
          if (rows.rows[i].size() != NumElements(rows.shapes[i]) * element) {
            throw InvalidArgumentError(name + ": row " + std::to_string(i) +
                                       " size does not match its shape and dtype");
          }
        }
      }
    }
  }

  size_t RowBytes(std::span<const LeafRows> leaves, size_t i) const {
    size_t bytes = 0;
    for (const LeafRows& rows : leaves) {
      bytes += rows.is_dense ? rows.row_bytes + rows.shape.size() * 8
                             : rows.rows[i].size() + (rows.shapes.empty() ? 0 : rows.shapes[i].size() * 8);
    }
    return bytes;
  }

  size_t PendingRows() const {
    size_t rows = active ? static_cast<size_t>(active->num_rows()) : 0;
    for (const SealedBatch& entry : sealed) rows += static_cast<size_t>(entry.batch->num_rows());
    return rows;
  }

  // Keys with a row, written or not. mu held.
  size_t DistinctKeys() const {
    return index.size() + hot.size();  // hot rows exist only in stores that do not persist
  }
};

// ---- Store -------------------------------------------------------------------

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<Store> Store::Open(const std::string& cache_dir, const std::string& module_id,
                                   const Options& options) {
  ValidateModuleId(module_id);
  if (cache_dir.empty()) throw InvalidArgumentError("cache_dir must not be empty");
  // The OS would cut the path at a NUL, so the cache would land elsewhere.
  if (cache_dir.find('\0') != std::string::npos) {
    throw InvalidArgumentError("cache_dir must not contain a NUL character");
  }
  auto impl = std::make_unique<Impl>(options);
  impl->dir = StripTrailingSlashes(cache_dir) + "/" + module_id;
  impl->segments_dir = impl->dir + "/segments";
  impl->writers_dir = impl->dir + "/writers";
  impl->schema_path = impl->dir + "/schema.json";
  if (!PathExists(impl->dir)) CreateDirectories(impl->dir);

  impl->LoadSchemaJson(/*warn=*/true);
  impl->ScanSegments();
  if (impl->options.persist && impl->options.async_write) {
    impl->writer_thread = std::thread([raw = impl.get()] {
      pthread_setname_np(pthread_self(), "tcx-writer");  // shows in top, perf and py-spy
      raw->WriterLoop();
    });
  }
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

Store::~Store() {
  try {
    Close();
  } catch (const std::exception& e) {
    std::cerr << "torchcachex: error while closing the cache at " << impl_->dir << ": " << e.what()
              << "\n";
  }
}

std::optional<Schema> Store::schema() const {
  std::shared_lock lock(impl_->mu);
  return impl_->schema;
}

void Store::EnsureSchema(const Schema& schema) {
  std::unique_lock lock(impl_->mu);
  impl_->ThrowIfClosed();
  // Another process may have created the cache since this store opened.
  if (!impl_->schema) impl_->LoadSchemaJson(/*warn=*/false);
  if (impl_->schema) {
    std::string difference = impl_->schema->DescribeDifference(schema);
    if (!difference.empty()) throw SchemaMismatchError(difference);
    if (impl_->schema->structure.empty()) impl_->schema->structure = schema.structure;
    return;
  }
  if (impl_->options.persist) {
    // Visible to other processes now; made durable before the first segment
    // is written (or by Flush), off the caller's path: two fsyncs cost 4-6 ms
    // here. A schema.json lost in a crash before that is harmless: no segment
    // depends on it yet.
    std::lock_guard guard(impl_->schema_sync_mu);
    WriteFileAtomically(impl_->schema_path, format::EncodeSchemaJson(schema), /*durable=*/false);
    impl_->schema_unsynced = true;
  }
  impl_->schema = schema;
}

GetResult Store::GetBatch(std::span<const std::string_view> keys) {
  GetResult result = impl_->LookupAnyMode(keys);
  size_t found = static_cast<size_t>(std::count(result.found.begin(), result.found.end(), 1));
  if (found < keys.size()) {
    int64_t now = SteadyNowNs();
    int64_t last = impl_->last_auto_refresh_ns.load();
    if (now - last >= kAutoRefreshIntervalNs &&
        impl_->last_auto_refresh_ns.compare_exchange_strong(last, now) && Refresh() > 0) {
      result = impl_->LookupAnyMode(keys);
      found = static_cast<size_t>(std::count(result.found.begin(), result.found.end(), 1));
    }
  }
  impl_->hits += found;
  impl_->misses += keys.size() - found;
  return result;
}

bool Store::Contains(std::string_view key) {
  std::string_view keys[1] = {key};
  return impl_->LookupAnyMode(keys).found[0] != 0;
}

void Store::Put(std::span<const std::string_view> keys, std::span<const LeafRows> leaves) {
  Impl& s = *impl_;
  std::unique_lock lock(s.mu);
  s.ThrowIfClosed();
  s.RethrowWriterError();
  if (!s.schema) throw InvalidArgumentError("the cache has no schema yet: call EnsureSchema before Put");
  const size_t n = keys.size();
  s.ValidatePut(n, leaves);
  if (!s.options.persist) {
    lock.unlock();
    for (size_t i = 0; i < n; ++i) s.hot.Put(keys[i], leaves, i);
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    if (s.RowBytes(leaves, i) >= (size_t{1} << 31) - 1024) {
      throw InvalidArgumentError("a single sample of " + std::to_string(s.RowBytes(leaves, i)) +
                                 " bytes is too large for one segment row (limit 2 GiB)");
    }
  }
  s.ClaimWriter();
  if (n > 0) s.last_row_bytes.store(s.RowBytes(leaves, 0), std::memory_order_relaxed);
  // The index can outgrow the caches: hashes first, then the home slot of row
  // i + kPutPrefetchDistance is prefetched while row i is inserted, as in
  // IndexRows.
  std::vector<uint64_t> hashes(n);
  for (size_t i = 0; i < n; ++i) hashes[i] = HashKey(keys[i]);
  s.index.Reserve(s.index.size() + n, &s.next_index_table);
  const KeyIndex::KeyAt key_at = s.KeyAtFn(/*exclusive=*/true);
  try {
    s.AppendAndIndex(keys, leaves, hashes, key_at);
  } catch (...) {
    // An Upsert verifies a key against an older row of it, mapping that
    // row's segment, which throws if the file was removed or damaged since
    // it was opened. The rows appended before are indexed already.
    s.MakeAppendedRowsReadable();
    throw;
  }
  s.MakeAppendedRowsReadable();
  if (s.options.async_write && s.active && s.spares.empty() && !s.spare_wanted && !s.spare_in_making &&
      (static_cast<size_t>(s.active->num_rows()) * 2 >= s.options.flush_every ||
       s.active->bytes() * 2 >= s.options.max_pending_bytes)) {
    s.spare_wanted = true;  // see PrepareSpare
    s.cv.notify_all();
  }
  if (s.options.async_write && !s.index_growth_wanted && s.IndexGrowthUnprepared()) {
    s.index_growth_wanted = true;  // see PrepareIndexGrowth
    s.cv.notify_all();
  }
  if (s.populate_active_wanted) s.cv.notify_all();  // see PopulateActive
  if (s.sealed.empty()) return;
  if (s.options.async_write) {
    s.ResumeWriter();
    // Backpressure: bounded memory for batches waiting to be written.
    s.HelpWriteUntil(lock, [&] { return s.sealed.size() <= s.options.max_queued_segments; });
    s.RethrowWriterError();
  } else {
    lock.unlock();
    s.WriteSealedInCaller();
  }
}

void Store::Flush() {
  Impl& s = *impl_;
  if (!s.options.persist) return;
  if (!s.options.async_write) {
    {
      std::unique_lock lock(s.mu);
      s.ThrowIfClosed();
      s.SealActive();
    }
    s.WriteSealedInCaller();
    s.SyncSchema();  // also with no rows to write
    return;
  }
  {
    std::unique_lock lock(s.mu);
    s.ThrowIfClosed();
    s.RethrowWriterError();
    s.SealActive();
    uint64_t target = s.sealed_total;
    s.ResumeWriter();
    s.HelpWriteUntil(lock, [&] { return s.published_total >= target; });
    // Between epochs, hold no write buffers; the writer frees them (see retired).
    for (std::shared_ptr<PendingBatch>& batch : s.spares) s.retired.push_back(std::move(batch));
    s.spares.clear();
    s.cv.notify_all();
    s.RethrowWriterError();
  }
  s.SyncSchema();  // also with no rows to write
}

void Store::Close() {
  Impl& s = *impl_;
  {
    std::shared_lock lock(s.mu);
    if (s.closed) return;
  }
  std::exception_ptr flush_error;
  try {
    Flush();
  } catch (...) {
    flush_error = std::current_exception();
  }
  {
    std::unique_lock lock(s.mu);
    s.closed = true;
    s.stop_writer = true;
    s.writer_paused = true;  // the thread exits instead of retrying
    s.cv.notify_all();
  }
  if (s.writer_thread.joinable()) s.writer_thread.join();
  {
    std::unique_lock lock(s.mu);
    s.writer_lock.reset();
  }
  if (flush_error) {
    try {
      std::rethrow_exception(flush_error);
    } catch (const Error& e) {
      throw IOError(std::string("closing the cache could not persist its last rows: ") + e.what());
    }
  }
}

size_t Store::Refresh() {
  std::unique_lock lock(impl_->mu);
  impl_->ThrowIfClosed();
  return impl_->ScanSegments();
}

Stats Store::GetStats() const {
  Impl& s = *impl_;
  std::unique_lock lock(s.mu);
  Stats stats;
  stats.entries = s.DistinctKeys();
  s.EvictToCap();
  stats.segments = static_cast<size_t>(
      std::count_if(s.segments.begin(), s.segments.end(), [](const auto& segment) { return segment != nullptr; }));
  stats.pending_rows = s.PendingRows();
  stats.hot_cache_rows = s.hot.size();
  stats.hits = s.hits.load();
  stats.misses = s.misses.load();
  stats.rows_written = s.rows_written.load();
  stats.bytes_written = s.bytes_written.load();
  stats.write_ns = s.write_ns.load();
  {
    std::lock_guard warnings_lock(s.warnings_mu);
    stats.skipped_segments = s.skipped_segments + s.damaged_segments;
  }
  stats.mapped_segments = s.mapped_count;
  stats.writer_id = s.writer_id;
  stats.index_bytes = s.index.memory_bytes();
  return stats;
}

size_t Store::size() const {
  std::unique_lock lock(impl_->mu);
  size_t count = impl_->DistinctKeys();
  impl_->EvictToCap();
  return count;
}

std::vector<std::string> Store::TakeWarnings() {
  std::lock_guard lock(impl_->warnings_mu);
  return std::exchange(impl_->warnings, {});
}

const std::string& Store::path() const { return impl_->dir; }

}  // namespace torchcachex
