// Arrow IPC *file* writer for segments: schema, one record batch, footer.
//
// Layout written (Arrow columnar format, IPC file format, metadata V5):
//   "ARROW1\0\0" | schema message | record batch message + body | footer |
//   int32 footer length | "ARROW1"
// Body buffers are 8-byte aligned and padded; no validity buffers are
// written (null_count is 0 everywhere); no compression.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "format/arrow_types.h"

namespace torchcachex::format {

// One column ready to be written: its Arrow buffers, borrowed.
struct ColumnBuffers {
  Field field;                        // kUtf8, kBinary or kList (never `large`)
  std::span<const int32_t> offsets;   // num_rows + 1 entries, offsets[0] == 0
  std::span<const std::byte> values;  // chars, or list child values
                                      // (offsets.back() * element width bytes)
};

struct SegmentTable {
  int64_t num_rows = 0;
  std::vector<ColumnBuffers> columns;
  KeyValueMetadata metadata;  // schema-level custom metadata
  // Index of the utf8 key column, whose checksum the footer records
  // (kKeysChecksumMetadataKey); -1 for none.
  int key_column = -1;
};

// Receives the encoded file in order, in pieces. May throw (e.g. IOError).
using ByteSink = std::function<void(std::span<const std::byte>)>;

// Encodes `table` and passes the bytes to `sink` in file order, without
// copying the column buffers. Returns the total number of bytes written.
// Throws InvalidArgumentError if the table is inconsistent (offsets length,
// values length, non-monotonic offsets).
uint64_t WriteSegment(const SegmentTable& table, const ByteSink& sink);

// Convenience for tests: the whole file in memory.
std::vector<std::byte> EncodeSegment(const SegmentTable& table);

}  // namespace torchcachex::format
