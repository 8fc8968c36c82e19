#include "store/pending_batch.h"

#include <cstring>
#include <limits>

#include "format/segment_layout.h"
#include "util/memory.h"
#include "util/stream_copy.h"

namespace torchcachex {
namespace {

constexpr size_t kMaxOffset = static_cast<size_t>(std::numeric_limits<int32_t>::max());

format::ColumnView ViewOf(std::span<const int32_t> offsets, const std::byte* values,
                          int64_t values_length) {
  format::ColumnView view;
  view.offsets = reinterpret_cast<const std::byte*>(offsets.data());
  view.large_offsets = false;
  view.values = values;
  view.values_length = values_length;
  return view;
}

void AppendBytes(LargeVector<std::byte>& out, const std::byte* data, size_t size) {
  if (size > 0) out.insert(out.end(), data, data + size);
}

// Row bytes: streamed past the caller's caches (the writer reads them on
// another core).
template <typename Allocator>
void AppendStreamed(std::vector<std::byte, Allocator>& out, const std::byte* data, size_t size) {
  if (size == 0) return;
  const size_t old_size = out.size();
  out.resize(old_size + size);
  StreamCopy(out.data() + old_size, data, size);
}

}  // namespace

PendingBatch::PendingBatch(const Schema& schema)
    : schema_(schema),
      fields_(format::SegmentFields(schema)),
      metadata_(format::SegmentMetadata(schema)),
      leaves_(schema.leaves.size()) {
  for (size_t l = 0; l < leaves_.size(); ++l) {
    if (schema.leaves[l].kind == LeafKind::kTensor) {
      leaves_[l].storage_width = PrimitiveByteWidth(StorageType(schema.leaves[l].dtype));
    }
  }
  UpdateView();
}

bool PendingBatch::WouldOverflow(size_t row_bytes) const {
  return bytes_ + row_bytes > kMaxOffset;
}

int64_t PendingBatch::Append(std::string_view key, std::span<const LeafRows> leaves, size_t i) {
  AppendBytes(key_chars_, reinterpret_cast<const std::byte*>(key.data()), key.size());
  key_offsets_.push_back(static_cast<int32_t>(key_chars_.size()));
  bytes_ += key.size();
  for (size_t l = 0; l < leaves_.size(); ++l) {
    const LeafRows& rows = leaves[l];
    LeafBuffers& buffers = leaves_[l];
    const std::byte* data;
    size_t size;
    if (rows.is_dense) {
      data = rows.base + i * rows.row_stride;
      size = rows.row_bytes;
    } else {
      data = rows.rows[i].data();
      size = rows.rows[i].size();
    }
    AppendStreamed(buffers.data_values, data, size);
    bytes_ += size;
    if (schema_.leaves[l].kind == LeafKind::kTensor) {
      const size_t elements = size / buffers.storage_width;
      buffers.data_offsets.push_back(buffers.data_offsets.back() + static_cast<int32_t>(elements));
      const std::vector<int64_t>& shape = rows.is_dense ? rows.shape : rows.shapes[i];
      buffers.shape_values.insert(buffers.shape_values.end(), shape.begin(), shape.end());
      buffers.shape_offsets.push_back(static_cast<int32_t>(buffers.shape_values.size()));
      bytes_ += shape.size() * sizeof(int64_t);
    } else {
      buffers.data_offsets.push_back(static_cast<int32_t>(buffers.data_values.size()));
    }
  }
  ++num_rows_;
  return num_rows_ - 1;
}

void PendingBatch::Reserve(size_t rows, size_t key_bytes, std::span<const LeafRows> leaves, size_t i) {
  key_offsets_.reserve(rows + 1);
  key_chars_.reserve(rows * key_bytes);
  for (size_t l = 0; l < leaves_.size(); ++l) {
    const LeafRows& r = leaves[l];
    size_t row_bytes = r.is_dense ? r.row_bytes : r.rows[i].size();
    LeafBuffers& buffers = leaves_[l];
    buffers.data_offsets.reserve(rows + 1);
    buffers.data_values.reserve(rows * row_bytes);
    if (schema_.leaves[l].kind == LeafKind::kTensor) {
      size_t rank = r.is_dense ? r.shape.size() : r.shapes[i].size();
      buffers.shape_offsets.reserve(rows + 1);
      buffers.shape_values.reserve(rows * rank);
    }
  }
}

namespace {

// The reserved bytes of `buffer` past its elements, as a byte span.
template <typename Vector>
void AddUnfilled(Vector& buffer, std::vector<std::span<std::byte>>* unfilled) {
  using T = typename Vector::value_type;
  if (buffer.capacity() > buffer.size()) {
    unfilled->emplace_back(reinterpret_cast<std::byte*>(buffer.data() + buffer.size()),
                           (buffer.capacity() - buffer.size()) * sizeof(T));
  }
}

}  // namespace

std::vector<std::span<std::byte>> PendingBatch::UnfilledBuffers() {
  std::vector<std::span<std::byte>> unfilled;
  AddUnfilled(key_offsets_, &unfilled);
  AddUnfilled(key_chars_, &unfilled);
  for (LeafBuffers& buffers : leaves_) {
    AddUnfilled(buffers.data_offsets, &unfilled);
    AddUnfilled(buffers.data_values, &unfilled);
    AddUnfilled(buffers.shape_offsets, &unfilled);
    AddUnfilled(buffers.shape_values, &unfilled);
  }
  return unfilled;
}

PendingBatch::Capacity PendingBatch::capacity() const {
  Capacity capacity;
  capacity.key_offsets = key_offsets_.capacity();
  capacity.key_chars = key_chars_.capacity();
  for (const LeafBuffers& buffers : leaves_) {
    capacity.leaves.push_back({buffers.data_offsets.capacity(), buffers.data_values.capacity(),
                               buffers.shape_offsets.capacity(), buffers.shape_values.capacity()});
  }
  return capacity;
}

PendingBatch::Capacity PendingBatch::Capacity::ForRows(size_t rows) const {
  const size_t have = std::max<size_t>(key_offsets, 2) - 1;  // rows this capacity holds (at least 1)
  const size_t want = std::max<size_t>(1, rows);
  // elements * want / have, rounded up (offsets buffers then keep their extra slot).
  auto scale = [&](size_t elements) {
    return elements / have * want + (elements % have * want + have - 1) / have;
  };
  Capacity scaled;
  scaled.key_offsets = scale(key_offsets);
  scaled.key_chars = scale(key_chars);
  for (const Leaf& leaf : leaves) {
    scaled.leaves.push_back({scale(leaf.data_offsets), scale(leaf.data_values), scale(leaf.shape_offsets),
                             scale(leaf.shape_values)});
  }
  return scaled;
}

void PendingBatch::ReserveAndPopulate(const Capacity& capacity) {
  key_offsets_.reserve(capacity.key_offsets);
  key_chars_.reserve(capacity.key_chars);
  for (size_t l = 0; l < leaves_.size() && l < capacity.leaves.size(); ++l) {
    LeafBuffers& buffers = leaves_[l];
    const Capacity::Leaf& leaf = capacity.leaves[l];
    buffers.data_offsets.reserve(leaf.data_offsets);
    buffers.data_values.reserve(leaf.data_values);
    buffers.shape_offsets.reserve(leaf.shape_offsets);
    buffers.shape_values.reserve(leaf.shape_values);
  }
  for (std::span<std::byte> buffer : UnfilledBuffers()) PopulateForWrite(buffer.data(), buffer.size());
  UpdateView();
}

void PendingBatch::Clear() {
  num_rows_ = 0;
  bytes_ = 0;
  key_offsets_.resize(1);
  key_chars_.clear();
  for (LeafBuffers& buffers : leaves_) {
    buffers.data_offsets.resize(1);
    buffers.data_values.clear();
    buffers.shape_offsets.resize(1);
    buffers.shape_values.clear();
  }
  UpdateView();
}

void PendingBatch::UpdateView() {
  view_.num_rows = num_rows_;
  view_.key = ViewOf(key_offsets_, key_chars_.data(), static_cast<int64_t>(key_chars_.size()));
  view_.leaves.resize(leaves_.size());
  for (size_t l = 0; l < leaves_.size(); ++l) {
    const LeafBuffers& buffers = leaves_[l];
    LeafView& leaf = view_.leaves[l];
    if (schema_.leaves[l].kind == LeafKind::kTensor) {
      DType dtype = schema_.leaves[l].dtype;
      leaf.storage_width = PrimitiveByteWidth(StorageType(dtype));
      leaf.storage_per_element = StorageElementsPerElement(dtype);
      leaf.data = ViewOf(buffers.data_offsets, buffers.data_values.data(),
                         static_cast<int64_t>(buffers.data_values.size() / leaf.storage_width));
      leaf.shape = ViewOf(buffers.shape_offsets,
                          reinterpret_cast<const std::byte*>(buffers.shape_values.data()),
                          static_cast<int64_t>(buffers.shape_values.size()));
    } else {
      leaf.storage_width = 1;
      leaf.data = ViewOf(buffers.data_offsets, buffers.data_values.data(),
                         static_cast<int64_t>(buffers.data_values.size()));
    }
  }
}

format::SegmentTable PendingBatch::Table() const {
  format::SegmentTable table;
  table.num_rows = num_rows_;
  table.metadata = metadata_;
  size_t f = 0;
  table.key_column = 0;
  table.columns.push_back({fields_[f++], key_offsets_, key_chars_});
  for (size_t l = 0; l < leaves_.size(); ++l) {
    const LeafBuffers& buffers = leaves_[l];
    table.columns.push_back({fields_[f++], buffers.data_offsets, buffers.data_values});
    if (schema_.leaves[l].kind == LeafKind::kTensor) {
      table.columns.push_back({fields_[f++], buffers.shape_offsets,
                               std::as_bytes(std::span(buffers.shape_values))});
    }
  }
  return table;
}

}  // namespace torchcachex
