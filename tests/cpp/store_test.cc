// Behaviour of the Store: round trips, durability across reopen, read-your-
// writes, recovery from damaged files, writers sharing a directory, errors.
#include "torchcachex/store.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "store/segment.h"
#include "test_support.h"
#include "torchcachex/errors.h"

namespace torchcachex {
namespace {

using testing::FloatSchema;
using testing::TempDir;

namespace fs = std::filesystem;

// Rows of `dim` floats; row i of key k holds k*1000 + j.
struct FloatRows {
  std::vector<std::string> keys;
  std::vector<std::string_view> views;
  std::vector<float> values;
  LeafRows leaf;

  FloatRows(int first, int count, int dim, float offset = 0) {
    for (int k = first; k < first + count; ++k) {
      keys.push_back("sample_" + std::to_string(k));
      for (int j = 0; j < dim; ++j) values.push_back(static_cast<float>(k * 1000 + j) + offset);
    }
    for (const auto& key : keys) views.push_back(key);
    leaf.is_dense = true;
    leaf.base = reinterpret_cast<const std::byte*>(values.data());
    leaf.row_bytes = leaf.row_stride = dim * sizeof(float);
    leaf.shape = {dim};
  }
};

std::vector<float> RowOf(const GetResult& result, size_t i, int dim) {
  std::vector<float> row(dim);
  std::memcpy(row.data(), result.leaves[0].dense.get() + i * dim * sizeof(float), dim * sizeof(float));
  return row;
}

void ExpectRow(const GetResult& result, size_t i, int key, int dim, float offset = 0) {
  ASSERT_TRUE(result.found[i]);
  std::vector<float> row = RowOf(result, i, dim);
  for (int j = 0; j < dim; ++j) ASSERT_EQ(row[j], static_cast<float>(key * 1000 + j) + offset);
}

std::unique_ptr<Store> OpenFloat(const std::string& dir, Options options = {}) {
  auto store = Store::Open(dir, "features_v1", options);
  store->EnsureSchema(FloatSchema());
  return store;
}

TEST(StoreTest, ReadsItsOwnWritesBeforeAndAfterFlush) {
  TempDir tmp;
  auto store = OpenFloat(tmp.path());
  FloatRows rows(0, 10, 4);
  store->Put(rows.views, std::span(&rows.leaf, 1));
  GetResult before = store->GetBatch(rows.views);
  for (int i = 0; i < 10; ++i) ExpectRow(before, i, i, 4);
  store->Flush();
  GetResult after = store->GetBatch(rows.views);
  for (int i = 0; i < 10; ++i) ExpectRow(after, i, i, 4);
  EXPECT_EQ(store->size(), 10u);
  EXPECT_EQ(store->GetStats().pending_rows, 0u);
}

TEST(StoreTest, FlushedRowsSurviveReopen) {
  TempDir tmp;
  FloatRows rows(0, 100, 8);
  {
    auto store = OpenFloat(tmp.path());
    store->Put(rows.views, std::span(&rows.leaf, 1));
    store->Flush();
  }
  auto store = Store::Open(tmp.path(), "features_v1", {});
  ASSERT_TRUE(store->schema().has_value());
  GetResult result = store->GetBatch(rows.views);
  for (int i = 0; i < 100; ++i) ExpectRow(result, i, i, 8);
}

TEST(StoreTest, MissingKeysAreReportedAndZeroed) {
  TempDir tmp;
  auto store = OpenFloat(tmp.path());
  FloatRows rows(0, 2, 3);
  store->Put(rows.views, std::span(&rows.leaf, 1));
  std::vector<std::string_view> keys = {"sample_1", "nope", "sample_0"};
  GetResult result = store->GetBatch(keys);
  EXPECT_EQ(result.found, (std::vector<uint8_t>{1, 0, 1}));
  ExpectRow(result, 0, 1, 3);
  ExpectRow(result, 2, 0, 3);
  EXPECT_EQ(RowOf(result, 1, 3), (std::vector<float>{0, 0, 0}));
}

TEST(StoreTest, LaterWritesOfAKeyWin) {
  TempDir tmp;
  auto store = OpenFloat(tmp.path(), Options{.flush_every = 3});
  FloatRows first(0, 5, 2);
  FloatRows second(0, 5, 2, /*offset=*/0.5f);
  store->Put(first.views, std::span(&first.leaf, 1));
  store->Flush();
  store->Put(second.views, std::span(&second.leaf, 1));
  GetResult pending = store->GetBatch(second.views);
  for (int i = 0; i < 5; ++i) ExpectRow(pending, i, i, 2, 0.5f);
  store->Close();
  auto reopened = Store::Open(tmp.path(), "features_v1", {});
  GetResult result = reopened->GetBatch(second.views);
  for (int i = 0; i < 5; ++i) ExpectRow(result, i, i, 2, 0.5f);
  EXPECT_EQ(reopened->size(), 5u);
}

// Lookups are software-pipelined for large indexes and, once a lookup has
// gathered rows of 512 bytes or more, for small ones too. Both ways must serve the
// same rows: segment rows, pending rows (newest copy first), repeated keys
// and misses, in batches of every size around the pipeline's depth.
TEST(StoreTest, LookupsAfterWideRowsServeSegmentPendingRepeatedAndMissingKeys) {
  TempDir tmp;
  constexpr int kDim = 512;  // 2 KB rows
  auto store = OpenFloat(tmp.path(), Options{.flush_every = 64});
  FloatRows flushed(0, 300, kDim);
  store->Put(flushed.views, std::span(&flushed.leaf, 1));
  store->Flush();
  FloatRows pending(300, 50, kDim);
  store->Put(pending.views, std::span(&pending.leaf, 1));
  FloatRows rewritten(5, 1, kDim, /*offset=*/0.5f);
  store->Put(rewritten.views, std::span(&rewritten.leaf, 1));

  std::vector<std::string> names;
  std::vector<int> expected;  // key number, or -1 for a miss
  std::mt19937 rng(7);
  for (int i = 0; i < 400; ++i) {
    const int k = static_cast<int>(rng() % 370);  // 350..369 were never put; repeats are likely
    names.push_back("sample_" + std::to_string(k));
    expected.push_back(k < 350 ? k : -1);
  }
  for (size_t batch : {1, 7, 8, 25, 256, 400}) {
    for (int pass = 0; pass < 2; ++pass) {  // the first gather of each size sets the row-width hint
      std::vector<std::string_view> keys(names.begin(), names.begin() + batch);
      GetResult result = store->GetBatch(keys);
      for (size_t i = 0; i < batch; ++i) {
        if (expected[i] < 0) {
          EXPECT_FALSE(result.found[i]) << names[i];
        } else {
          ExpectRow(result, i, expected[i], kDim, expected[i] == 5 ? 0.5f : 0.0f);
        }
      }
    }
  }
}

// Put and Flush write queued segments themselves while the writer thread
// writes others, so segments may finish out of order: they must still be
// published, and numbered on disk, in put order. Each put here adds one row
// that rewrites one key, and seals it into its own segment unless a sealed
// batch is still waiting for a writer (group commit).
TEST(StoreTest, LaterWritesOfAKeyWinWhenSegmentsAreWrittenInParallel) {
  TempDir tmp;
  auto store = OpenFloat(tmp.path(), Options{.flush_every = 1, .min_segment_bytes = 0, .max_queued_segments = 1});
  constexpr int kPuts = 320, kRowsPerPut = 1;
  std::vector<std::string_view> keys(kRowsPerPut, "k");
  std::vector<float> values(kRowsPerPut);
  LeafRows leaf;
  leaf.is_dense = true;
  leaf.base = reinterpret_cast<const std::byte*>(values.data());
  leaf.row_bytes = leaf.row_stride = sizeof(float);
  leaf.shape = {1};
  std::string_view key[1] = {"k"};
  auto value_of_k = [&](Store& s) {
    GetResult result = s.GetBatch(key);
    EXPECT_TRUE(result.found[0]);
    float v;
    std::memcpy(&v, result.leaves.at(0).dense.get(), sizeof v);
    return v;
  };
  for (int p = 0; p < kPuts; ++p) {
    for (int r = 0; r < kRowsPerPut; ++r) values[r] = static_cast<float>(p * kRowsPerPut + r);
    store->Put(keys, std::span(&leaf, 1));
    EXPECT_EQ(value_of_k(*store), values.back());
  }
  store->Flush();
  const float last = values.back();
  EXPECT_GE(store->GetStats().segments, 2u);
  EXPECT_EQ(store->GetStats().rows_written, static_cast<uint64_t>(kPuts * kRowsPerPut));
  EXPECT_EQ(value_of_k(*store), last);
  store->Close();
  auto reopened = Store::Open(tmp.path(), "features_v1", {});
  EXPECT_EQ(value_of_k(*reopened), last);
}

// The writer's time is counted beside its bytes, so that bytes_written /
// write_ns is its bandwidth: nothing before a segment is written, some after.
TEST(StoreTest, StatsCountTheTimeSpentWritingSegments) {
  for (bool async_write : {true, false}) {
    TempDir tmp;
    auto store = OpenFloat(tmp.path(), Options{.async_write = async_write});
    FloatRows rows(0, 10, 2);
    store->Put(rows.views, std::span(&rows.leaf, 1));
    EXPECT_EQ(store->GetStats().write_ns, 0u) << "async_write=" << async_write;
    store->Flush();
    EXPECT_GT(store->GetStats().write_ns, 0u) << "async_write=" << async_write;
    EXPECT_GT(store->GetStats().bytes_written, 0u);
  }
}

// An async batch of tiny rows is due at flush_every rows only once it also
// holds min_segment_bytes; a synchronous store writes exactly flush_every.
// One Put holds the store's lock throughout, so the writer cannot claim the
// first batch early: the split is deterministic.
TEST(StoreTest, AsyncBatchesOfTinyRowsAreDueOnlyOnceTheyHoldMinSegmentBytes) {
  struct Case {
    bool async_write;
    size_t min_segment_bytes;
    int64_t first_segment_rows;  // -1: at least kFloor bytes' worth
  };
  constexpr size_t kFloor = 500;
  for (Case c : {Case{true, kFloor, -1}, Case{true, 0, 4}, Case{false, kFloor, 4}}) {
    TempDir tmp;
    auto store = OpenFloat(tmp.path(), Options{.flush_every = 4, .min_segment_bytes = c.min_segment_bytes,
                                               .async_write = c.async_write});
    FloatRows rows(0, 100, 2);  // keys of 8-9 bytes, 8 value bytes
    store->Put(rows.views, std::span(&rows.leaf, 1));
    store->Flush();
    auto first = Segment::Open(tmp.path() + "/features_v1/segments/segment_0.arrow", 0, FloatSchema());
    if (c.first_segment_rows < 0) {
      // A row counts its key (8-9 bytes), 8 value bytes and 8 shape bytes:
      // sealed at the first row that brings the batch to kFloor.
      EXPECT_GE(first->num_rows() * 25, static_cast<int64_t>(kFloor)) << "min_segment_bytes not held";
      EXPECT_LT((first->num_rows() - 1) * 24, static_cast<int64_t>(kFloor)) << "sealed late";
      EXPECT_EQ(store->GetStats().segments, 2u);
    } else {
      EXPECT_EQ(first->num_rows(), c.first_segment_rows) << "async_write=" << c.async_write;
    }
    EXPECT_EQ(store->GetStats().rows_written, 100u);
  }
}

// Group commit: in async mode a batch that reaches flush_every rows while an
// earlier sealed batch still waits for a writer keeps filling, so a writer
// that falls behind writes one larger file instead of many small ones. One
// Put holds the store's lock throughout, so the writer cannot claim the
// first one-row batch before the other 99 rows arrive: exactly two segments.
// A synchronous store writes exactly flush_every rows per segment.
TEST(StoreTest, AsyncWriterThatFallsBehindWritesFewerLargerSegments) {
  for (bool async_write : {true, false}) {
    TempDir tmp;
    auto store = OpenFloat(tmp.path(), Options{.flush_every = 1, .min_segment_bytes = 0, .async_write = async_write});
    FloatRows rows(0, 100, 2);
    store->Put(rows.views, std::span(&rows.leaf, 1));
    store->Flush();
    EXPECT_EQ(store->GetStats().segments, async_write ? 2u : 100u) << "async_write=" << async_write;
    EXPECT_EQ(store->GetStats().rows_written, 100u);
    store->Close();
    auto reopened = OpenFloat(tmp.path());
    GetResult result = reopened->GetBatch(rows.views);
    for (int i = 0; i < 100; ++i) ExpectRow(result, i, i, 2);
  }
}

TEST(StoreTest, LargeRowsAreSealedIntoSegmentsByBytesNotOnlyByRows) {
  TempDir tmp;
  constexpr int kDim = 75'000;  // 300 KB rows: a 1 MB byte cap seals every 4 rows
  auto store = OpenFloat(tmp.path(), Options{.flush_every = 2048, .max_pending_bytes = size_t{1} << 20});
  FloatRows rows(0, 10, kDim);
  store->Put(rows.views, std::span(&rows.leaf, 1));
  store->Flush();
  EXPECT_EQ(store->GetStats().segments, 3u);  // 4 + 4 + 2 rows
  GetResult result = store->GetBatch(rows.views);
  for (int i = 0; i < 10; ++i) ExpectRow(result, i, i, kDim);
}

TEST(StoreTest, SynchronousModeWritesSegmentsInTheCaller) {
  TempDir tmp;
  auto store = OpenFloat(tmp.path(), Options{.flush_every = 4, .async_write = false});
  FloatRows rows(0, 10, 2);
  store->Put(rows.views, std::span(&rows.leaf, 1));
  EXPECT_EQ(store->GetStats().segments, 2u);      // two full batches of 4 written already
  EXPECT_EQ(store->GetStats().pending_rows, 2u);
  store->Flush();
  EXPECT_EQ(store->GetStats().segments, 3u);
}

TEST(StoreTest, VaryingShapesComeBackRagged) {
  TempDir tmp;
  auto store = OpenFloat(tmp.path());
  FloatRows short_rows(0, 2, 2);
  FloatRows long_rows(2, 2, 5);
  store->Put(short_rows.views, std::span(&short_rows.leaf, 1));
  store->Put(long_rows.views, std::span(&long_rows.leaf, 1));
  std::vector<std::string_view> keys = {"sample_0", "sample_3"};
  GetResult result = store->GetBatch(keys);
  const LeafResult& leaf = result.leaves[0];
  ASSERT_FALSE(leaf.is_dense);
  EXPECT_EQ(leaf.shapes[0], (std::vector<int64_t>{2}));
  EXPECT_EQ(leaf.shapes[1], (std::vector<int64_t>{5}));
  float value;
  std::memcpy(&value, leaf.rows[1]->data() + 4 * sizeof(float), sizeof(float));
  EXPECT_EQ(value, 3004.0f);
}

// Segments whose rows all share one shape are served without reading each
// row's offsets and shape (UniformRows). A batch mixing two such segments of
// different shapes must still come back ragged, and a batch from one of them
// dense, also after the segments were unmapped and mapped again.
TEST(StoreTest, UniformSegmentsOfDifferentShapesMixIntoRaggedResults) {
  TempDir tmp;
  Options options{.flush_every = 4, .async_write = false, .max_mapped_segments = 1};
  {
    auto store = OpenFloat(tmp.path(), options);
    FloatRows two(0, 4, 2), three(4, 4, 3);
    store->Put(two.views, std::span(&two.leaf, 1));
    store->Put(three.views, std::span(&three.leaf, 1));
    store->Flush();
  }
  auto store = OpenFloat(tmp.path(), options);
  ASSERT_EQ(store->GetStats().segments, 2u);
  for (int pass = 0; pass < 2; ++pass) {  // the second pass remaps both segments
    std::vector<std::string_view> mixed = {"sample_5", "sample_1", "sample_6", "sample_2"};
    GetResult result = store->GetBatch(mixed);
    const LeafResult& leaf = result.leaves[0];
    ASSERT_FALSE(leaf.is_dense);
    const int keys[] = {5, 1, 6, 2};
    for (size_t i = 0; i < 4; ++i) {
      const int dim = keys[i] < 4 ? 2 : 3;
      ASSERT_EQ(leaf.shapes[i], (std::vector<int64_t>{dim}));
      std::vector<float> row(dim);
      std::memcpy(row.data(), leaf.rows[i]->data(), dim * sizeof(float));
      for (int j = 0; j < dim; ++j) EXPECT_EQ(row[j], static_cast<float>(keys[i] * 1000 + j));
    }
    FloatRows three(4, 4, 3);
    std::vector<std::string_view> reversed(three.views.rbegin(), three.views.rend());
    GetResult dense = store->GetBatch(reversed);
    ASSERT_TRUE(dense.leaves[0].is_dense);
    for (int i = 0; i < 4; ++i) ExpectRow(dense, i, 7 - i, 3);
  }
}

// Opening sizes the index from the rows per byte of the files indexed so
// far and the bytes of those still to come. Estimated per file instead, one
// large segment first (as group commit writes when the writer falls behind)
// would size it for a hundred more large segments: 128x the memory.
TEST(StoreTest, OpeningSegmentsOfVeryDifferentSizesSizesTheIndexByBytes) {
  TempDir tmp;
  Options options{.flush_every = 3000, .async_write = false};
  {
    auto store = OpenFloat(tmp.path(), options);
    FloatRows large(0, 3000, 16);
    store->Put(large.views, std::span(&large.leaf, 1));
    store->Flush();
    for (int s = 0; s < 100; ++s) {
      FloatRows small(3000 + 10 * s, 10, 16);
      store->Put(small.views, std::span(&small.leaf, 1));
      store->Flush();
    }
  }
  auto store = OpenFloat(tmp.path(), options);
  ASSERT_EQ(store->GetStats().segments, 101u);
  EXPECT_EQ(store->size(), 4000u);
  // 4000 entries need 8192 slots of 12 bytes at load <= 0.8; allow one
  // doubling for the estimate (the old one reserved 2^19 slots).
  EXPECT_LE(store->GetStats().index_bytes, 16384u * 12u);
  FloatRows all(0, 4000, 16);
  GetResult result = store->GetBatch(all.views);
  for (int i = 0; i < 4000; i += 397) ExpectRow(result, i, i, 16);
}

TEST(StoreTest, BlobLeavesRoundTrip) {
  TempDir tmp;
  auto store = Store::Open(tmp.path(), "blobs", {});
  Schema schema;
  schema.output_structure = "dict";
  schema.leaves = {{"visual", LeafKind::kTensor, DType::kBFloat16}, {"meta", LeafKind::kBlob, DType::kFloat32}};
  store->EnsureSchema(schema);
  std::vector<uint16_t> visual = {1, 2, 3, 4};
  std::string meta0 = R"({"width": 224})", meta1 = "";
  LeafRows leaves[2];
  leaves[0].is_dense = true;
  leaves[0].base = reinterpret_cast<const std::byte*>(visual.data());
  leaves[0].row_bytes = leaves[0].row_stride = 4;
  leaves[0].shape = {2};
  leaves[1].rows = {std::as_bytes(std::span(meta0)), std::as_bytes(std::span(meta1))};
  std::vector<std::string_view> keys = {"a", "b"};
  store->Put(keys, leaves);
  store->Close();
  auto reopened = Store::Open(tmp.path(), "blobs", {});
  EXPECT_EQ(reopened->schema()->leaves[0].dtype, DType::kBFloat16);
  GetResult result = reopened->GetBatch(keys);
  ASSERT_TRUE(result.leaves[0].is_dense);
  EXPECT_EQ(std::memcmp(result.leaves[0].dense.get(), visual.data(), 8), 0);
  std::string got(reinterpret_cast<const char*>(result.leaves[1].rows[0]->data()), result.leaves[1].rows[0]->size());
  EXPECT_EQ(got, meta0);
  EXPECT_TRUE(result.leaves[1].rows[1]->empty());
}

TEST(StoreTest, SchemaMismatchIsRejectedAndNamesTheDifference) {
  TempDir tmp;
  auto store = OpenFloat(tmp.path());
  Schema other = FloatSchema();
  other.leaves[0].dtype = DType::kFloat16;
  try {
    store->EnsureSchema(other);
    FAIL() << "expected SchemaMismatchError";
  } catch (const SchemaMismatchError& e) {
    EXPECT_NE(std::string(e.what()).find("float16"), std::string::npos) << e.what();
  }
}

TEST(StoreTest, PutRejectsRowsInconsistentWithTheSchema) {
  TempDir tmp;
  auto store = OpenFloat(tmp.path());
  FloatRows rows(0, 2, 4);
  rows.leaf.shape = {5};  // 5 floats claimed, 4 given
  EXPECT_THROW(store->Put(rows.views, std::span(&rows.leaf, 1)), InvalidArgumentError);
  EXPECT_EQ(store->size(), 0u);
}

TEST(StoreTest, ModuleIdMustBeOnePathComponent) {
  TempDir tmp;
  for (std::string bad : std::vector<std::string>{"", ".", "..", "a/b", "..\\x", "a\nb", "x\x01"}) {
    EXPECT_THROW(Store::Open(tmp.path(), bad, {}), InvalidArgumentError) << bad;
  }
  EXPECT_NO_THROW(Store::Open(tmp.path(), "résnet-50_v1.2", {}));
}

TEST(StoreTest, CorruptSegmentIsSkippedWithAWarning) {
  TempDir tmp;
  FloatRows a(0, 5, 4), b(5, 5, 4);
  {
    auto store = OpenFloat(tmp.path());
    store->Put(a.views, std::span(&a.leaf, 1));
    store->Flush();
    store->Put(b.views, std::span(&b.leaf, 1));
    store->Flush();
  }
  std::string segment = tmp.path() + "/features_v1/segments/segment_1.arrow";
  ASSERT_TRUE(fs::exists(segment));
  fs::resize_file(segment, fs::file_size(segment) / 2);
  auto store = Store::Open(tmp.path(), "features_v1", {});
  auto warnings = store->TakeWarnings();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("segment_1.arrow"), std::string::npos);
  GetResult ok = store->GetBatch(a.views);
  for (int i = 0; i < 5; ++i) ExpectRow(ok, i, i, 4);
  GetResult lost = store->GetBatch(b.views);
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(lost.found[i]);
  EXPECT_EQ(store->GetStats().skipped_segments, 1u);
}

// Opening reads segment files on several threads, in chunks (half the
// mapping cap each): rows must still be indexed in segment order across
// chunks and threads, and unreadable files among them reported one by one.
TEST(StoreTest, ManySegmentsOpenedInParallelChunksKeepTheirOrder) {
  TempDir tmp;
  constexpr int kSegments = 300;  // several threads' worth of files
  {
    // Synchronous: exactly one segment per flush_every rows.
    auto store = OpenFloat(tmp.path(), Options{.flush_every = 2, .async_write = false});
    for (int s = 0; s < kSegments; ++s) {
      // Segment s holds keys s % 7 and 7 + s % 5, rewritten by later segments.
      FloatRows first(s % 7, 1, 2, static_cast<float>(s)), second(7 + s % 5, 1, 2, static_cast<float>(s));
      store->Put(first.views, std::span(&first.leaf, 1));
      store->Put(second.views, std::span(&second.leaf, 1));
    }
    store->Flush();
    EXPECT_EQ(store->GetStats().segments, static_cast<uint64_t>(kSegments));
  }
  // Damage three segments that are nobody's newest copy.
  for (int s : {3, 150, 151}) {
    std::string path = tmp.path() + "/features_v1/segments/segment_" + std::to_string(s) + ".arrow";
    ASSERT_TRUE(fs::exists(path)) << path;
    fs::resize_file(path, fs::file_size(path) / 2);
  }
  auto store = Store::Open(tmp.path(), "features_v1", Options{.max_mapped_segments = 16});  // chunks of 8
  EXPECT_EQ(store->TakeWarnings().size(), 3u);
  EXPECT_EQ(store->GetStats().skipped_segments, 3u);
  EXPECT_EQ(store->size(), 12u);
  for (int key = 0; key < 12; ++key) {
    // The last segment that wrote `key`.
    int last = -1;
    for (int s = 0; s < kSegments; ++s) {
      if (s % 7 == key || 7 + s % 5 == key) last = s;
    }
    FloatRows expected(key, 1, 2, static_cast<float>(last));
    GetResult result = store->GetBatch(expected.views);
    ExpectRow(result, 0, key, 2, static_cast<float>(last));
  }
}

TEST(StoreTest, CorruptSchemaJsonIsRecoveredFromSegments) {
  TempDir tmp;
  FloatRows rows(0, 3, 4);
  {
    auto store = OpenFloat(tmp.path());
    store->Put(rows.views, std::span(&rows.leaf, 1));
    store->Flush();
  }
  std::ofstream(tmp.path() + "/features_v1/schema.json") << "{ not json";
  auto store = Store::Open(tmp.path(), "features_v1", {});
  EXPECT_FALSE(store->TakeWarnings().empty());
  ASSERT_TRUE(store->schema().has_value());
  EXPECT_EQ(store->schema()->leaves[0].dtype, DType::kFloat32);
  GetResult result = store->GetBatch(rows.views);
  for (int i = 0; i < 3; ++i) ExpectRow(result, i, i, 4);
}

TEST(StoreTest, TwoWritersClaimDistinctRangesAndSeeEachOtherAfterRefresh) {
  TempDir tmp;
  auto first = OpenFloat(tmp.path());
  auto second = OpenFloat(tmp.path());
  FloatRows a(0, 4, 2), b(100, 4, 2);
  first->Put(a.views, std::span(&a.leaf, 1));
  second->Put(b.views, std::span(&b.leaf, 1));
  first->Flush();
  second->Flush();
  EXPECT_NE(first->GetStats().writer_id, second->GetStats().writer_id);
  first->Refresh();
  second->Refresh();
  GetResult in_first = first->GetBatch(b.views);
  GetResult in_second = second->GetBatch(a.views);
  for (int i = 0; i < 4; ++i) {
    ExpectRow(in_first, i, 100 + i, 2);
    ExpectRow(in_second, i, i, 2);
  }
}

TEST(StoreTest, LeftoverTemporaryFilesOfDeadWritersAreRemoved) {
  TempDir tmp;
  {
    auto store = OpenFloat(tmp.path());
    FloatRows rows(0, 1, 1);
    store->Put(rows.views, std::span(&rows.leaf, 1));
    store->Flush();
  }
  std::string leftover = tmp.path() + "/features_v1/segments/segment_7.arrow.tmp";
  std::ofstream(leftover) << "half a segment";
  auto store = OpenFloat(tmp.path());
  FloatRows rows(1, 1, 1);
  store->Put(rows.views, std::span(&rows.leaf, 1));
  store->Flush();
  EXPECT_FALSE(fs::exists(leftover));
}

TEST(StoreTest, NonPersistingStoreKeepsRowsInItsHotCacheOnly) {
  TempDir tmp;
  auto store = OpenFloat(tmp.path(), Options{.hot_cache_rows = 3, .persist = false});
  FloatRows rows(0, 5, 2);
  store->Put(rows.views, std::span(&rows.leaf, 1));
  store->Flush();
  EXPECT_FALSE(fs::exists(tmp.path() + "/features_v1/segments/segment_0.arrow"));
  GetResult result = store->GetBatch(rows.views);
  // The three most recent rows are kept; the two oldest were evicted.
  EXPECT_EQ(result.found, (std::vector<uint8_t>{0, 0, 1, 1, 1}));
  ExpectRow(result, 4, 4, 2);
}

TEST(StoreTest, BackgroundWriteErrorsSurfaceOnFlushAndDataIsKept) {
  TempDir tmp;
  auto store = OpenFloat(tmp.path());
  FloatRows rows(0, 4, 2);
  store->Put(rows.views, std::span(&rows.leaf, 1));
  std::string segments = tmp.path() + "/features_v1/segments";
  fs::remove_all(segments);
  std::ofstream(segments) << "a file where the directory should be";
  EXPECT_THROW(store->Flush(), IOError);
  // Rows are still served from memory, and a retry succeeds once the problem is fixed.
  GetResult result = store->GetBatch(rows.views);
  for (int i = 0; i < 4; ++i) ExpectRow(result, i, i, 2);
  fs::remove(segments);
  fs::create_directory(segments);
  store->Flush();
  store->Close();
  auto reopened = Store::Open(tmp.path(), "features_v1", {});
  GetResult durable = reopened->GetBatch(rows.views);
  for (int i = 0; i < 4; ++i) ExpectRow(durable, i, i, 2);
}

TEST(StoreTest, ConcurrentReadersAndWritersSeeOnlyCompleteRows) {
  TempDir tmp;
  auto store = OpenFloat(tmp.path(), Options{.flush_every = 64});
  constexpr int kDim = 16, kRows = 2000;
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::thread writer([&] {
    for (int first = 0; first < kRows; first += 50) {
      FloatRows rows(first, 50, kDim);
      store->Put(rows.views, std::span(&rows.leaf, 1));
    }
    store->Flush();
    done = true;
  });
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      std::mt19937 rng(r);
      while (!done) {
        std::vector<std::string> keys;
        std::vector<std::string_view> views;
        for (int i = 0; i < 32; ++i) keys.push_back("sample_" + std::to_string(rng() % kRows));
        for (const auto& k : keys) views.push_back(k);
        GetResult result = store->GetBatch(views);
        for (size_t i = 0; i < keys.size(); ++i) {
          if (!result.found[i]) continue;
          int key = std::stoi(keys[i].substr(7));
          std::vector<float> row(kDim);
          if (result.leaves[0].is_dense) {
            std::memcpy(row.data(), result.leaves[0].dense.get() + i * kDim * 4, kDim * 4);
          }
          for (int j = 0; j < kDim; ++j) {
            if (row[j] != static_cast<float>(key * 1000 + j)) ++bad;
          }
        }
      }
    });
  }
  writer.join();
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(store->size(), static_cast<size_t>(kRows));
}

}  // namespace
}  // namespace torchcachex

namespace torchcachex {
namespace {

// Flips the lowest bit of the byte `delta` bytes into the first occurrence of
// `needle` in file `path` (simulated bit rot). False if `needle` is absent.
bool FlipBitIn(const std::string& path, std::string_view needle, size_t delta) {
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  size_t at = bytes.find(needle);
  if (at == std::string::npos) return false;
  bytes[at + delta] ^= 0x01;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  return true;
}

TEST(StoreTest, ManySegmentsAreServedWithBoundedMemoryMaps) {
  TempDir tmp;
  Options options;
  options.flush_every = 4;
  options.async_write = false;  // exactly one segment per 4 rows
  options.max_mapped_segments = 3;
  {
    auto store = OpenFloat(tmp.path(), options);
    FloatRows rows(0, 40, 2);
    store->Put(rows.views, std::span(&rows.leaf, 1));
    store->Flush();
    EXPECT_LE(store->GetStats().mapped_segments, 3u);
  }
  auto store = OpenFloat(tmp.path(), options);
  EXPECT_EQ(store->GetStats().segments, 10u);
  EXPECT_LE(store->GetStats().mapped_segments, 3u);
  FloatRows rows(0, 40, 2);
  for (int pass = 0; pass < 2; ++pass) {
    GetResult result = store->GetBatch(rows.views);
    for (int i = 0; i < 40; ++i) ExpectRow(result, i, i, 2);
    EXPECT_LE(store->GetStats().mapped_segments, 3u);
  }
  EXPECT_EQ(store->size(), 40u);
}

TEST(StoreTest, FlippedBytesAreDetectedByTheChecksumAndNeverServed) {
  TempDir tmp;
  FloatRows rows(0, 8, 16);
  {
    auto store = OpenFloat(tmp.path());
    store->Put(rows.views, std::span(&rows.leaf, 1));
    store->Flush();
  }
  std::string segment = tmp.path() + "/features_v1/segments/segment_0.arrow";
  // Flip one bit inside the float values of row 3 (found by its byte pattern).
  float needle = 3005.0f;
  ASSERT_TRUE(FlipBitIn(segment, std::string_view(reinterpret_cast<const char*>(&needle), 4), 0));

  auto store = Store::Open(tmp.path(), "features_v1", {});
  GetResult result = store->GetBatch(rows.views);
  for (int i = 0; i < 8; ++i) EXPECT_FALSE(result.found[i]) << i;
  auto warnings = store->TakeWarnings();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("checksum"), std::string::npos) << warnings[0];
  EXPECT_EQ(store->GetStats().skipped_segments, 1u);
}

TEST(StoreTest, ADamagedKeyIsDetectedWhenTheSegmentIsOpened) {
  // A flipped key byte would make the damaged segment unreachable by its real
  // keys, so the lazy value check would never run: the key checksum reports it.
  TempDir tmp;
  FloatRows rows(0, 8, 4);
  {
    auto store = OpenFloat(tmp.path());
    store->Put(rows.views, std::span(&rows.leaf, 1));
    store->Flush();
  }
  std::string segment = tmp.path() + "/features_v1/segments/segment_0.arrow";
  const std::string_view key = rows.views[5];
  ASSERT_TRUE(FlipBitIn(segment, key, key.size() - 1));

  auto store = Store::Open(tmp.path(), "features_v1", {});
  auto warnings = store->TakeWarnings();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("key column checksum"), std::string::npos) << warnings[0];
  EXPECT_EQ(store->GetStats().skipped_segments, 1u);
  EXPECT_EQ(store->size(), 0u);
}

// Writes `rows` (keys 0..7, 16 floats) twice: segment_0, then segment_1 with
// the same rows, newest. Then flips a bit of one value (key 3, element 5) in
// segment_1, so that its checksum fails when it is first served.
void WriteTwiceAndDamageTheNewestCopy(const std::string& dir, const FloatRows& rows) {
  {
    auto store = OpenFloat(dir);
    store->Put(rows.views, std::span(&rows.leaf, 1));
    store->Flush();
    store->Put(rows.views, std::span(&rows.leaf, 1));
    store->Flush();
  }
  float needle = 3005.0f;
  ASSERT_TRUE(FlipBitIn(dir + "/features_v1/segments/segment_1.arrow",
                        std::string_view(reinterpret_cast<const char*>(&needle), 4), 0));
}

TEST(StoreTest, AnIntactOlderCopyIsServedWhenTheNewestCopyIsDamaged) {
  TempDir tmp;
  FloatRows rows(0, 8, 16);
  WriteTwiceAndDamageTheNewestCopy(tmp.path(), rows);

  auto store = Store::Open(tmp.path(), "features_v1", {});
  GetResult result = store->GetBatch(rows.views);
  for (int i = 0; i < 8; ++i) ExpectRow(result, i, i, 16);
  auto warnings = store->TakeWarnings();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("segment_1.arrow"), std::string::npos) << warnings[0];
}

TEST(StoreTest, UnwrittenRowsStayVisibleWhenADamagedSegmentIsDroppedFromTheIndex) {
  // Dropping a damaged segment rebuilds the index; rows put but not yet
  // written must be indexed again too, or they would be lost until written.
  TempDir tmp;
  FloatRows rows(0, 8, 16);
  WriteTwiceAndDamageTheNewestCopy(tmp.path(), rows);

  auto store = OpenFloat(tmp.path(), Options{.flush_every = 1000});  // new rows stay pending
  FloatRows fresh(8, 8, 16);
  store->Put(fresh.views, std::span(&fresh.leaf, 1));
  GetResult old_rows = store->GetBatch(rows.views);  // finds the damage, reindexes
  for (int i = 0; i < 8; ++i) ExpectRow(old_rows, i, i, 16);
  ASSERT_EQ(store->TakeWarnings().size(), 1u);
  GetResult new_rows = store->GetBatch(fresh.views);
  for (int i = 0; i < 8; ++i) ExpectRow(new_rows, i, 8 + i, 16);
  EXPECT_EQ(store->GetStats().pending_rows, 8u);
  EXPECT_EQ(store->size(), 16u);
}

TEST(StoreTest, APutThatFailsPartWayLeavesItsEarlierRowsReadable) {
  // Storing a key again verifies it against its older row, which maps that
  // row's segment. If the file was removed since the store opened it, the
  // put fails there; the rows it appended before must stay readable.
  TempDir tmp;
  FloatRows old_rows(0, 8, 4);
  FloatRows other(100, 8, 4);
  {
    auto store = OpenFloat(tmp.path());
    store->Put(old_rows.views, std::span(&old_rows.leaf, 1));
    store->Flush();  // segment_0
    store->Put(other.views, std::span(&other.leaf, 1));
    store->Flush();  // segment_1
  }
  auto store = OpenFloat(tmp.path(), Options{.max_mapped_segments = 1});
  ASSERT_TRUE(store->GetBatch(other.views).found[0]);  // segment_1 mapped, segment_0 not
  fs::remove(tmp.path() + "/features_v1/segments/segment_0.arrow");

  FloatRows mixed(200, 4, 4);  // sample_200, sample_201, then sample_3 (in segment_0), sample_203
  mixed.keys[2] = "sample_3";
  for (size_t i = 0; i < mixed.keys.size(); ++i) mixed.views[i] = mixed.keys[i];
  EXPECT_THROW(store->Put(mixed.views, std::span(&mixed.leaf, 1)), Error);
  std::vector<std::string_view> first_two(mixed.views.begin(), mixed.views.begin() + 2);
  GetResult result = store->GetBatch(first_two);
  ExpectRow(result, 0, 200, 4);
  ExpectRow(result, 1, 201, 4);
}

}  // namespace
}  // namespace torchcachex
