// Many threads on one Store, and a second Store refreshing the same
// directory, at once: the workload scripts/sanitize.sh runs under
// ThreadSanitizer (and ASan). Every public method is called concurrently
// with the background writer, with segments mapped and unmapped under the
// readers (max_mapped_segments = 2). Readers only ever see complete, correct
// rows; when the writers are done every row is visible to both stores.
// No sleeps: threads run until the writers finish their fixed amount of work.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"
#include "torchcachex/errors.h"
#include "torchcachex/store.h"

namespace torchcachex {
namespace {

using testing::FloatSchema;
using testing::TempDir;

namespace fs = std::filesystem;

constexpr int kDim = 8;

std::string KeyOf(int writer, int i) { return "w" + std::to_string(writer) + "_" + std::to_string(i); }
float ValueOf(int writer, int i, int j) { return static_cast<float>(writer * 1000000 + i * 16 + j); }

// Rows [first, first + count) of `writer`, dense.
struct Rows {
  std::vector<std::string> keys;
  std::vector<std::string_view> views;
  std::vector<float> values;
  LeafRows leaf;
  Rows(int writer, int first, int count) {
    for (int i = first; i < first + count; ++i) {
      keys.push_back(KeyOf(writer, i));
      for (int j = 0; j < kDim; ++j) values.push_back(ValueOf(writer, i, j));
    }
    for (const auto& k : keys) views.push_back(k);
    leaf.is_dense = true;
    leaf.base = reinterpret_cast<const std::byte*>(values.data());
    leaf.row_bytes = leaf.row_stride = kDim * sizeof(float);
    leaf.shape = {kDim};
  }
};

// Looks up random keys of every writer; counts found rows that are wrong.
int CheckRandomKeys(Store& store, std::mt19937& rng, int writers, int rows_per_writer) {
  std::vector<std::pair<int, int>> ids;
  std::vector<std::string> keys;
  for (int n = 0; n < 24; ++n) {
    int w = static_cast<int>(rng() % writers), i = static_cast<int>(rng() % rows_per_writer);
    ids.emplace_back(w, i);
    keys.push_back(KeyOf(w, i));
  }
  keys.push_back("never_written");
  std::vector<std::string_view> views(keys.begin(), keys.end());
  GetResult result = store.GetBatch(views);
  int bad = result.found.back() ? 1 : 0;
  for (size_t n = 0; n < ids.size(); ++n) {
    if (!result.found[n]) continue;
    const LeafResult& leaf = result.leaves.at(0);
    if (!leaf.is_dense || leaf.row_bytes != kDim * sizeof(float)) {
      ++bad;
      continue;
    }
    float row[kDim];
    std::memcpy(row, leaf.dense.get() + n * leaf.row_bytes, sizeof(row));
    for (int j = 0; j < kDim; ++j) {
      if (row[j] != ValueOf(ids[n].first, ids[n].second, j)) ++bad;
    }
  }
  return bad;
}

TEST(StoreThreadsTest, EveryMethodAtOnceWithMappingChurnAndASecondStore) {
  TempDir tmp;
  constexpr int kWriters = 2, kRowsPerWriter = 600, kBatch = 10;
  Options options;
  options.flush_every = 16;
  options.max_mapped_segments = 2;
  options.max_queued_segments = 2;
  auto store = Store::Open(tmp.path(), "m", options);
  store->EnsureSchema(FloatSchema());
  // A second store on the same directory that does not write: it sees the
  // first one's rows through Refresh() as they are flushed.
  Options reader_options;
  reader_options.persist = false;
  reader_options.max_mapped_segments = 2;
  auto other = Store::Open(tmp.path(), "m", reader_options);

  std::atomic<int> writers_left{kWriters};
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      for (int first = 0; first < kRowsPerWriter; first += kBatch) {
        Rows rows(w, first, kBatch);
        store->Put(rows.views, std::span(&rows.leaf, 1));
        if ((first / kBatch) % 7 == 3) store->Flush();
      }
      store->Flush();
      --writers_left;
    });
  }
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      std::mt19937 rng(r);
      while (writers_left.load() > 0) {
        bad += CheckRandomKeys(*store, rng, kWriters, kRowsPerWriter);
        (void)store->Contains(KeyOf(r, static_cast<int>(rng() % kRowsPerWriter)));
      }
    });
  }
  threads.emplace_back([&] {
    std::mt19937 rng(7);
    while (writers_left.load() > 0) {
      Stats stats = store->GetStats();
      if (stats.mapped_segments > 2 + 1) ++bad;  // the cap, plus one being mapped by a lookup
      (void)store->size();
      (void)store->TakeWarnings();
      (void)other->Refresh();
      bad += CheckRandomKeys(*other, rng, kWriters, kRowsPerWriter);
    }
  });
  for (auto& t : threads) t.join();

  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(store->size(), static_cast<size_t>(kWriters * kRowsPerWriter));
  EXPECT_EQ(store->GetStats().pending_rows, 0u);
  EXPECT_TRUE(store->TakeWarnings().empty());
  // Every flushed row is visible to the second store once it refreshes. Its
  // directory scan trusts a recent mtime only after a settling delay, so a
  // fresh store stands in for "a later refresh" here.
  auto later = Store::Open(tmp.path(), "m", reader_options);
  for (auto* s : {other.get(), later.get()}) {
    (void)s->Refresh();
    for (int w = 0; w < kWriters; ++w) {
      Rows rows(w, 0, kRowsPerWriter);
      GetResult result = s->GetBatch(rows.views);
      for (int i = 0; i < kRowsPerWriter; ++i) {
        if (s == later.get()) ASSERT_TRUE(result.found[i]) << rows.keys[i];
        if (!result.found[i]) continue;
        ASSERT_EQ(std::memcmp(result.leaves[0].dense.get() + i * kDim * sizeof(float),
                              rows.values.data() + i * kDim, kDim * sizeof(float)),
                  0)
            << rows.keys[i];
      }
    }
  }
  EXPECT_EQ(later->size(), static_cast<size_t>(kWriters * kRowsPerWriter));
  store->Close();
}

// Close() racing with lookups and puts on other threads: each call either
// completes normally or throws ClosedError; nothing crashes or hangs.
TEST(StoreThreadsTest, CloseWhileOtherThreadsUseTheStore) {
  TempDir tmp;
  Options options;
  options.flush_every = 8;
  auto store = Store::Open(tmp.path(), "m", options);
  store->EnsureSchema(FloatSchema());
  std::atomic<bool> closing{false};
  std::atomic<int> unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      // At least 200 calls each, and on until Close() has begun.
      for (int i = 0; i < 200 || !closing.load(); ++i) {
        try {
          Rows rows(t, i * 4, 4);
          if (t == 0) {
            store->Put(rows.views, std::span(&rows.leaf, 1));
          } else {
            (void)store->GetBatch(rows.views);
            (void)store->GetStats();
          }
        } catch (const ClosedError&) {
          if (!closing.load()) ++unexpected;  // only a closed store may refuse
        } catch (const std::exception&) {
          ++unexpected;
        }
      }
    });
  }
  {
    Rows rows(9, 0, 64);
    store->Put(rows.views, std::span(&rows.leaf, 1));
    store->Flush();
  }
  closing = true;
  store->Close();
  for (auto& t : threads) t.join();
  EXPECT_EQ(unexpected.load(), 0);
  // What was flushed before Close() is on disk.
  auto reopened = Store::Open(tmp.path(), "m", {});
  Rows rows(9, 0, 64);
  GetResult result = reopened->GetBatch(rows.views);
  for (int i = 0; i < 64; ++i) EXPECT_TRUE(result.found[i]);
}

TEST(StoreThreadsTest, RefreshWhileWritingLoadsNoOwnSegmentTwice) {
  // A refresh may list a segment the store has just renamed into place and
  // not yet published; it must leave that segment to the writer, or the file
  // would be mapped and counted twice.
  TempDir tmp;
  auto store = Store::Open(tmp.path(), "features_v1", Options{.flush_every = 8});
  store->EnsureSchema(FloatSchema());
  constexpr int kBatches = 64;
  std::atomic<bool> done{false};
  std::thread refresher([&] {
    while (!done.load()) store->Refresh();
  });
  for (int b = 0; b < kBatches; ++b) {
    Rows rows(0, b * 8, 8);
    store->Put(rows.views, std::span(&rows.leaf, 1));
  }
  store->Flush();
  done.store(true);
  refresher.join();
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(tmp.path() + "/features_v1/segments")) {
    if (entry.path().extension() == ".arrow") ++files;
  }
  const Stats stats = store->GetStats();
  EXPECT_EQ(stats.segments, files);
  EXPECT_EQ(stats.entries, static_cast<size_t>(kBatches * 8));
  std::mt19937 rng(5);
  EXPECT_EQ(CheckRandomKeys(*store, rng, 1, kBatches * 8), 0);
}

}  // namespace
}  // namespace torchcachex
