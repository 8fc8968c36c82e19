// KeyIndex: lookups at scale, forced hash collisions, overwrite semantics,
// segment erasure (against a reference model) and memory per entry.

#include "index/key_index.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "torchcachex/errors.h"
#include "util/hash.h"

namespace torchcachex {
namespace {

// Stands in for the segments' key columns: keys_[segment][row].
class FakeSegments {
 public:
  RowLocation Append(uint32_t segment, std::string key) {
    if (keys_.size() <= segment) keys_.resize(segment + 1);
    keys_[segment].push_back(std::move(key));
    return RowLocation{segment, static_cast<uint32_t>(keys_[segment].size() - 1)};
  }
  KeyIndex::KeyAt key_at() const {
    return [this](RowLocation loc) -> std::string_view {
      ++lookups_;
      return keys_.at(loc.segment).at(loc.row);
    };
  }
  size_t lookups() const { return lookups_; }

 private:
  std::vector<std::vector<std::string>> keys_;
  mutable size_t lookups_ = 0;
};

bool SameLocation(std::optional<RowLocation> got, RowLocation want) {
  return got && got->segment == want.segment && got->row == want.row;
}

TEST(KeyIndexTest, EmptyIndex) {
  KeyIndex index;
  FakeSegments segments;
  EXPECT_EQ(index.size(), 0u);
  EXPECT_EQ(index.memory_bytes(), 0u);
  EXPECT_FALSE(index.Find(HashKey("x"), "x", segments.key_at()));
  index.EraseSegment(0);
  EXPECT_EQ(index.size(), 0u);
}

TEST(KeyIndexTest, MillionRandomKeys) {
  constexpr size_t kKeys = 1000000;
  std::mt19937_64 rng(1234);
  FakeSegments segments;
  std::vector<std::string> keys;
  std::vector<RowLocation> locations;
  keys.reserve(kKeys);
  KeyIndex index;
  const auto key_at = segments.key_at();
  for (size_t i = 0; i < kKeys; ++i) {
    // Unique by construction (the counter), random-looking otherwise.
    keys.push_back("sample/" + std::to_string(rng()) + "/" + std::to_string(i));
    locations.push_back(segments.Append(static_cast<uint32_t>(i / 4096), keys.back()));
    index.Upsert(HashKey(keys.back()), keys.back(), locations.back(), key_at);
  }
  ASSERT_EQ(index.size(), kKeys);
  for (size_t i = 0; i < kKeys; ++i) {
    ASSERT_TRUE(SameLocation(index.Find(HashKey(keys[i]), keys[i], key_at), locations[i])) << i;
  }
  for (size_t i = 0; i < 100000; ++i) {
    std::string absent = "absent/" + std::to_string(rng());
    ASSERT_FALSE(index.Find(HashKey(absent), absent, key_at)) << absent;
  }
  // 12-byte slots at load >= 0.4: at most 30 bytes per entry.
  double per_entry = static_cast<double>(index.memory_bytes()) / index.size();
  EXPECT_LE(per_entry, 32.0);
  RecordProperty("bytes_per_entry", std::to_string(per_entry));
}

TEST(KeyIndexTest, TagMatchesAreRareWithRealHashes) {
  // Every Find of a present key costs one key read; a foreign tag match
  // costs one more. With XXH64 the extra reads should be negligible.
  FakeSegments segments;
  KeyIndex index;
  const auto key_at = segments.key_at();
  constexpr size_t kKeys = 200000;
  std::vector<std::string> keys;
  for (size_t i = 0; i < kKeys; ++i) {
    keys.push_back(std::to_string(i));
    index.Upsert(HashKey(keys.back()), keys.back(), segments.Append(0, keys.back()), key_at);
  }
  size_t before = segments.lookups();
  for (const std::string& key : keys) ASSERT_TRUE(index.Find(HashKey(key), key, key_at));
  size_t reads = segments.lookups() - before;
  EXPECT_GE(reads, kKeys);
  EXPECT_LT(reads, kKeys + kKeys / 100);
}

TEST(KeyIndexTest, OverwriteKeepsOneEntryPerKey) {
  FakeSegments segments;
  KeyIndex index;
  const auto key_at = segments.key_at();
  RowLocation first = segments.Append(0, "a");
  RowLocation second = segments.Append(1, "a");
  RowLocation other = segments.Append(1, "b");
  index.Upsert(HashKey("a"), "a", first, key_at);
  index.Upsert(HashKey("b"), "b", other, key_at);
  index.Upsert(HashKey("a"), "a", second, key_at);
  EXPECT_EQ(index.size(), 2u);
  EXPECT_TRUE(SameLocation(index.Find(HashKey("a"), "a", key_at), second));
  EXPECT_TRUE(SameLocation(index.Find(HashKey("b"), "b", key_at), other));
  // Re-upserting the same location is a no-op.
  index.Upsert(HashKey("a"), "a", second, key_at);
  EXPECT_EQ(index.size(), 2u);
  // Dropping the segment of the latest row removes the key (the older row is
  // not resurrected: the index only knows the latest location).
  index.EraseSegment(1);
  EXPECT_EQ(index.size(), 0u);
  EXPECT_FALSE(index.Find(HashKey("a"), "a", key_at));
}

TEST(KeyIndexTest, IdenticalHashesStillResolveEveryKey) {
  FakeSegments segments;
  KeyIndex index;
  const auto key_at = segments.key_at();
  constexpr uint64_t kSameHash = 0xDEADBEEFCAFEF00DULL;
  constexpr int kKeys = 3000;
  std::vector<RowLocation> locations;
  for (int i = 0; i < kKeys; ++i) {
    std::string key = "k" + std::to_string(i);
    locations.push_back(segments.Append(static_cast<uint32_t>(i % 3), key));
    index.Upsert(kSameHash, key, locations.back(), key_at);
  }
  // Mix in keys with ordinary hashes so colliding and non-colliding chains interleave.
  for (int i = 0; i < 1000; ++i) {
    std::string key = "n" + std::to_string(i);
    index.Upsert(HashKey(key), key, segments.Append(7, key), key_at);
  }
  ASSERT_EQ(index.size(), static_cast<size_t>(kKeys + 1000));
  for (int i = 0; i < kKeys; ++i) {
    std::string key = "k" + std::to_string(i);
    ASSERT_TRUE(SameLocation(index.Find(kSameHash, key, key_at), locations[i])) << key;
  }
  EXPECT_FALSE(index.Find(kSameHash, "k-absent", key_at));
  // Overwrite within the collision chain.
  RowLocation moved = segments.Append(5, "k42");
  index.Upsert(kSameHash, "k42", moved, key_at);
  EXPECT_EQ(index.size(), static_cast<size_t>(kKeys + 1000));
  EXPECT_TRUE(SameLocation(index.Find(kSameHash, "k42", key_at), moved));
  // Erase one segment from the middle of the chain; the rest stay reachable.
  index.EraseSegment(1);
  for (int i = 0; i < kKeys; ++i) {
    std::string key = "k" + std::to_string(i);
    auto found = index.Find(kSameHash, key, key_at);
    if (i == 42) {
      EXPECT_TRUE(SameLocation(found, moved));
    } else if (i % 3 == 1) {
      EXPECT_FALSE(found) << key;
    } else {
      EXPECT_TRUE(SameLocation(found, locations[i])) << key;
    }
  }
  for (int i = 0; i < 1000; ++i) {
    std::string key = "n" + std::to_string(i);
    EXPECT_TRUE(index.Find(HashKey(key), key, key_at)) << key;
  }
}

TEST(KeyIndexTest, DistinctHashesWithEqualTags) {
  // Hashes whose halves are equal differ in every bit but could share a
  // folded tag; lookups must still be exact.
  FakeSegments segments;
  KeyIndex index;
  const auto key_at = segments.key_at();
  for (uint64_t i = 0; i < 500; ++i) {
    std::string key = std::to_string(i);
    index.Upsert((i << 32) | i, key, segments.Append(0, key), key_at);
  }
  for (uint64_t i = 0; i < 500; ++i) {
    std::string key = std::to_string(i);
    auto found = index.Find((i << 32) | i, key, key_at);
    ASSERT_TRUE(found) << i;
    EXPECT_EQ(found->row, i);
  }
}

// Random Upsert/EraseSegment/Find against std::unordered_map, with a weak
// hash (few distinct values) so that long clusters with mixed homes form and
// backward-shift deletion is exercised across the table's wrap-around.
TEST(KeyIndexTest, MatchesReferenceModelUnderChurn) {
  for (uint64_t distinct_hashes : {uint64_t{1}, uint64_t{5}, uint64_t{97}, uint64_t{0}}) {
    SCOPED_TRACE("distinct hashes: " + std::to_string(distinct_hashes));
    auto hash_of = [&](const std::string& key) {
      uint64_t h = HashKey(key);
      return distinct_hashes == 0 ? h : HashKey(std::to_string(h % distinct_hashes));
    };
    std::mt19937_64 rng(distinct_hashes + 7);
    FakeSegments segments;
    KeyIndex index;
    const auto key_at = segments.key_at();
    std::unordered_map<std::string, RowLocation> model;
    constexpr uint32_t kSegments = 12;
    for (int step = 0; step < 20000; ++step) {
      int op = static_cast<int>(rng() % 100);
      if (op < 2) {
        uint32_t segment = static_cast<uint32_t>(rng() % kSegments);
        index.EraseSegment(segment);
        std::erase_if(model, [&](const auto& kv) { return kv.second.segment == segment; });
      } else {
        std::string key = "key" + std::to_string(rng() % 3000);
        RowLocation loc = segments.Append(static_cast<uint32_t>(rng() % kSegments), key);
        index.Upsert(hash_of(key), key, loc, key_at);
        model[key] = loc;
      }
      if (step % 1000 == 999) {
        ASSERT_EQ(index.size(), model.size());
        for (int k = 0; k < 3000; ++k) {
          std::string key = "key" + std::to_string(k);
          auto it = model.find(key);
          auto found = index.Find(hash_of(key), key, key_at);
          if (it == model.end()) {
            ASSERT_FALSE(found) << key;
          } else {
            ASSERT_TRUE(SameLocation(found, it->second)) << key;
          }
        }
      }
    }
  }
}

TEST(KeyIndexTest, EraseSegmentKeepsOthers) {
  FakeSegments segments;
  KeyIndex index;
  const auto key_at = segments.key_at();
  std::vector<std::pair<std::string, RowLocation>> entries;
  for (int i = 0; i < 50000; ++i) {
    std::string key = "e" + std::to_string(i);
    RowLocation loc = segments.Append(static_cast<uint32_t>(i % 10), key);
    index.Upsert(HashKey(key), key, loc, key_at);
    entries.emplace_back(key, loc);
  }
  size_t before_bytes = index.memory_bytes();
  index.EraseSegment(3);
  index.EraseSegment(3);  // idempotent
  index.EraseSegment(99);  // unknown segment: nothing to do
  EXPECT_EQ(index.size(), 45000u);
  EXPECT_EQ(index.memory_bytes(), before_bytes);
  for (const auto& [key, loc] : entries) {
    auto found = index.Find(HashKey(key), key, key_at);
    if (loc.segment == 3) {
      EXPECT_FALSE(found) << key;
    } else {
      EXPECT_TRUE(SameLocation(found, loc)) << key;
    }
  }
  // Erased keys can come back.
  RowLocation again = segments.Append(11, "e3");
  index.Upsert(HashKey("e3"), "e3", again, key_at);
  EXPECT_TRUE(SameLocation(index.Find(HashKey("e3"), "e3", key_at), again));
  EXPECT_EQ(index.size(), 45001u);
}

TEST(KeyIndexTest, ReservePreventsRehash) {
  FakeSegments segments;
  KeyIndex index;
  const auto key_at = segments.key_at();
  index.Reserve(100000);
  size_t reserved = index.memory_bytes();
  EXPECT_GE(reserved, 100000 * 12u);
  for (int i = 0; i < 100000; ++i) {
    std::string key = std::to_string(i);
    index.Upsert(HashKey(key), key, segments.Append(0, key), key_at);
  }
  EXPECT_EQ(index.memory_bytes(), reserved);
  index.Reserve(10);  // never shrinks
  EXPECT_EQ(index.memory_bytes(), reserved);
  // Reserving more after inserting rehashes without losing entries.
  index.Reserve(1000000);
  EXPECT_GT(index.memory_bytes(), reserved);
  for (int i = 0; i < 100000; ++i) {
    std::string key = std::to_string(i);
    auto found = index.Find(HashKey(key), key, key_at);
    ASSERT_TRUE(found) << key;
    EXPECT_EQ(found->row, static_cast<uint32_t>(i));
  }
}

// A table prepared ahead (off the lock, in the store) is what the growth
// uses when its capacity is the one needed: entries all survive, and the
// table is consumed. Any other capacity is ignored and left as it was.
TEST(KeyIndexTest, GrowingIntoAPreparedTableKeepsEveryEntry) {
  FakeSegments segments;
  KeyIndex index;
  const auto key_at = segments.key_at();
  for (int i = 0; i < 1000; ++i) {
    std::string key = std::to_string(i);
    index.Upsert(HashKey(key), key, segments.Append(0, key), key_at);
  }
  const size_t before = index.capacity();
  EXPECT_EQ(index.GrowthFor(index.size()), 0u);  // fits
  const size_t needed = index.GrowthFor(before);  // cannot stay at load <= 0.8
  ASSERT_EQ(needed, 2 * before);

  KeyIndex::PreparedTable wrong = KeyIndex::Prepare(4 * before);
  index.Reserve(before, &wrong);
  EXPECT_EQ(index.capacity(), needed);
  EXPECT_EQ(wrong.capacity(), 4 * before);  // not the capacity needed: untouched

  KeyIndex::PreparedTable right = KeyIndex::Prepare(2 * needed);
  const size_t entries = index.capacity();  // needs 2 * needed slots
  ASSERT_EQ(index.GrowthFor(entries), 2 * needed);
  index.Reserve(entries, &right);
  EXPECT_EQ(index.capacity(), 2 * needed);
  EXPECT_EQ(right.capacity(), 0u);  // consumed
  EXPECT_EQ(index.size(), 1000u);
  for (int i = 0; i < 1000; ++i) {
    std::string key = std::to_string(i);
    auto found = index.Find(HashKey(key), key, key_at);
    ASSERT_TRUE(found) << key;
    EXPECT_EQ(found->row, static_cast<uint32_t>(i));
  }
  // Later inserts still land and are found.
  for (int i = 1000; i < 2000; ++i) {
    std::string key = std::to_string(i);
    index.Upsert(HashKey(key), key, segments.Append(0, key), key_at);
  }
  for (int i = 0; i < 2000; ++i) {
    std::string key = std::to_string(i);
    EXPECT_TRUE(SameLocation(index.Find(HashKey(key), key, key_at), RowLocation{0, static_cast<uint32_t>(i)}));
  }
}

TEST(KeyIndexTest, ReservedSegmentIdIsRejected) {
  FakeSegments segments;
  KeyIndex index;
  EXPECT_THROW(index.Upsert(HashKey("x"), "x", RowLocation{0xFFFFFFFFu, 0}, segments.key_at()),
               InvalidArgumentError);
  EXPECT_EQ(index.size(), 0u);
}

}  // namespace
}  // namespace torchcachex
