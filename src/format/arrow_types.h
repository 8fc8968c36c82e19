// The subset of Arrow types a segment uses, and their descriptions.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "torchcachex/dtype.h"

namespace torchcachex::format {

using KeyValueMetadata = std::vector<std::pair<std::string, std::string>>;

// utf8, binary, or list<primitive>. `large` selects the 64-bit-offset
// variants (large_utf8, large_binary, large_list) which we read but never write.
struct FieldType {
  enum class Kind : uint8_t { kUtf8, kBinary, kList };
  Kind kind = Kind::kUtf8;
  ArrowPrimitive element = ArrowPrimitive::kUInt8;  // for kList
  bool large = false;

  static FieldType Utf8() { return {Kind::kUtf8, ArrowPrimitive::kUInt8, false}; }
  static FieldType Binary() { return {Kind::kBinary, ArrowPrimitive::kUInt8, false}; }
  static FieldType List(ArrowPrimitive element) { return {Kind::kList, element, false}; }

  bool operator==(const FieldType& o) const {
    return kind == o.kind && large == o.large && (kind != Kind::kList || element == o.element);
  }
};

struct Field {
  std::string name;
  FieldType type;
  KeyValueMetadata metadata;  // e.g. {"torch_dtype", "torch.bfloat16"}
};

// Footer custom-metadata key of a segment's whole-file checksum: XXH3-64
// (seed 0, util/xxh3.h) of every byte before the footer, as 16 lowercase hex
// digits. The writer records this one.
inline constexpr const char* kChecksumMetadataKey = "torchcachex.xxh3";
// The same checksum computed with XXH64 (seed 0), as files written before
// XXH3 carry it: still verified when read. A footer with both counts the XXH3 one.
inline constexpr const char* kXxh64ChecksumMetadataKey = "torchcachex.xxh64";
// Footer custom-metadata key of the key column's checksum: XXH64 (seed 0) of,
// for every record batch in order, the key column's int32 offsets buffer
// (num_rows + 1 entries, the first 0) followed by its characters. Opening a
// cache reads the keys to build the index, so it verifies them with this;
// a damaged key could otherwise hide a damaged segment from the lazy check.
inline constexpr const char* kKeysChecksumMetadataKey = "torchcachex.keys_xxh64";

// The type as pyarrow prints it: "string", "binary", "list<item: float>",
// "list<item: int64>", "large_string", "large_list<item: double>", ...
// (pyarrow names: int8..int64, uint8..uint64, halffloat, float, double, bool).
std::string TypeToString(const FieldType& type);

// Value of `key` in `metadata`, or nullptr.
const std::string* FindMetadata(const KeyValueMetadata& metadata, const std::string& key);

}  // namespace torchcachex::format
