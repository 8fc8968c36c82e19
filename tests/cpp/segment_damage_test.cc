// Damage that hides a segment's checksums: flips in the (unchecksummed) footer
// that rename the checksum keys and the footer's copy of the schema metadata key
// must not make a file written by torchcachex pass for one written by another
// tool (which carries no checksum and is trusted after structural validation).
// Found by tools/crash_torture.py (seed 2175).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include "torchcachex/errors.h"
#include "torchcachex/store.h"
#include "test_support.h"
#include "util/xxh3.h"

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
  for (const std::string name : {"torchcachex.xxh3", "torchcachex.keys_xxh64"}) {
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
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(Xxh3_64(std::as_bytes(
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

// A cache written before the whole-file checksum moved from XXH64 to XXH3:
// tests/cpp/data/legacy_xxh64_* are the schema.json and only segment of a
// cache written by commit d6a3e35 (keys "k0".."k7", row i = {i, i + 0.5,
// i + 0.25, -i} in float32; footer key torchcachex.xxh64). Its rows are
// served, with the schema read from schema.json or recovered from the segment,
// and damage to it is still detected.
TEST(SegmentDamageTest, CachesWrittenWithTheOlderXxh64ChecksumAreServedAndTheirDamageDetected) {
  const std::filesystem::path data = std::filesystem::path(__FILE__).parent_path() / "data";
  const std::string segment_bytes = ReadAll((data / "legacy_xxh64_segment.arrow").string());
  ASSERT_NE(segment_bytes.find("torchcachex.xxh64"), std::string::npos);
  ASSERT_EQ(segment_bytes.find("torchcachex.xxh3"), std::string::npos);
  std::vector<std::string> keys;
  for (int i = 0; i < 8; ++i) keys.push_back("k" + std::to_string(i));
  const std::vector<std::string_view> views(keys.begin(), keys.end());

  for (const bool with_schema_json : {true, false}) {
    for (const bool damaged : {false, true}) {
      SCOPED_TRACE(std::string(with_schema_json ? "schema.json" : "schema recovered") +
                   (damaged ? ", damaged" : ", intact"));
      testing::TempDir tmp;
      std::filesystem::create_directories(tmp.path() + "/m/segments");
      if (with_schema_json) {
        std::filesystem::copy_file(data / "legacy_xxh64_schema.json", tmp.path() + "/m/schema.json");
      }
      std::string bytes = segment_bytes;
      if (damaged) {  // one bit of row 5's second value, 5.5
        const float value = 5.5f;
        const size_t at = bytes.find(std::string(reinterpret_cast<const char*>(&value), 4));
        ASSERT_NE(at, std::string::npos);
        bytes[at] ^= 0x01;
      }
      std::ofstream(tmp.path() + "/m/segments/segment_0.arrow", std::ios::binary) << bytes;

      auto store = Store::Open(tmp.path(), "m", {});
      GetResult result = store->GetBatch(views);
      if (damaged) {
        for (int i = 0; i < 8; ++i) EXPECT_FALSE(result.found[i]) << i;
        auto warnings = store->TakeWarnings();
        ASSERT_FALSE(warnings.empty());
        EXPECT_NE(warnings[0].find("checksum mismatch"), std::string::npos) << warnings[0];
        continue;
      }
      for (const std::string& warning : store->TakeWarnings()) {  // e.g. that schema.json was recovered
        EXPECT_EQ(warning.find("checksum"), std::string::npos) << warning;
      }
      ASSERT_EQ(result.leaves.size(), 1u);
      ASSERT_TRUE(result.leaves[0].is_dense);
      for (int i = 0; i < 8; ++i) {
        ASSERT_TRUE(result.found[i]) << i;
        float row[4];
        std::memcpy(row, result.leaves[0].dense.get() + i * sizeof row, sizeof row);
        const float expected[4] = {static_cast<float>(i), i + 0.5f, i + 0.25f, -static_cast<float>(i)};
        for (int j = 0; j < 4; ++j) EXPECT_EQ(row[j], expected[j]) << i << "," << j;
      }
    }
  }
}

}  // namespace
}  // namespace torchcachex
