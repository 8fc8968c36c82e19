#include "store/segment.h"

#include <algorithm>
#include <charconv>

#include "format/segment_layout.h"
#include "torchcachex/errors.h"
#include "util/hash.h"

namespace torchcachex {

std::unique_ptr<Segment> Segment::Open(const std::string& path, uint64_t number, const Schema& schema) {
  auto segment = std::unique_ptr<Segment>(new Segment());
  segment->number_ = number;
  segment->path_ = path;
  segment->Load(schema, /*validate_rows=*/true);
  return segment;
}

void Segment::Map(const Schema& schema) {
  if (mapped()) return;
  // The file is immutable: its rows were validated when it was first opened.
  Load(schema, /*validate_rows=*/false);
}

void Segment::Unmap() {
  batches_.clear();
  mapped_.reset();
}

void Segment::Load(const Schema& schema, bool validate_rows) {
  auto mapped = MappedFile::Open(path_);
  format::ParsedSegment parsed;
  try {
    parsed = format::ParseSegment(mapped->bytes());
  } catch (const CorruptFileError& e) {
    throw CorruptFileError(path_ + ": " + e.what());
  }
  int key_column = -1;
  std::vector<format::LeafColumns> columns;
  if (auto error = format::MatchColumns(schema, parsed.fields, &key_column, &columns)) {
    throw CorruptFileError(path_ + ": does not match the cache schema: " + *error);
  }
  std::vector<BatchView> batches;
  std::vector<int64_t> starts;
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
        leaf.storage_width = PrimitiveByteWidth(parsed.fields[columns[l].data].type.element);
        leaf.storage_per_element = StorageElementsPerElement(spec.dtype);
      } else {
        leaf.data = record_batch.columns[columns[l].blob];
        leaf.storage_width = 1;
      }
      view.leaves.push_back(leaf);
    }
    if (validate_rows) {
      if (auto error = ValidateBatch(view, schema)) throw CorruptFileError(path_ + ": " + *error);
    }
    starts.push_back(start);
    start += view.num_rows;
    batches.push_back(std::move(view));
  }
  if (validate_rows) {
    num_rows_ = start;
  } else if (start != num_rows_) {
    throw CorruptFileError(path_ + ": changed on disk since it was opened");
  }
  if (const std::string* checksum = format::FindMetadata(parsed.footer_metadata, format::kChecksumMetadataKey)) {
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(checksum->data(), checksum->data() + checksum->size(), value, 16);
    if (ec != std::errc() || end != checksum->data() + checksum->size()) {
      throw CorruptFileError(path_ + ": malformed checksum '" + *checksum + "'");
    }
    expected_checksum_ = value;
    checksummed_bytes_ = parsed.footer_offset;
  }
  mapped_ = std::move(mapped);
  batches_ = std::move(batches);
  batch_starts_ = std::move(starts);
}

bool Segment::VerifyOnce(std::string* problem) const {
  std::call_once(verify_once_, [this] {
    if (integrity_.load() != 0) return;  // MarkVerified
    if (!expected_checksum_) {
      integrity_.store(1);
      return;
    }
    uint64_t actual = Xxh64(mapped_->bytes().first(checksummed_bytes_));
    if (actual == *expected_checksum_) {
      integrity_.store(1);
    } else {
      integrity_problem_ = path_ + ": checksum mismatch (the file is damaged); its rows will be recomputed";
      integrity_.store(2);
    }
  });
  if (integrity_.load() == 2) {
    if (problem != nullptr) *problem = integrity_problem_;
    return false;
  }
  return true;
}

void Segment::MarkVerified() const {
  integrity_.store(1);
  std::call_once(verify_once_, [] {});
}

Schema Segment::ReadSchema(const std::string& path) {
  auto mapped = MappedFile::Open(path);
  format::ParsedSegment parsed = format::ParseSegment(mapped->bytes());
  return format::SchemaFromSegment(parsed.fields, parsed.metadata);
}

std::pair<const BatchView*, int64_t> Segment::Locate(int64_t row) const {
  Touch();
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
