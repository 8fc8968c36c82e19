// Segment: one immutable segment file, validated against the store's schema
// and arranged as BatchViews. Rows are numbered across the file's record
// batches in order.
//
// Mapping: a segment is memory-mapped while mapped() is true; its views point
// into the mapping. Unmap() and Map() change that state and must only be
// called when no reader can be using the views (the store holds its lock
// exclusively); readers check mapped() under the shared lock. This lets the
// store bound the number of live mappings (vm.max_map_count) for caches of
// very many segments.
//
// Integrity: a file written by torchcachex carries two checksums in its
// footer: XXH64 of the key column, verified when the segment is opened (the
// keys are read then anyway, to build the index), and XXH3-64 (XXH64 in older
// files) of every byte before the footer, verified once, lazily, the first
// time a row of the segment is served (VerifyOnce), together with the rows'
// shapes. Opening a
// cache thus reads only the metadata, key columns and offsets (see
// OpenPrefetcher in segment.cc), yet damaged bytes are never served and a
// damaged key cannot hide a damaged segment. Files of other tools carry no
// checksum: their shapes are validated when they are opened.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "format/ipc_reader.h"
#include "store/batch_view.h"
#include "torchcachex/schema.h"
#include "util/file.h"
#include "util/prefetch.h"

namespace torchcachex {

class Segment {
 public:
  // Maps and validates `path` against `schema`. Throws CorruptFileError
  // (unreadable, not Arrow IPC, columns that do not match the schema, a key
  // checksum mismatch, or for a file without checksums shapes inconsistent
  // with data) or IOError. The result is mapped.
  static std::unique_ptr<Segment> Open(const std::string& path, uint64_t number, const Schema& schema);

  // Reads only the schema a segment file declares (for recovering schema.json).
  static Schema ReadSchema(const std::string& path);

  uint64_t number() const { return number_; }
  const std::string& path() const { return path_; }
  int64_t num_rows() const { return num_rows_; }

  bool mapped() const { return mapped_ != nullptr; }
  // Remaps an unmapped segment (same validation as Open). Throws like Open.
  void Map(const Schema& schema);
  void Unmap();

  // Set on every access; cleared by the store's clock sweep (eviction order).
  void Touch() const { referenced_.store(true, std::memory_order_relaxed); }
  bool TakeReferenced() { return referenced_.exchange(false, std::memory_order_relaxed); }

  // The following require mapped().
  std::pair<const BatchView*, int64_t> Locate(int64_t row) const;
  std::string_view KeyOfRow(int64_t row) const {
    auto [batch, local] = Locate(row);
    return KeyAt(*batch, local);
  }
  const std::vector<BatchView>& batches() const { return batches_; }

  // Prefetch hints for batched lookups (require mapped(); no effect on
  // segments of several record batches). Stage 1 fetches the key offsets of
  // `row`; stage 2 (once they are cached) its key bytes. Neither touches the
  // clock bit.
  void PrefetchKeyOffsets(int64_t row) const {
    if (batches_.size() != 1) return;
    const format::ColumnView& key = batches_[0].key;
    Prefetch(key.offsets + row * (key.large_offsets ? 8 : 4));
  }
  void PrefetchKey(int64_t row) const {
    if (batches_.size() != 1 || row >= batches_[0].num_rows) return;
    const format::ColumnView& key = batches_[0].key;
    Prefetch(key.values + key.Offset(row));
  }

  // Verifies the checksum the first time it is called (thread-safe; requires
  // mapped() on that first call). Returns false if the file is damaged, with
  // the reason in *problem. Files without a checksum (written by other tools)
  // count as intact.
  // A file of ours has its rows (shapes against data) validated here too,
  // after the checksum, rather than when opened: `schema` is the one it was
  // opened with.
  // The first call also summarizes every batch's leaves (UniformRows), for
  // UniformRowsOf.
  bool VerifyOnce(const Schema& schema, std::string* problem) const;
  // Records that the checksum is known to be good (a file this process wrote).
  void MarkVerified() const;

  // The UniformRows of each leaf (in schema order) of `batch`, one of
  // batches(); null before VerifyOnce has returned true. Survives Unmap/Map
  // (the file is immutable).
  const UniformRows* UniformRowsOf(const BatchView* batch) const {
    if (integrity_.load(std::memory_order_acquire) != 1 || uniform_.empty()) return nullptr;
    return uniform_[static_cast<size_t>(batch - batches_.data())].data();
  }

 private:
  Segment() = default;
  void Load(const Schema& schema, bool validate_rows);
  // Throws CorruptFileError if the footer's key checksum does not match.
  void VerifyKeyChecksum(const format::ParsedSegment& parsed, const std::vector<BatchView>& batches) const;

  uint64_t number_ = 0;
  std::string path_;
  int64_t num_rows_ = 0;
  std::shared_ptr<MappedFile> mapped_;
  // A whole-file checksum recorded in a footer, and the hash that computes it.
  struct FileChecksum {
    uint64_t value;
    uint64_t (*hash)(std::span<const std::byte>);
  };
  // The footer's whole-file checksum, if any: XXH3-64, or XXH64 in files
  // written before XXH3 (format/arrow_types.h). Throws CorruptFileError if
  // the recorded value is malformed.
  static std::optional<FileChecksum> FileChecksumFromFooter(const format::ParsedSegment& parsed,
                                                            const std::string& path);
  std::optional<FileChecksum> expected_checksum_;
  uint64_t checksummed_bytes_ = 0;
  bool rows_validated_ = true;  // false: ValidateBatch is left to VerifyOnce
  std::vector<BatchView> batches_;
  std::vector<int64_t> batch_starts_;  // global row of each batch's first row
  mutable std::atomic<bool> referenced_{true};
  mutable std::once_flag verify_once_;
  mutable std::atomic<int> integrity_{0};  // 0 unknown, 1 good, 2 damaged
  // Set by MarkVerified before the segment is shared: VerifyOnce skips the
  // checks (not the summaries).
  mutable bool marked_verified_ = false;
  mutable std::string integrity_problem_;
  // Per batch, per leaf; written once by VerifyOnce, then read-only.
  mutable std::vector<std::vector<UniformRows>> uniform_;
};

// "segment_<n>.arrow" for n.
std::string SegmentFileName(uint64_t number);
// Parses "segment_<n>.arrow"; false for any other name.
bool ParseSegmentFileName(const std::string& name, uint64_t* number);

}  // namespace torchcachex
