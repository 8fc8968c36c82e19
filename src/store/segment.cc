#include "store/segment.h"

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <string_view>
#include <vector>

#include "format/segment_layout.h"
#include "torchcachex/errors.h"
#include "util/hash.h"
#include "util/xxh3.h"

namespace torchcachex {

namespace {

// The checksum recorded in the footer under `key` (16 hex digits), if any.
std::optional<uint64_t> ChecksumFromFooter(const format::ParsedSegment& parsed, const char* key,
                                           const std::string& path) {
  const std::string* text = format::FindMetadata(parsed.footer_metadata, key);
  if (text == nullptr) return std::nullopt;
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value, 16);
  if (ec != std::errc() || end != text->data() + text->size()) {
    throw CorruptFileError(path + ": malformed checksum '" + *text + "'");
  }
  return value;
}

// True if the file's leading schema message (covered by the checksum, unlike
// the footer's copy of the schema) declares our schema metadata key. Flips in
// the footer alone can then never make a file of ours look like one written by
// another tool (which carries no checksum and would be trusted).
bool SchemaMessageDeclaresOurs(std::span<const std::byte> file) {
  constexpr size_t kStart = 8;  // "ARROW1\0\0"
  if (file.size() < kStart + 8) return false;
  uint32_t continuation = 0;
  int32_t length = 0;
  std::memcpy(&continuation, file.data() + kStart, 4);
  std::memcpy(&length, file.data() + kStart + 4, 4);
  if (continuation != 0xFFFFFFFFu || length <= 0) return false;
  const size_t end = std::min(file.size(), kStart + 8 + static_cast<size_t>(length));
  const std::string_view message(reinterpret_cast<const char*>(file.data()) + kStart + 8,
                                 end - kStart - 8);
  return message.find(format::kSchemaMetadataKey) != std::string_view::npos;
}

// Opening a segment reads its metadata (leading schema and record batch
// messages, trailing footer), its key column and the offsets of every
// column, but no tensor data or blob bytes, and for files of ours no shapes
// either: those are read when a row is first served. From a cold page cache,
// readahead around these scattered reads would read the whole file (three
// times the bytes needed for rows of 16 floats), so while opening readahead
// is off and exactly these regions are prefetched, asynchronously, in one
// request per run of nearby buffers. Afterwards the mapping is advised for
// serving rows (MappedFile::AdviseRowReads).
class OpenPrefetcher {
 public:
  explicit OpenPrefetcher(const MappedFile& mapped) : mapped_(mapped) {
    mapped_.AdviseScatteredReads();
    const std::span<const std::byte> file = mapped_.bytes();
    constexpr size_t kMetadataBytes = size_t{8} << 10;
    mapped_.Prefetch(file.first(std::min(file.size(), kMetadataBytes)));
    mapped_.Prefetch(file.last(std::min(file.size(), kMetadataBytes)));
  }
  ~OpenPrefetcher() { mapped_.AdviseRowReads(); }
  OpenPrefetcher(const OpenPrefetcher&) = delete;
  OpenPrefetcher& operator=(const OpenPrefetcher&) = delete;

  // A ParseSegment hook: prefetches the validity and offsets buffers of a
  // record batch, and the key bytes.
  void BeforeReadingBody(std::span<const format::BodyBuffer> buffers) const {
    constexpr size_t kMaxGap = size_t{16} << 10;  // nearer regions are read in one request
    std::vector<std::span<const std::byte>> wanted;
    for (const format::BodyBuffer& buffer : buffers) {
      if (buffer.bytes.empty()) continue;
      if (buffer.role == format::BufferRole::kValues && buffer.field->name != format::kKeyColumn) continue;
      wanted.push_back(buffer.bytes);
    }
    std::sort(wanted.begin(), wanted.end(), [](auto a, auto b) { return a.data() < b.data(); });
    for (size_t i = 0; i < wanted.size();) {
      const std::byte* begin = wanted[i].data();
      const std::byte* end = begin + wanted[i].size();
      for (++i; i < wanted.size() && wanted[i].data() - end <= static_cast<std::ptrdiff_t>(kMaxGap); ++i) {
        end = std::max(end, wanted[i].data() + wanted[i].size());
      }
      mapped_.Prefetch({begin, static_cast<size_t>(end - begin)});
    }
  }

  // Prefetches the shapes of `batches`' tensor cells (before ValidateBatch).
  void BeforeReadingShapes(const std::vector<BatchView>& batches) const {
    for (const BatchView& batch : batches) {
      for (const LeafView& leaf : batch.leaves) {
        if (leaf.shape.values == nullptr) continue;
        mapped_.Prefetch({leaf.shape.values, static_cast<size_t>(leaf.shape.values_length) * sizeof(int64_t)});
      }
    }
  }

 private:
  const MappedFile& mapped_;
};

}  // namespace

std::optional<Segment::FileChecksum> Segment::FileChecksumFromFooter(const format::ParsedSegment& parsed,
                                                                     const std::string& path) {
  if (auto value = ChecksumFromFooter(parsed, format::kChecksumMetadataKey, path)) {
    return FileChecksum{*value, &Xxh3_64};
  }
  if (auto value = ChecksumFromFooter(parsed, format::kXxh64ChecksumMetadataKey, path)) {
    return FileChecksum{*value, &Xxh64};
  }
  return std::nullopt;
}

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
  const OpenPrefetcher prefetcher(*mapped);
  format::ParsedSegment parsed;
  try {
    parsed = format::ParseSegment(mapped->bytes(), [&](std::span<const format::BodyBuffer> buffers) {
      prefetcher.BeforeReadingBody(buffers);
    });
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
    starts.push_back(start);
    batches.push_back(ArrangeBatch(record_batch, parsed.fields, key_column, columns, schema));
    start += batches.back().num_rows;
  }
  if (validate_rows) {
    num_rows_ = start;
  } else if (start != num_rows_) {
    throw CorruptFileError(path_ + ": changed on disk since it was opened");
  }
  // A file that declares our schema metadata was written by torchcachex and
  // must carry both checksums: damage to the (unchecksummed) footer must not
  // be able to pass a damaged file off as one written by another tool.
  const bool written_by_us = format::FindMetadata(parsed.metadata, format::kSchemaMetadataKey) != nullptr ||
                             SchemaMessageDeclaresOurs(mapped->bytes());
  const auto checksum = FileChecksumFromFooter(parsed, path_);
  if (written_by_us && (!checksum || !format::FindMetadata(parsed.footer_metadata,
                                                           format::kKeysChecksumMetadataKey))) {
    throw CorruptFileError(path_ + ": the footer lacks its checksums (the file is damaged)");
  }
  if (validate_rows) {
    VerifyKeyChecksum(parsed, batches);
    if (checksum) {
      rows_validated_ = false;  // with the checksum, by VerifyOnce
    } else {
      prefetcher.BeforeReadingShapes(batches);
      for (const BatchView& batch : batches) {
        if (auto error = ValidateBatch(batch, schema)) throw CorruptFileError(path_ + ": " + *error);
      }
    }
  }
  if (checksum) {
    expected_checksum_ = checksum;
    checksummed_bytes_ = parsed.footer_offset;
  }
  mapped_ = std::move(mapped);
  batches_ = std::move(batches);
  batch_starts_ = std::move(starts);
}

void Segment::VerifyKeyChecksum(const format::ParsedSegment& parsed,
                                const std::vector<BatchView>& batches) const {
  std::optional<uint64_t> expected = ChecksumFromFooter(parsed, format::kKeysChecksumMetadataKey, path_);
  if (!expected) return;  // written by another tool
  Xxh64Stream keys;
  for (const BatchView& batch : batches) {
    // Our writer's layout; anything else cannot match the recorded checksum.
    if (batch.key.large_offsets || batch.key.Offset(0) != 0) {
      throw CorruptFileError(path_ + ": key column checksum mismatch (the file is damaged)");
    }
    const auto rows = static_cast<size_t>(batch.num_rows);
    keys.Update(std::span<const std::byte>(batch.key.offsets, (rows + 1) * sizeof(int32_t)));
    keys.Update(std::span<const std::byte>(batch.key.values,
                                           static_cast<size_t>(batch.key.Offset(batch.num_rows))));
  }
  if (keys.Digest() != *expected) {
    throw CorruptFileError(path_ + ": key column checksum mismatch (the file is damaged)");
  }
}

bool Segment::VerifyOnce(const Schema& schema, std::string* problem) const {
  std::call_once(verify_once_, [&] {
    if (!marked_verified_) {
      if (expected_checksum_ &&
          expected_checksum_->hash(mapped_->bytes().first(checksummed_bytes_)) != expected_checksum_->value) {
        integrity_problem_ = path_ + ": checksum mismatch (the file is damaged); its rows will be recomputed";
        integrity_.store(2);
        return;
      }
      if (!rows_validated_) {
        for (const BatchView& batch : batches_) {
          if (auto error = ValidateBatch(batch, schema)) {
            integrity_problem_ = path_ + ": " + *error + "; its rows will be recomputed";
            integrity_.store(2);
            return;
          }
        }
      }
    }
    // The rows are valid: summarize them before anyone can serve them.
    uniform_.resize(batches_.size());
    for (size_t b = 0; b < batches_.size(); ++b) {
      for (size_t l = 0; l < batches_[b].leaves.size(); ++l) {
        uniform_[b].push_back(schema.leaves[l].kind == LeafKind::kTensor
                                  ? SummarizeRows(batches_[b].leaves[l], batches_[b].num_rows)
                                  : UniformRows{});
      }
    }
    integrity_.store(1, std::memory_order_release);
  });
  if (integrity_.load() == 2) {
    if (problem != nullptr) *problem = integrity_problem_;
    return false;
  }
  return true;
}

void Segment::MarkVerified() const { marked_verified_ = true; }

Schema Segment::ReadSchema(const std::string& path) {
  auto mapped = MappedFile::Open(path);
  format::ParsedSegment parsed = format::ParseSegment(mapped->bytes());
  // The schema is trusted for the whole cache: verify the file first.
  if (format::FindMetadata(parsed.metadata, format::kSchemaMetadataKey) != nullptr) {
    const auto checksum = FileChecksumFromFooter(parsed, path);
    if (!checksum || checksum->hash(mapped->bytes().first(parsed.footer_offset)) != checksum->value) {
      throw CorruptFileError(path + ": checksum mismatch (the file is damaged)");
    }
  }
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
