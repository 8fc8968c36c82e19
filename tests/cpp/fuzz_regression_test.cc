// Regression tests for bugs found by the fuzzers in fuzz/ and by the
// sanitizer builds (scripts/fuzz.sh, scripts/sanitize.sh). Each test names
// the finding; the reproducing input, where there is one, is also in the
// seed corpus (fuzz/corpus/<target>/regression_*), which CI replays.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "format/schema_json.h"
#include "store/batch_view.h"
#include "test_support.h"
#include "torchcachex/errors.h"
#include "torchcachex/store.h"

namespace torchcachex {
namespace {

using testing::FloatSchema;
using testing::TempDir;

namespace fs = std::filesystem;

// Ragged rows: key i has shape shapes[i], filled with i + 0.5.
struct RaggedRows {
  std::vector<std::string> keys;
  std::vector<std::string_view> views;
  std::vector<std::vector<float>> values;
  LeafRows leaf;

  explicit RaggedRows(const std::vector<std::vector<int64_t>>& shapes) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      keys.push_back("k" + std::to_string(i));
      int64_t n = 1;
      for (int64_t d : shapes[i]) n *= d;
      values.emplace_back(static_cast<size_t>(n), static_cast<float>(i) + 0.5f);
    }
    for (size_t i = 0; i < shapes.size(); ++i) {
      views.push_back(keys[i]);
      leaf.rows.push_back(std::as_bytes(std::span(values[i])));
      leaf.shapes.push_back(shapes[i]);
    }
  }
};

// fuzz_store_open, UBSan: "null pointer passed as argument 1" in
// CopyTensorCell. A row holding an empty tensor (a zero dimension) served
// on the ragged path was copied with memcpy into the data() of an empty
// vector, which is null: undefined behaviour, whatever the size.
TEST(FuzzRegressionTest, EmptyTensorRowsAreServedOnTheRaggedPath) {
  for (bool flush : {false, true}) {
    TempDir tmp;
    auto store = Store::Open(tmp.path(), "m", Options{.async_write = false});
    store->EnsureSchema(FloatSchema());
    RaggedRows rows({{2}, {0}, {0, 3}, {1, 1}});
    store->Put(rows.views, std::span(&rows.leaf, 1));
    if (flush) store->Flush();
    GetResult result = store->GetBatch(rows.views);
    ASSERT_EQ(result.found, (std::vector<uint8_t>{1, 1, 1, 1}));
    const LeafResult& leaf = result.leaves[0];
    ASSERT_FALSE(leaf.is_dense);
    for (size_t i = 0; i < rows.keys.size(); ++i) {
      ASSERT_TRUE(leaf.rows[i].has_value());
      EXPECT_EQ(leaf.shapes[i], rows.leaf.shapes[i]);
      ASSERT_EQ(leaf.rows[i]->size(), rows.values[i].size() * sizeof(float));
      if (!rows.values[i].empty()) {
        EXPECT_EQ(std::memcmp(leaf.rows[i]->data(), rows.values[i].data(), leaf.rows[i]->size()), 0);
      }
    }
  }
}

// The same copy on the dense path, from the hot cache of a store that does
// not persist: every row empty, so the copied rows are 0 bytes long and the
// hot row's bytes (an empty vector) have a null data().
TEST(FuzzRegressionTest, EmptyTensorRowsAreServedFromTheHotCache) {
  TempDir tmp;
  auto store = Store::Open(tmp.path(), "m", Options{.persist = false});
  store->EnsureSchema(FloatSchema());
  RaggedRows rows({{0}, {0}});
  store->Put(rows.views, std::span(&rows.leaf, 1));
  std::vector<std::string_view> keys = {"k0", "absent", "k1"};
  GetResult result = store->GetBatch(keys);
  EXPECT_EQ(result.found, (std::vector<uint8_t>{1, 0, 1}));
  const LeafResult& leaf = result.leaves[0];
  ASSERT_TRUE(leaf.is_dense);
  EXPECT_EQ(leaf.shape, (std::vector<int64_t>{0}));
  EXPECT_EQ(leaf.row_bytes, 0u);
}

// CopyTensorCell itself, on a column whose values buffer is absent (a
// zero-length Arrow buffer may be given no address at all).
TEST(FuzzRegressionTest, CopyTensorCellOfAnEmptyCellTouchesNothing) {
  const int32_t offsets[2] = {0, 0};
  LeafView leaf;
  leaf.data.offsets = reinterpret_cast<const std::byte*>(offsets);
  leaf.data.values = nullptr;
  leaf.data.values_length = 0;
  leaf.storage_width = 4;
  EXPECT_EQ(CellTensorBytes(leaf, 0, 4), 0u);
  CopyTensorCell(leaf, 0, nullptr);  // nothing to copy: neither pointer is used
}

// fuzz_schema_json, UBSan: "5.32578e+57 is outside the range of
// representable values of type 'long'". format_version was checked for being
// an integer by casting the double to int64_t, which is undefined for values
// out of range. A huge version is now "newer than this torchcachex
// understands", and fractions, zero and negatives are still rejected.
TEST(FuzzRegressionTest, HugeFormatVersionIsRejectedWithoutOverflow) {
  auto decode = [](const std::string& version) {
    return format::DecodeSchemaJson(R"({"torchcachex": {"format_version": )" + version +
                                    R"(, "leaves": [{"name": "", "kind": "tensor", "dtype": "torch.float32"}]},)"
                                    R"( "output_structure": "tensor"})");
  };
  for (const char* version : {"5325777777777777777777777777777777777777777777777777777775", "1e300",
                              "9223372036854775808", "-9223372036854775809"}) {
    try {
      decode(version);
      ADD_FAILURE() << "format_version " << version << " was accepted";
    } catch (const CorruptFileError& e) {
      if (std::string(version)[0] != '-') {
        EXPECT_NE(std::string(e.what()).find("newer"), std::string::npos) << version << ": " << e.what();
      }
    }
  }
  for (const char* version : {"0", "-1", "1.5", "0.999", "1e400"}) {
    EXPECT_THROW(decode(version), CorruptFileError) << version;
  }
  EXPECT_EQ(decode("1").leaves.size(), 1u);
}

}  // namespace
}  // namespace torchcachex
