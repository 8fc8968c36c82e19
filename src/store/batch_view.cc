#include "store/batch_view.h"

#include <cstdint>
#include <cstring>

namespace torchcachex {

BatchView ArrangeBatch(const format::RecordBatchView& record_batch,
                       const std::vector<format::Field>& fields, int key_column,
                       const std::vector<format::LeafColumns>& columns, const Schema& schema) {
  BatchView view;
  view.num_rows = record_batch.num_rows;
  view.key = record_batch.columns[key_column];
  for (size_t l = 0; l < schema.leaves.size(); ++l) {
    const LeafSpec& spec = schema.leaves[l];
    LeafView leaf;
    if (spec.kind == LeafKind::kTensor) {
      leaf.data = record_batch.columns[columns[l].data];
      leaf.shape = record_batch.columns[columns[l].shape];
      leaf.storage_width = PrimitiveByteWidth(fields[columns[l].data].type.element);
      leaf.storage_per_element = StorageElementsPerElement(spec.dtype);
    } else {
      leaf.data = record_batch.columns[columns[l].blob];
      leaf.storage_width = 1;
    }
    view.leaves.push_back(leaf);
  }
  return view;
}

UniformRows SummarizeRows(const LeafView& leaf, int64_t num_rows) {
  UniformRows summary;
  if (num_rows == 0 || leaf.storage_width == 0 || leaf.shape.offsets == nullptr) return summary;
  const std::vector<int64_t> shape = CellShape(leaf, 0);
  int64_t elements = static_cast<int64_t>(leaf.storage_per_element);
  for (int64_t dim : shape) {
    if (dim < 0 || (dim > 0 && elements > INT64_MAX / dim)) return summary;
    elements *= dim;
  }
  const size_t rank = shape.size();
  if (leaf.data.Offset(0) != 0) return summary;
  const int64_t first_shape = leaf.shape.Offset(0);
  for (int64_t row = 0; row < num_rows; ++row) {
    if (leaf.data.IsNull(row) || leaf.shape.IsNull(row)) return summary;
    if (leaf.data.Offset(row + 1) != (row + 1) * elements) return summary;
    if (leaf.shape.Offset(row + 1) - first_shape != (row + 1) * static_cast<int64_t>(rank)) return summary;
    if (rank > 0 && std::memcmp(leaf.shape.values + (first_shape + row * static_cast<int64_t>(rank)) * 8,
                                shape.data(), rank * 8) != 0) {
      return summary;
    }
  }
  summary.elements = elements;
  summary.shape = shape;
  return summary;
}

std::vector<int64_t> CellShape(const LeafView& leaf, int64_t row) {
  size_t rank = CellRank(leaf, row);
  std::vector<int64_t> shape(rank);
  if (rank > 0) {
    std::memcpy(shape.data(), leaf.shape.values + leaf.shape.Offset(row) * 8, rank * 8);
  }
  return shape;
}

size_t CellTensorBytes(const LeafView& leaf, int64_t row, size_t element_size) {
  int64_t count = leaf.data.Offset(row + 1) - leaf.data.Offset(row);
  return static_cast<size_t>(count) / leaf.storage_per_element * element_size;
}

void CopyTensorCell(const LeafView& leaf, int64_t row, std::byte* dst) {
  int64_t begin = leaf.data.Offset(row);
  int64_t count = leaf.data.Offset(row + 1) - begin;
  if (leaf.storage_width == 0) {  // Arrow bit-packed bool -> one byte per element
    for (int64_t i = 0; i < count; ++i) {
      int64_t bit = begin + i;
      dst[i] = static_cast<std::byte>((static_cast<uint8_t>(leaf.data.values[bit >> 3]) >> (bit & 7)) & 1);
    }
    return;
  }
  // An empty cell may come with null pointers (the data() of an empty vector,
  // an absent zero-length buffer): memcpy must not see them, even for 0 bytes.
  if (count == 0) return;
  std::memcpy(dst, leaf.data.values + begin * static_cast<int64_t>(leaf.storage_width),
              static_cast<size_t>(count) * leaf.storage_width);
}

std::span<const std::byte> BlobCell(const LeafView& leaf, int64_t row) {
  int64_t begin = leaf.data.Offset(row);
  int64_t end = leaf.data.Offset(row + 1);
  return {leaf.data.values + begin, static_cast<size_t>(end - begin)};
}

bool RowIsComplete(const BatchView& batch, int64_t row) {
  if (batch.key.IsNull(row)) return false;
  for (const LeafView& leaf : batch.leaves) {
    if (leaf.data.IsNull(row)) return false;
    if (leaf.shape.offsets != nullptr && leaf.shape.IsNull(row)) return false;
  }
  return true;
}

std::optional<std::string> ValidateBatch(const BatchView& batch, const Schema& schema) {
  for (size_t l = 0; l < schema.leaves.size(); ++l) {
    if (schema.leaves[l].kind != LeafKind::kTensor) continue;
    const LeafView& leaf = batch.leaves[l];
    for (int64_t row = 0; row < batch.num_rows; ++row) {
      if (!RowIsComplete(batch, row)) continue;
      size_t rank = CellRank(leaf, row);
      // numel of the shape, saturating: a product beyond the element count is an error anyway.
      uint64_t numel = 1;
      for (size_t d = 0; d < rank; ++d) {
        int64_t dim = CellDim(leaf, row, d);
        if (dim < 0) return "negative dimension in column '" + schema.leaves[l].ShapeColumn() + "'";
        if (numel != 0 && dim != 0 && numel > (uint64_t{1} << 62) / static_cast<uint64_t>(dim)) {
          return "shape too large in column '" + schema.leaves[l].ShapeColumn() + "'";
        }
        numel *= static_cast<uint64_t>(dim);
      }
      uint64_t count = static_cast<uint64_t>(leaf.data.Offset(row + 1) - leaf.data.Offset(row));
      if (count != numel * leaf.storage_per_element) {
        return "row " + std::to_string(row) + " of column '" + schema.leaves[l].DataColumn() +
               "' holds " + std::to_string(count) + " elements but its shape needs " +
               std::to_string(numel * leaf.storage_per_element);
      }
    }
  }
  return std::nullopt;
}

}  // namespace torchcachex
