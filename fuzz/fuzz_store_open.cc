// libFuzzer target: a whole Store opening a cache directory whose only
// segment file holds the input.
//
// One temporary directory is created per process and reused:
//   <tmp>/known/schema.json                 StoreFuzzSchema(), valid
//   <tmp>/known/segments/segment_0.arrow    the input
//   <tmp>/recover/segments/segment_0.arrow  the input, no schema.json (the
//                                           store recovers the schema from it)
// Each store is opened read-only (persist = false), looked up with every key
// the file holds plus keys it does not hold, and closed. Opening must never
// throw or crash (a bad file is a warning), and the store must serve exactly
// what the file holds, by the integrity rules of src/store/segment.h (both
// footer checksums on files we wrote, key-column checksum at open, whole-file
// checksum and, for a file with one, shapes against data at first use):
// every key of a valid, intact file (the last complete row of a key wins),
// with the cells the batch_view.h accessors read from the file; nothing from
// an invalid or damaged file, which is reported exactly once
// (stats().skipped_segments).
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "format/ipc_reader.h"
#include "format/schema_json.h"
#include "fuzz_util.h"
#include "torchcachex/errors.h"
#include "torchcachex/store.h"
#include "util/hash.h"
#include "util/xxh3.h"

using namespace torchcachex;
namespace fs = std::filesystem;

namespace {

struct Directory {
  std::string root;

  Directory() {
    std::string tmpl = (fs::temp_directory_path() / "tcx_fuzz_store_XXXXXX").string();
    FUZZ_CHECK(::mkdtemp(tmpl.data()) != nullptr, "mkdtemp");
    root = tmpl;
    fs::create_directories(root + "/known/segments");
    fs::create_directories(root + "/recover/segments");
    Write(root + "/known/schema.json", format::EncodeSchemaJson(fuzz::StoreFuzzSchema()));
  }
  ~Directory() {
    std::error_code ignored;
    fs::remove_all(root, ignored);
  }

  static void Write(const std::string& path, std::string_view bytes) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    FUZZ_CHECK(f != nullptr, "open " + path);
    FUZZ_CHECK(bytes.empty() || std::fwrite(bytes.data(), bytes.size(), 1, f) == 1, "write " + path);
    FUZZ_CHECK(std::fclose(f) == 0, "close " + path);
  }
};

// Removed at exit (a crashing run leaves it behind, with the crash input).
Directory& Dir() {
  static Directory dir;
  return dir;
}

// A footer checksum (16 hex digits): nullopt if absent; `malformed` set if
// present but not a number (Segment rejects such a file).
std::optional<uint64_t> FooterChecksum(const format::ParsedSegment& parsed, const char* key, bool* malformed) {
  const std::string* text = format::FindMetadata(parsed.footer_metadata, key);
  if (text == nullptr) return std::nullopt;
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value, 16);
  if (ec != std::errc() || end != text->data() + text->size()) *malformed = true;
  return value;
}

// The whole-file checksum, as Segment reads it: the XXH3 one if its key is
// present (malformed or not), else the XXH64 one of files written before XXH3.
struct WholeFileChecksum {
  uint64_t value;
  bool xxh3;
  bool Matches(std::span<const std::byte> file, const format::ParsedSegment& parsed) const {
    const std::span<const std::byte> covered = file.first(parsed.footer_offset);
    return (xxh3 ? Xxh3_64(covered) : Xxh64(covered)) == value;
  }
};
std::optional<WholeFileChecksum> FileChecksum(const format::ParsedSegment& parsed, bool* malformed) {
  if (auto value = FooterChecksum(parsed, format::kChecksumMetadataKey, malformed)) {
    return WholeFileChecksum{*value, true};
  }
  if (auto value = FooterChecksum(parsed, format::kXxh64ChecksumMetadataKey, malformed)) {
    return WholeFileChecksum{*value, false};
  }
  return std::nullopt;
}

// XXH64 of the key column as the writer records it (kKeysChecksumMetadataKey),
// or nullopt where the column is not laid out as our writer lays it out.
std::optional<uint64_t> KeyColumnChecksum(const std::vector<BatchView>& batches) {
  Xxh64Stream keys;
  for (const BatchView& batch : batches) {
    if (batch.key.large_offsets || batch.key.Offset(0) != 0) return std::nullopt;
    const auto rows = static_cast<size_t>(batch.num_rows);
    keys.Update(std::span<const std::byte>(batch.key.offsets, (rows + 1) * sizeof(int32_t)));
    keys.Update(std::span<const std::byte>(batch.key.values, static_cast<size_t>(batch.key.Offset(batch.num_rows))));
  }
  return keys.Digest();
}

// True if the file's leading schema message (the 8 bytes of continuation
// marker and length after the magic, then the message) mentions `key`. The
// store treats such a file as one of ours (it must carry both checksums)
// even if the footer's copy of the schema was damaged.
bool LeadingMessageMentions(std::span<const std::byte> file, std::string_view key) {
  if (file.size() < 16) return false;
  uint32_t continuation = 0;
  int32_t length = 0;
  std::memcpy(&continuation, file.data() + 8, 4);
  std::memcpy(&length, file.data() + 12, 4);
  if (continuation != 0xFFFFFFFFu || length <= 0) return false;
  const size_t end = std::min<size_t>(file.size(), 16 + static_cast<size_t>(length));
  const std::string_view message(reinterpret_cast<const char*>(file.data()) + 16, end - 16);
  return message.find(key) != std::string_view::npos;
}

// Whether a store without schema.json recovers a schema from `file`, and
// which (Segment::ReadSchema: a file that declares our schema metadata must
// carry a matching whole-file checksum).
std::optional<Schema> ExpectRecoveredSchema(std::span<const std::byte> file) {
  format::ParsedSegment parsed;
  try {
    parsed = format::ParseSegment(file);
  } catch (const CorruptFileError&) {
    return std::nullopt;
  }
  if (format::FindMetadata(parsed.metadata, format::kSchemaMetadataKey) != nullptr) {
    bool malformed = false;
    const std::optional<WholeFileChecksum> checksum = FileChecksum(parsed, &malformed);
    if (!checksum || malformed || !checksum->Matches(file, parsed)) return std::nullopt;
  }
  try {
    return format::SchemaFromSegment(parsed.fields, parsed.metadata);
  } catch (const CorruptFileError&) {
    return std::nullopt;
  }
}

// What a store with `schema` must serve from `file`, following the rules of
// src/store/segment.h: the file must parse and match the schema; a file that
// declares our schema metadata (in the footer's schema or in the leading
// schema message) must carry both footer checksums; a key-column
// checksum must match (checked at open). Shapes must agree with the data:
// checked at open for a file without a whole-file checksum, at first use for
// a file with one. A whole-file checksum that does not match, or shapes that
// do not agree, make the segment damaged at its first use (nothing is
// served).
struct Expected {
  bool loads = false;  // Segment::Open accepts the file
  bool intact = false; // verified at first use (checksum, shapes): rows are served
  // key -> cells of its last complete row (no cells when not intact: the
  // keys are only looked up, which finds the damage).
  std::map<std::string, std::vector<fuzz::Cell>> rows;
};

Expected Expect(std::span<const std::byte> file, const Schema& schema) {
  Expected e;
  format::ParsedSegment parsed;
  try {
    parsed = format::ParseSegment(file);
  } catch (const CorruptFileError&) {
    return e;
  }
  auto batches = fuzz::ArrangedBatches(parsed, schema);
  if (!batches) return e;
  bool malformed = false;
  const std::optional<WholeFileChecksum> checksum = FileChecksum(parsed, &malformed);
  const std::optional<uint64_t> keys_checksum = FooterChecksum(parsed, format::kKeysChecksumMetadataKey, &malformed);
  if (malformed) return e;
  const bool written_by_us = format::FindMetadata(parsed.metadata, format::kSchemaMetadataKey) != nullptr ||
                             LeadingMessageMentions(file, format::kSchemaMetadataKey);
  if (written_by_us && (!checksum || !keys_checksum)) return e;
  if (keys_checksum && KeyColumnChecksum(*batches) != keys_checksum) return e;
  const bool rows_valid = fuzz::RowsValid(*batches, schema);
  if (!checksum && !rows_valid) return e;
  e.loads = true;
  e.intact = rows_valid && (!checksum || checksum->Matches(file, parsed));
  for (const BatchView& batch : *batches) {
    for (int64_t row = 0; row < batch.num_rows; ++row) {
      if (!RowIsComplete(batch, row)) continue;
      std::vector<fuzz::Cell> cells;
      for (size_t l = 0; e.intact && l < schema.leaves.size(); ++l) {
        cells.push_back(fuzz::ReadCell(batch.leaves[l], schema.leaves[l], row));
      }
      e.rows[std::string(KeyAt(batch, row))] = std::move(cells);
    }
  }
  return e;
}

// Opens cache `module`, looks everything up and checks the answers.
void OpenAndCheck(const std::string& module, std::span<const std::byte> file, bool schema_known) {
  Options options;
  options.persist = false;  // read-only: nothing is written, the directory stays as it is
  std::unique_ptr<Store> store = Store::Open(Dir().root, module, options);  // must not throw
  (void)store->TakeWarnings();
  const std::optional<Schema> schema = store->schema();
  if (schema_known) {
    FUZZ_CHECK(schema && fuzz::SameSchema(*schema, fuzz::StoreFuzzSchema()), "schema.json is kept");
  } else {
    const std::optional<Schema> recovered = ExpectRecoveredSchema(file);
    FUZZ_CHECK(schema.has_value() == recovered.has_value(), "a schema is recovered iff the file declares one");
    if (schema) FUZZ_CHECK(fuzz::SameSchema(*schema, *recovered), "the recovered schema is the file's");
  }
  Expected expected;
  if (schema) expected = Expect(file, *schema);

  std::vector<std::string> keys;
  for (const auto& [key, cells] : expected.rows) keys.push_back(key);
  for (const char* absent : {"", "absent", "sample_0"}) {
    if (!expected.rows.count(absent)) keys.push_back(absent);
  }
  std::vector<std::string_view> views(keys.begin(), keys.end());
  GetResult result = store->GetBatch(views);

  FUZZ_CHECK(result.found.size() == keys.size(), "one found flag per key");
  // Every indexed key was looked up, so a damaged segment has been found,
  // reported and dropped from the index by now.
  const bool served_file = expected.loads && expected.intact;
  const std::string state = " (loads " + std::to_string(expected.loads) + ", intact " +
                            std::to_string(expected.intact) + ", rows " + std::to_string(expected.rows.size()) + ")";
  FUZZ_CHECK(store->size() == (served_file ? expected.rows.size() : 0),
             "size() counts the file's keys: " + std::to_string(store->size()) + state);
  const bool reported = !expected.loads || (!expected.intact && !expected.rows.empty());
  FUZZ_CHECK(store->GetStats().skipped_segments == (reported ? 1u : 0u),
             "a segment that is not served is reported once: skipped " +
                 std::to_string(store->GetStats().skipped_segments) + state);
  if (!schema) {
    FUZZ_CHECK(result.leaves.empty(), "no leaves without a schema");
    return;
  }
  FUZZ_CHECK(result.leaves.size() == schema->leaves.size(), "one LeafResult per leaf");
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = expected.rows.find(keys[i]);
    const bool served = it != expected.rows.end() && expected.intact;
    FUZZ_CHECK(result.found[i] == (served ? 1 : 0), "found flag of '" + keys[i] + "'");
    for (size_t l = 0; l < schema->leaves.size(); ++l) {
      const LeafSpec& spec = schema->leaves[l];
      const LeafResult& leaf = result.leaves[l];
      if (leaf.is_dense) {
        FUZZ_CHECK(spec.kind == LeafKind::kTensor, "only tensors are dense");
        FUZZ_CHECK(leaf.row_bytes == fuzz::NumElements(leaf.shape) * ElementSize(spec.dtype), "dense row bytes");
        const std::byte* dense_row = leaf.dense.get() + i * leaf.row_bytes;
        if (!served) {
          for (size_t b = 0; b < leaf.row_bytes; ++b) FUZZ_CHECK(dense_row[b] == std::byte{0}, "missing rows are zero");
        } else {
          const fuzz::Cell& cell = it->second[l];
          FUZZ_CHECK(cell.shape == leaf.shape, "dense shape");
          FUZZ_CHECK(cell.bytes.size() == leaf.row_bytes &&
                         (leaf.row_bytes == 0 ||
                          std::memcmp(dense_row, cell.bytes.data(), leaf.row_bytes) == 0),
                     "dense bytes");
        }
        continue;
      }
      FUZZ_CHECK(leaf.rows.size() == keys.size() && leaf.shapes.size() == keys.size(), "one row per key");
      FUZZ_CHECK(leaf.rows[i].has_value() == served, "row presence");
      if (!served) continue;
      const fuzz::Cell& cell = it->second[l];
      FUZZ_CHECK(*leaf.rows[i] == cell.bytes, "row bytes");
      if (spec.kind == LeafKind::kTensor) FUZZ_CHECK(leaf.shapes[i] == cell.shape, "row shape");
    }
  }
  FUZZ_CHECK(store->Contains("absent") == (served_file && expected.rows.count("absent") > 0),
             "Contains");
  store->Close();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> file(reinterpret_cast<const std::byte*>(data), size);
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  Directory::Write(Dir().root + "/known/segments/segment_0.arrow", bytes);
  Directory::Write(Dir().root + "/recover/segments/segment_0.arrow", bytes);
  OpenAndCheck("known", file, /*schema_known=*/true);
  OpenAndCheck("recover", file, /*schema_known=*/false);
  return 0;
}
