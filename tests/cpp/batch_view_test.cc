// SummarizeRows: when the read path may copy a leaf's rows without reading
// their offsets and shapes.

#include "store/batch_view.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace torchcachex {
namespace {

// A tensor leaf over in-memory buffers: int32 data offsets, float32 data,
// int32 shape offsets, int64 shape values.
using Shapes = std::vector<std::vector<int64_t>>;

struct Leaf {
  std::vector<int32_t> data_offsets;
  std::vector<float> data;
  std::vector<int32_t> shape_offsets;
  std::vector<int64_t> shape_values;
  std::vector<uint8_t> validity;  // empty: no nulls

  // Rows of the given shapes, back to back from offset `first`.
  explicit Leaf(const Shapes& shapes, int32_t first = 0) {
    data_offsets.push_back(first);
    shape_offsets.push_back(0);
    for (const auto& shape : shapes) {
      int32_t n = 1;
      for (int64_t d : shape) n *= static_cast<int32_t>(d);
      data_offsets.push_back(data_offsets.back() + n);
      shape_offsets.push_back(shape_offsets.back() + static_cast<int32_t>(shape.size()));
      shape_values.insert(shape_values.end(), shape.begin(), shape.end());
    }
    data.resize(static_cast<size_t>(data_offsets.back()));
  }

  LeafView View() const {
    LeafView view;
    view.data.offsets = reinterpret_cast<const std::byte*>(data_offsets.data());
    view.data.values = reinterpret_cast<const std::byte*>(data.data());
    view.data.values_length = static_cast<int64_t>(data.size());
    view.data.validity = validity.empty() ? nullptr : reinterpret_cast<const std::byte*>(validity.data());
    view.shape.offsets = reinterpret_cast<const std::byte*>(shape_offsets.data());
    view.shape.values = reinterpret_cast<const std::byte*>(shape_values.data());
    view.shape.values_length = static_cast<int64_t>(shape_values.size());
    view.storage_width = sizeof(float);
    return view;
  }
  int64_t rows() const { return static_cast<int64_t>(data_offsets.size()) - 1; }
};

TEST(SummarizeRowsTest, RowsOfOneShapeBackToBackAreUniform) {
  Leaf leaf(Shapes{{2, 3}, {2, 3}, {2, 3}});
  UniformRows summary = SummarizeRows(leaf.View(), leaf.rows());
  ASSERT_TRUE(summary.uniform());
  EXPECT_EQ(summary.elements, 6);
  EXPECT_EQ(summary.shape, (std::vector<int64_t>{2, 3}));
}

TEST(SummarizeRowsTest, ElementsCountStorageElementsOfComplexTensors) {
  Leaf leaf(Shapes{{4}, {4}});
  for (int32_t& offset : leaf.data_offsets) offset *= 2;  // two floats per complex64 element
  leaf.data.resize(16);
  LeafView view = leaf.View();
  view.storage_per_element = 2;
  UniformRows summary = SummarizeRows(view, leaf.rows());
  ASSERT_TRUE(summary.uniform());
  EXPECT_EQ(summary.elements, 8);
}

TEST(SummarizeRowsTest, ScalarsAndEmptyTensorsAreUniform) {
  Leaf scalars(Shapes{{}, {}, {}});
  UniformRows summary = SummarizeRows(scalars.View(), scalars.rows());
  ASSERT_TRUE(summary.uniform());
  EXPECT_EQ(summary.elements, 1);
  EXPECT_TRUE(summary.shape.empty());

  Leaf empty(Shapes{{0, 5}, {0, 5}});
  EXPECT_EQ(SummarizeRows(empty.View(), empty.rows()).elements, 0);
}

TEST(SummarizeRowsTest, DifferentShapesAreNotUniformEvenWithEqualSizes) {
  Leaf transposed(Shapes{{2, 3}, {3, 2}});
  EXPECT_FALSE(SummarizeRows(transposed.View(), transposed.rows()).uniform());
  Leaf ranks(Shapes{{6}, {1, 6}});
  EXPECT_FALSE(SummarizeRows(ranks.View(), ranks.rows()).uniform());
  Leaf sizes(Shapes{{2}, {2}, {3}});
  EXPECT_FALSE(SummarizeRows(sizes.View(), sizes.rows()).uniform());
}

TEST(SummarizeRowsTest, OffsetsNotStartingAtZeroTakeTheGeneralPath) {
  Leaf shifted(Shapes{{2}, {2}}, /*first=*/3);
  shifted.data.resize(7);
  EXPECT_FALSE(SummarizeRows(shifted.View(), shifted.rows()).uniform());
}

TEST(SummarizeRowsTest, NullCellsBitPackedBooleansAndEmptyBatchesAreNotUniform) {
  Leaf with_null(Shapes{{2}, {2}, {2}});
  with_null.validity = {0b101};  // row 1 is null
  EXPECT_FALSE(SummarizeRows(with_null.View(), with_null.rows()).uniform());

  Leaf booleans(Shapes{{8}, {8}});
  LeafView view = booleans.View();
  view.storage_width = 0;
  EXPECT_FALSE(SummarizeRows(view, booleans.rows()).uniform());

  Leaf none(Shapes{});
  EXPECT_FALSE(SummarizeRows(none.View(), 0).uniform());
}

}  // namespace
}  // namespace torchcachex
