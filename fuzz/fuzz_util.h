// Helpers shared by the libFuzzer targets in fuzz/: oracles that abort on a
// violated invariant, and the read path of a segment exactly as the store
// drives it (src/store/segment.cc), so a target exercises everything a
// damaged or hostile file can reach, not only the parser.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "format/ipc_reader.h"
#include "format/segment_layout.h"
#include "store/batch_view.h"
#include "torchcachex/dtype.h"
#include "torchcachex/schema.h"

namespace torchcachex::fuzz {

// Aborts (a crash libFuzzer reports and minimizes) when `ok` is false.
#define FUZZ_CHECK(ok, what)                                                        \
  do {                                                                              \
    if (!(ok)) {                                                                    \
      std::fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s (%s)\n", __FILE__, __LINE__, \
                   #ok, std::string(what).c_str());                                 \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)

// Reads every byte of [p, p + n) so that AddressSanitizer sees any read
// outside the input; the result feeds a volatile sink so it is not optimized
// away.
inline void Touch(const std::byte* p, size_t n) {
  static volatile uint8_t sink;
  uint8_t acc = 0;
  for (size_t i = 0; i < n; ++i) acc ^= static_cast<uint8_t>(p[i]);
  sink = acc;
}

inline bool Inside(std::span<const std::byte> file, const std::byte* p, uint64_t n) {
  const std::byte* begin = file.data();
  const std::byte* end = begin + file.size();
  return p >= begin && p <= end && n <= static_cast<uint64_t>(end - p);
}

// Checks the invariants ipc_reader.h promises for every column view of a
// parsed segment and reads every byte the views cover.
inline void CheckParsedSegment(std::span<const std::byte> file, const format::ParsedSegment& parsed) {
  int64_t total = 0;
  for (const format::RecordBatchView& batch : parsed.batches) {
    FUZZ_CHECK(batch.num_rows >= 0, "negative row count");
    FUZZ_CHECK(batch.columns.size() == parsed.fields.size(), "one column view per field");
    total += batch.num_rows;
    for (size_t c = 0; c < batch.columns.size(); ++c) {
      const format::ColumnView& col = batch.columns[c];
      const format::FieldType& type = parsed.fields[c].type;
      FUZZ_CHECK(col.large_offsets == type.large, "offset width follows the type");
      const uint64_t width = col.large_offsets ? 8 : 4;
      // Offsets either lie in the file or are the shared all-zero buffer of an empty column.
      if (!Inside(file, col.offsets, (static_cast<uint64_t>(batch.num_rows) + 1) * width)) {
        FUZZ_CHECK(batch.num_rows == 0 && col.Offset(0) == 0, "offsets outside the file");
      }
      FUZZ_CHECK(col.Offset(0) >= 0, "negative first offset");
      for (int64_t r = 0; r < batch.num_rows; ++r) {
        FUZZ_CHECK(col.Offset(r) <= col.Offset(r + 1), "offsets decrease");
      }
      FUZZ_CHECK(col.Offset(batch.num_rows) <= col.values_length, "last offset past the values");
      uint64_t value_bytes = static_cast<uint64_t>(col.values_length);
      if (type.kind == format::FieldType::Kind::kList) {
        const size_t w = PrimitiveByteWidth(type.element);
        value_bytes = w == 0 ? (value_bytes + 7) / 8 : value_bytes * w;
      }
      if (value_bytes > 0) {
        FUZZ_CHECK(Inside(file, col.values, value_bytes), "values outside the file");
        Touch(col.values, value_bytes);
      }
      if (col.validity != nullptr) {
        const uint64_t bitmap = (static_cast<uint64_t>(batch.num_rows) + 7) / 8;
        FUZZ_CHECK(Inside(file, col.validity, bitmap), "validity bitmap outside the file");
        for (int64_t r = 0; r < batch.num_rows; ++r) (void)col.IsNull(r);
      }
    }
  }
  FUZZ_CHECK(total == parsed.num_rows, "num_rows is the sum over batches");
  FUZZ_CHECK(parsed.footer_offset <= file.size(), "footer offset inside the file");
}

// The BatchViews of `parsed` for `schema`, arranged as Segment::Load
// arranges them; nullopt where the columns do not match the schema. Rows
// are not validated (see SegmentBatches).
inline std::optional<std::vector<BatchView>> ArrangedBatches(const format::ParsedSegment& parsed,
                                                             const Schema& schema) {
  int key_column = -1;
  std::vector<format::LeafColumns> columns;
  if (format::MatchColumns(schema, parsed.fields, &key_column, &columns)) return std::nullopt;
  FUZZ_CHECK(key_column >= 0 && static_cast<size_t>(key_column) < parsed.fields.size(), "key column");
  FUZZ_CHECK(columns.size() == schema.leaves.size(), "one LeafColumns per leaf");
  std::vector<BatchView> batches;
  for (const format::RecordBatchView& record_batch : parsed.batches) {
    batches.push_back(ArrangeBatch(record_batch, parsed.fields, key_column, columns, schema));
  }
  return batches;
}

// True if every batch passes ValidateBatch (shapes consistent with data).
inline bool RowsValid(const std::vector<BatchView>& batches, const Schema& schema) {
  for (const BatchView& batch : batches) {
    if (ValidateBatch(batch, schema)) return false;
  }
  return true;
}

// ArrangedBatches whose rows pass ValidateBatch, or nullopt: the batches
// whose cells may be read.
inline std::optional<std::vector<BatchView>> SegmentBatches(const format::ParsedSegment& parsed,
                                                            const Schema& schema) {
  auto batches = ArrangedBatches(parsed, schema);
  if (!batches || !RowsValid(*batches, schema)) return std::nullopt;
  return batches;
}

inline uint64_t NumElements(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    FUZZ_CHECK(d >= 0, "negative dimension served");
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

// One served cell: its shape (tensors) and bytes.
struct Cell {
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};

// Reads a cell of a complete row through the batch_view.h accessors, as
// Store::GetBatch does, checking that they agree with each other. The copy
// goes to a buffer of exactly CellTensorBytes bytes, so AddressSanitizer
// catches a copy that writes more.
inline Cell ReadCell(const LeafView& leaf, const LeafSpec& spec, int64_t row) {
  Cell cell;
  if (spec.kind == LeafKind::kBlob) {
    std::span<const std::byte> blob = BlobCell(leaf, row);
    cell.bytes.assign(blob.begin(), blob.end());
    return cell;
  }
  const size_t rank = CellRank(leaf, row);
  cell.shape = CellShape(leaf, row);
  FUZZ_CHECK(cell.shape.size() == rank, "CellShape has CellRank dimensions");
  for (size_t d = 0; d < rank; ++d) FUZZ_CHECK(CellDim(leaf, row, d) == cell.shape[d], "CellDim");
  const size_t element_size = ElementSize(spec.dtype);
  const size_t bytes = CellTensorBytes(leaf, row, element_size);
  FUZZ_CHECK(bytes == NumElements(cell.shape) * element_size, "tensor bytes match the shape");
  std::unique_ptr<std::byte[]> exact(new std::byte[bytes == 0 ? 1 : bytes]);
  CopyTensorCell(leaf, row, exact.get());
  cell.bytes.assign(exact.get(), exact.get() + bytes);
  return cell;
}

// Walks every row of `batches`: every key, and every cell of complete rows.
inline void WalkBatches(const std::vector<BatchView>& batches, const Schema& schema) {
  for (const BatchView& batch : batches) {
    FUZZ_CHECK(batch.leaves.size() == schema.leaves.size(), "one LeafView per leaf");
    for (int64_t row = 0; row < batch.num_rows; ++row) {
      std::string_view key = KeyAt(batch, row);
      Touch(reinterpret_cast<const std::byte*>(key.data()), key.size());
      if (!RowIsComplete(batch, row)) continue;
      for (size_t l = 0; l < schema.leaves.size(); ++l) {
        (void)ReadCell(batch.leaves[l], schema.leaves[l], row);
      }
    }
  }
}

// The schema of the cache fuzz_store_open opens (and of its seed corpus): a
// dict output with a float tensor, a bool tensor and a blob, so both tensor
// copy paths (byte-wide and Arrow bit-packed bools) and blobs are reached.
inline Schema StoreFuzzSchema() {
  Schema schema;
  schema.output_structure = "dict";
  schema.leaves.push_back({"x", LeafKind::kTensor, DType::kFloat32});
  schema.leaves.push_back({"m", LeafKind::kTensor, DType::kBool});
  schema.leaves.push_back({"meta", LeafKind::kBlob, DType::kUInt8});
  return schema;
}

// Field-by-field equality of schemas (Schema::DescribeDifference ignores the
// structure and output_structure).
inline bool SameSchema(const Schema& a, const Schema& b) {
  if (a.leaves.size() != b.leaves.size()) return false;
  for (size_t i = 0; i < a.leaves.size(); ++i) {
    if (a.leaves[i].name != b.leaves[i].name || a.leaves[i].kind != b.leaves[i].kind) return false;
    if (a.leaves[i].kind == LeafKind::kTensor && a.leaves[i].dtype != b.leaves[i].dtype) return false;
  }
  return a.output_structure == b.output_structure && a.structure == b.structure;
}

}  // namespace torchcachex::fuzz
