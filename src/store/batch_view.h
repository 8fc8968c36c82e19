// BatchView: the columns of one record batch (of a segment on disk, or of
// the pending in-memory buffer) arranged by leaf, and row accessors over it.
// Both sources share this representation, so the read path is one code path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "format/ipc_reader.h"
#include "format/segment_layout.h"
#include "torchcachex/schema.h"

namespace torchcachex {

// Columns of one leaf. `data` holds tensor elements (list<T>) or blob bytes
// (binary); `shape` is unused for blobs.
struct LeafView {
  format::ColumnView data;
  format::ColumnView shape;
  size_t storage_width = 0;   // bytes per Arrow element of `data` (0: bit-packed bool)
  size_t storage_per_element = 1;  // Arrow elements per tensor element (2 for complex)
};

struct BatchView {
  int64_t num_rows = 0;
  format::ColumnView key;
  std::vector<LeafView> leaves;  // in schema leaf order
};

// A leaf whose rows in one batch all have the same shape and lie back to
// back from the start of the data buffer: row r's Arrow elements are
// [r * elements, (r + 1) * elements). The read path then copies a row
// without reading its offsets or its shape (two dependent cache misses per
// row fewer).
struct UniformRows {
  int64_t elements = -1;       // Arrow elements per row; -1: rows differ
  std::vector<int64_t> shape;  // every row's shape (when uniform())
  bool uniform() const { return elements >= 0; }
};

// Summarizes a tensor leaf's rows in a batch of `num_rows`: uniform if no
// data or shape cell is null, every shape equals the first row's, every row
// holds NumElements(shape) * storage_per_element elements, and the data
// offsets start at 0 and advance by that much per row (what our writer and
// pyarrow's produce; other files take the general path). Bit-packed booleans and blobs are
// never uniform. Reads every offset and shape: call it once per batch, on
// validated rows.
UniformRows SummarizeRows(const LeafView& leaf, int64_t num_rows);

// Arranges one record batch of a segment file as a BatchView of `schema`,
// from the columns MatchColumns located among `fields`. Only arranges: the
// rows are checked by ValidateBatch.
BatchView ArrangeBatch(const format::RecordBatchView& record_batch,
                       const std::vector<format::Field>& fields, int key_column,
                       const std::vector<format::LeafColumns>& columns, const Schema& schema);

// The key of `row` (UTF-8 bytes).
inline std::string_view KeyAt(const BatchView& batch, int64_t row) {
  int64_t begin = batch.key.Offset(row);
  int64_t end = batch.key.Offset(row + 1);
  return {reinterpret_cast<const char*>(batch.key.values) + begin, static_cast<size_t>(end - begin)};
}

// Number of dimensions of a tensor cell.
inline size_t CellRank(const LeafView& leaf, int64_t row) {
  return static_cast<size_t>(leaf.shape.Offset(row + 1) - leaf.shape.Offset(row));
}

// Dimension `d` of a tensor cell.
inline int64_t CellDim(const LeafView& leaf, int64_t row, size_t d) {
  int64_t v;
  std::memcpy(&v, leaf.shape.values + (leaf.shape.Offset(row) + static_cast<int64_t>(d)) * 8, 8);
  return v;
}

// The shape of a tensor cell.
std::vector<int64_t> CellShape(const LeafView& leaf, int64_t row);

// Bytes of the tensor elements of a cell (as the torch dtype lays them out).
size_t CellTensorBytes(const LeafView& leaf, int64_t row, size_t element_size);

// Copies a tensor cell's elements into `dst` (CellTensorBytes bytes).
// Bit-packed Arrow booleans are expanded to one byte each.
void CopyTensorCell(const LeafView& leaf, int64_t row, std::byte* dst);

// Bytes of a blob cell.
std::span<const std::byte> BlobCell(const LeafView& leaf, int64_t row);

// True if the row's key and every leaf cell are non-null.
bool RowIsComplete(const BatchView& batch, int64_t row);

// Checks every complete row: shapes non-negative and consistent with the
// number of data elements for `schema`'s dtypes. Returns a description of the
// first inconsistency, or nullopt.
std::optional<std::string> ValidateBatch(const BatchView& batch, const Schema& schema);

}  // namespace torchcachex
