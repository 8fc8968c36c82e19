// Arrow IPC *file* reader for segments. Treats its input as untrusted: every
// flatbuffer offset, buffer range, list offset and length is bounds-checked,
// and any inconsistency throws CorruptFileError, never reads out of bounds.
//
// Supports what segments contain: utf8, binary, list<primitive> and their
// large_* variants, any number of record batches, validity bitmaps on
// top-level columns. Dictionary encoding and compression are rejected with
// CorruptFileError ("unsupported ...").
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <vector>

#include "format/arrow_types.h"

namespace torchcachex::format {

// A validated view of one column of one record batch, pointing into the
// file's bytes. Invariants established by ParseSegment:
//   0 <= Offset(0) <= Offset(1) <= ... <= Offset(num_rows) <= values_length
//   values[0 .. values_length * element width) lies inside the file
//   (for kBool elements, values_length counts bits).
struct ColumnView {
  const std::byte* offsets = nullptr;  // num_rows + 1 entries
  bool large_offsets = false;          // int64 offsets instead of int32
  const std::byte* values = nullptr;   // chars, or list child values
  int64_t values_length = 0;           // bytes (utf8/binary) or elements (list)
  const std::byte* validity = nullptr; // bitmap of num_rows bits, or null if no nulls

  int64_t Offset(int64_t i) const {
    if (large_offsets) {
      int64_t v;
      std::memcpy(&v, offsets + i * 8, 8);
      return v;
    }
    int32_t v;
    std::memcpy(&v, offsets + i * 4, 4);
    return v;
  }
  bool IsNull(int64_t row) const {
    return validity != nullptr &&
           ((static_cast<uint8_t>(validity[row >> 3]) >> (row & 7)) & 1) == 0;
  }
};

struct RecordBatchView {
  int64_t num_rows = 0;
  std::vector<ColumnView> columns;  // one per schema field, same order
};

struct ParsedSegment {
  std::vector<Field> fields;
  KeyValueMetadata metadata;  // schema-level custom metadata
  std::vector<RecordBatchView> batches;
  int64_t num_rows = 0;       // sum over batches
  KeyValueMetadata footer_metadata;  // Footer.custom_metadata (e.g. kChecksumMetadataKey)
  uint64_t footer_offset = 0;        // file offset where the footer flatbuffer starts
};

// The role of a buffer in its column, in Arrow IPC buffer order: validity,
// offsets, then for list columns the child's validity and values, for
// utf8/binary columns the value bytes.
enum class BufferRole { kValidity, kOffsets, kChildValidity, kValues };

// One buffer of a record batch body, bounds-checked, not yet read.
struct BodyBuffer {
  const Field* field;
  BufferRole role;
  std::span<const std::byte> bytes;
};

// Called by ParseSegment once per record batch, before it reads any of the
// batch's buffers, with all of them: lets a caller reading from a cold page
// cache prefetch the ones it will read.
using BodyBuffersHook = std::function<void(std::span<const BodyBuffer>)>;

// Parses a whole Arrow IPC file held in `file` (e.g. a memory map). The views
// point into `file`, which must outlive the result. Parsing reads the
// metadata (schema, footer, messages) and the offsets buffers, which it
// checks; never validity bitmaps or values.
ParsedSegment ParseSegment(std::span<const std::byte> file, const BodyBuffersHook& before_reading_body = {});

}  // namespace torchcachex::format
