// Damage that hides a segment's checksums: flips in the (unchecksummed) footer
// that rename the checksum keys and the footer's copy of the schema metadata key
// must not make a file written by torchcachex pass for one written by another
// tool (which carries no checksum and is trusted after structural validation).
// Found by tools/crash_torture.py (seed 2175).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include "torchcachex/errors.h"
#include "torchcachex/store.h"
#include "test_support.h"
#include "util/hash.h"

namespace torchcachex {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Writes one segment of 8 rows, keys "sample_<k>" -> 4 floats k * 1000 + j,
// into cache `dir`, module "m_v1". Returns the keys.
std::vector<std::string> WriteEightRows(const std::string& dir) {
  const Schema schema = testing::FloatSchema();
  std::vector<std::string> keys;
  std::vector<std::string_view> views;
  std::vector<float> values;
  for (int k = 0; k < 8; ++k) {
    keys.push_back("sample_" + std::to_string(k));
    for (int j = 0; j < 4; ++j) values.push_back(static_cast<float>(k * 1000 + j));
  }
  for (const auto& key : keys) views.push_back(key);
  LeafRows leaf;
  leaf.is_dense = true;
  leaf.base = reinterpret_cast<const std::byte*>(values.data());
  leaf.row_bytes = leaf.row_stride = 4 * sizeof(float);
  leaf.shape = {4};
  auto store = Store::Open(dir, "m_v1", {});
  store->EnsureSchema(schema);
  store->Put(views, std::span(&leaf, 1));
  store->Flush();
  return keys;
}

// A cache of one 8-row segment (WriteEightRows) in a temporary directory,
// removed with it.
struct EightRowCache {
  testing::TempDir tmp;
  std::string dir = tmp.path();
  std::vector<std::string> keys = WriteEightRows(dir);
  std::vector<std::string_view> views{keys.begin(), keys.end()};
  std::string segment = dir + "/m_v1/segments/segment_0.arrow";
};

TEST(SegmentDamageTest, FooterFlipsThatHideTheChecksumsAreStillDamage) {
  const EightRowCache cache;
  const std::string& segment = cache.segment;
  std::string bytes = ReadAll(segment);
  // Rename the footer's keys: both checksums and the footer's schema copy.
  for (const std::string name : {"torchcachex.xxh64", "torchcachex.keys_xxh64"}) {
    size_t at = bytes.rfind(name);
    ASSERT_NE(at, std::string::npos) << name;
    bytes[at + name.size() - 3] ^= 0x01;
  }
  const std::string schema_key = "torchcachex.schema";
  size_t footer_copy = bytes.rfind(schema_key);
  ASSERT_NE(footer_copy, std::string::npos);
  ASSERT_NE(bytes.find(schema_key), footer_copy);  // the schema message holds the other copy
  bytes[footer_copy + 2] ^= 0x01;
  // And damage a value: row 3 would be served wrong if the file were trusted.
  float needle = 3001.0f;
  size_t at = bytes.find(std::string(reinterpret_cast<const char*>(&needle), 4));
  ASSERT_NE(at, std::string::npos);
  bytes[at] ^= 0x01;
  std::ofstream(segment, std::ios::binary | std::ios::trunc) << bytes;

  auto store = Store::Open(cache.dir, "m_v1", {});
  GetResult result = store->GetBatch(cache.views);
  for (int i = 0; i < 8; ++i) EXPECT_FALSE(result.found[i]) << i;
  auto warnings = store->TakeWarnings();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("lacks its checksums"), std::string::npos) << warnings[0];
  EXPECT_EQ(store->GetStats().skipped_segments, 1u);
}

// A file of ours has its shapes validated with its checksum, when a row is
// first served, not when it is opened (opening reads only keys and offsets).
// A shape that disagrees with the data must still never be served, even with
// checksums that match (a writer bug rather than damage).
TEST(SegmentDamageTest, AShapeThatDisagreesWithTheDataIsNeverServedEvenWithMatchingChecksums) {
  const EightRowCache cache;
  const std::string& segment = cache.segment;
  std::string bytes = ReadAll(segment);
  auto checksum_hex = [&] {
    int32_t footer_length;
    std::memcpy(&footer_length, bytes.data() + bytes.size() - 10, 4);
    const size_t footer_offset = bytes.size() - 10 - static_cast<size_t>(footer_length);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(Xxh64(std::as_bytes(
                                                  std::span(bytes.data(), footer_offset)))));
    return std::string(hex);
  };
  const std::string old_checksum = checksum_hex();
  // The shape column: eight int64 4s. Row 3 claims 5 elements; it holds 4.
  std::string shapes;
  for (int k = 0; k < 8; ++k) {
    const int64_t four = 4;
    shapes.append(reinterpret_cast<const char*>(&four), 8);
  }
  const size_t at = bytes.find(shapes);
  ASSERT_NE(at, std::string::npos);
  bytes[at + 3 * 8] = 5;
  const std::string new_checksum = checksum_hex();
  const size_t recorded = bytes.rfind(old_checksum);
  ASSERT_NE(recorded, std::string::npos);
  bytes.replace(recorded, new_checksum.size(), new_checksum);
  std::ofstream(segment, std::ios::binary | std::ios::trunc) << bytes;

  auto store = Store::Open(cache.dir, "m_v1", {});
  EXPECT_TRUE(store->TakeWarnings().empty());  // opened: keys and checksums agree
  EXPECT_EQ(store->GetStats().skipped_segments, 0u);
  GetResult result = store->GetBatch(cache.views);
  for (int i = 0; i < 8; ++i) EXPECT_FALSE(result.found[i]) << i;
  auto warnings = store->TakeWarnings();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("row 3 of column 'data' holds 4 elements but its shape needs 5"),
            std::string::npos)
      << warnings[0];
  EXPECT_EQ(store->GetStats().skipped_segments, 1u);
}

}  // namespace
}  // namespace torchcachex
