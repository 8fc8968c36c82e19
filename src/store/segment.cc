#include "store/segment.h"

#include <algorithm>
#include <charconv>

#include "format/segment_layout.h"
#include "torchcachex/errors.h"

namespace torchcachex {

std::shared_ptr<const Segment> Segment::Open(const std::string& path, uint64_t number,
                                             const Schema& schema) {
  auto segment = std::shared_ptr<Segment>(new Segment());
  segment->number_ = number;
  segment->mapped_ = MappedFile::Open(path);
  format::ParsedSegment parsed;
  try {
    parsed = format::ParseSegment(segment->mapped_->bytes());
  } catch (const CorruptFileError& e) {
    throw CorruptFileError(path + ": " + e.what());
  }
  int key_column = -1;
  std::vector<format::LeafColumns> columns;
  if (auto error = format::MatchColumns(schema, parsed.fields, &key_column, &columns)) {
    throw CorruptFileError(path + ": does not match the cache schema: " + *error);
  }
  int64_t start = 0;
  for (const format::RecordBatchView& record_batch : parsed.batches) {
    BatchView view;
    view.num_rows = record_batch.num_rows;
    view.key = record_batch.columns[key_column];
    for (size_t l = 0; l < schema.leaves.size(); ++l) {
      const LeafSpec& spec = schema.leaves[l];
      LeafView leaf;
      if (spec.kind == LeafKind::kTensor) {
        leaf.data = record_batch.columns[columns[l].data];
        leaf.shape = record_batch.columns[columns[l].shape];
        ArrowPrimitive element = parsed.fields[columns[l].data].type.element;
        leaf.storage_width = PrimitiveByteWidth(element);
        leaf.storage_per_element = StorageElementsPerElement(spec.dtype);
      } else {
        leaf.data = record_batch.columns[columns[l].blob];
        leaf.storage_width = 1;
      }
      view.leaves.push_back(leaf);
    }
    if (auto error = ValidateBatch(view, schema)) throw CorruptFileError(path + ": " + *error);
    segment->batch_starts_.push_back(start);
    start += view.num_rows;
    segment->batches_.push_back(std::move(view));
  }
  segment->num_rows_ = start;
  return segment;
}

Schema Segment::ReadSchema(const std::string& path) {
  auto mapped = MappedFile::Open(path);
  format::ParsedSegment parsed = format::ParseSegment(mapped->bytes());
  return format::SchemaFromSegment(parsed.fields, parsed.metadata);
}

std::pair<const BatchView*, int64_t> Segment::Locate(int64_t row) const {
  if (batches_.size() == 1) return {&batches_[0], row};
  auto it = std::upper_bound(batch_starts_.begin(), batch_starts_.end(), row);
  size_t index = static_cast<size_t>(it - batch_starts_.begin()) - 1;
  return {&batches_[index], row - batch_starts_[index]};
}

std::string SegmentFileName(uint64_t number) { return "segment_" + std::to_string(number) + ".arrow"; }

bool ParseSegmentFileName(const std::string& name, uint64_t* number) {
  constexpr std::string_view kPrefix = "segment_";
  constexpr std::string_view kSuffix = ".arrow";
  if (name.size() <= kPrefix.size() + kSuffix.size()) return false;
  if (name.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  if (name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0) return false;
  const char* begin = name.data() + kPrefix.size();
  const char* end = name.data() + name.size() - kSuffix.size();
  auto [ptr, ec] = std::from_chars(begin, end, *number);
  return ec == std::errc() && ptr == end;
}

}  // namespace torchcachex
