// PendingBatch capacities: a batch sized from another's capacity, scaled to a
// row count (how the store makes spare batches ahead), takes that many rows
// without reallocating any buffer (a reallocation copies the rows appended so
// far and faults in fresh pages, in the caller's put).

#include "store/pending_batch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

namespace torchcachex {
namespace {

Schema OneFloatLeaf() {
  Schema schema;
  schema.leaves.push_back(LeafSpec{"", LeafKind::kTensor, DType::kFloat32});
  schema.output_structure = "tensor";
  return schema;
}

// `n` rows of 16 floats (row i filled with i) under keys "k0", "k1", ...
struct Rows {
  explicit Rows(size_t n) : values(n * 16) {
    for (size_t i = 0; i < n; ++i) {
      keys.push_back("k" + std::to_string(i));
      for (size_t j = 0; j < 16; ++j) values[i * 16 + j] = static_cast<float>(i);
    }
    leaf.is_dense = true;
    leaf.base = reinterpret_cast<const std::byte*>(values.data());
    leaf.row_bytes = leaf.row_stride = 16 * sizeof(float);
    leaf.shape = {16};
  }
  void AppendTo(PendingBatch& batch, size_t first, size_t count) const {
    for (size_t i = first; i < first + count; ++i) batch.Append(keys[i], std::span(&leaf, 1), i);
  }
  std::vector<std::string> keys;
  std::vector<float> values;
  LeafRows leaf;
};

// The addresses of every buffer of `batch` (after UpdateView).
std::vector<const void*> Buffers(PendingBatch& batch) {
  batch.UpdateView();
  const BatchView& view = batch.view();
  const LeafView& leaf = view.leaves[0];
  return {view.key.offsets, view.key.values, leaf.data.offsets, leaf.data.values, leaf.shape.offsets,
          leaf.shape.values};
}

void ExpectScaledCapacityHoldsRows(size_t rows) {
  const Schema schema = OneFloatLeaf();
  const Rows data(std::max<size_t>(rows, 100));
  PendingBatch model(schema);
  model.Reserve(100, data.keys[0].size() + 2, std::span(&data.leaf, 1), 0);
  data.AppendTo(model, 0, 100);

  PendingBatch batch(schema);
  batch.ReserveAndPopulate(model.capacity().ForRows(rows));
  batch.Append(data.keys[0], std::span(&data.leaf, 1), 0);
  const std::vector<const void*> before = Buffers(batch);
  data.AppendTo(batch, 1, rows - 1);
  EXPECT_EQ(Buffers(batch), before) << "a buffer moved while appending " << rows << " rows";
  ASSERT_EQ(batch.num_rows(), static_cast<int64_t>(rows));
  EXPECT_EQ(batch.KeyOf(static_cast<int64_t>(rows) - 1), data.keys[rows - 1]);
}

TEST(PendingBatchTest, CapacityScaledToMoreRowsHoldsThemWithoutMovingBuffers) {
  ExpectScaledCapacityHoldsRows(250);  // keys up to "k249": one byte longer than the model's widest
}

TEST(PendingBatchTest, CapacityScaledToFewerRowsHoldsThemWithoutMovingBuffers) {
  ExpectScaledCapacityHoldsRows(37);
}

}  // namespace
}  // namespace torchcachex
