// Segment: one immutable segment file, memory-mapped, validated and arranged
// as BatchViews for the store's schema. Rows are numbered across the file's
// record batches in order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "format/ipc_reader.h"
#include "store/batch_view.h"
#include "torchcachex/schema.h"
#include "util/file.h"

namespace torchcachex {

class Segment {
 public:
  // Maps and validates `path` against `schema`. Throws CorruptFileError
  // (unreadable, not Arrow IPC, columns that do not match the schema, shapes
  // inconsistent with data) or IOError.
  static std::shared_ptr<const Segment> Open(const std::string& path, uint64_t number,
                                             const Schema& schema);

  // Reads only the schema a segment file declares (for recovering schema.json).
  static Schema ReadSchema(const std::string& path);

  uint64_t number() const { return number_; }
  int64_t num_rows() const { return num_rows_; }
  uint64_t file_bytes() const { return mapped_->bytes().size(); }

  // (batch, row within batch) of global row `row`.
  std::pair<const BatchView*, int64_t> Locate(int64_t row) const;

  std::string_view KeyOfRow(int64_t row) const {
    auto [batch, local] = Locate(row);
    return KeyAt(*batch, local);
  }

  const std::vector<BatchView>& batches() const { return batches_; }

 private:
  Segment() = default;
  uint64_t number_ = 0;
  int64_t num_rows_ = 0;
  std::shared_ptr<MappedFile> mapped_;
  std::vector<BatchView> batches_;
  std::vector<int64_t> batch_starts_;  // global row of each batch's first row
};

// "segment_<n>.arrow" for n.
std::string SegmentFileName(uint64_t number);
// Parses "segment_<n>.arrow"; false for any other name.
bool ParseSegmentFileName(const std::string& name, uint64_t* number);

}  // namespace torchcachex
