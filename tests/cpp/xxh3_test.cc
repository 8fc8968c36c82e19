// XXH3-64 (seed 0) against reference vectors. The vectors were produced with
// the reference implementation (python `xxhash` 4.1.0, libxxhash 0.8.4,
// xxh3_64_intdigest); they are constants here so the test has no dependency.

#include "util/xxh3.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace torchcachex {
namespace {

// byte[i] = (31 * i + 7) & 0xff.
std::vector<std::byte> Pattern(size_t n) {
  std::vector<std::byte> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((31 * i + 7) & 0xff);
  return out;
}

// Lengths around every boundary of the algorithm: 0, 1-3, 4-8, 9-16, 17-128,
// 129-240 bytes; then whole and partial 64-byte stripes and 1024-byte blocks.
const std::vector<std::pair<size_t, uint64_t>> kExpected = {
      {0, 0x2d06800538d394c2ULL},
      {1, 0x4c5cca45d0f4811fULL},
      {2, 0xa7e250c97710ff27ULL},
      {3, 0x15f7093b173d005cULL},
      {4, 0xdca012f95811b6b9ULL},
      {5, 0xb290cafc7b254345ULL},
      {7, 0x7561869c23da3c1bULL},
      {8, 0xdec6a9a43575982eULL},
      {9, 0xcbe393399f17ffbdULL},
      {15, 0x545e19990471dc37ULL},
      {16, 0x7e484c18d74895d0ULL},
      {17, 0x208bde5ee2bed407ULL},
      {31, 0xa937652b0119ca11ULL},
      {32, 0x03df0ac5255d1446ULL},
      {33, 0x199a362122d71f46ULL},
      {63, 0x76d4eec1f092847fULL},
      {64, 0xdd30702ab46b3745ULL},
      {65, 0xfab36b851b94ce20ULL},
      {96, 0xd245cd2541582982ULL},
      {127, 0xa915ed6396db8cc0ULL},
      {128, 0xf92b70eaa21a6288ULL},
      {129, 0xf8f76713f2bb60faULL},
      {200, 0x12fdb864685f344dULL},
      {239, 0xcaa9b7a588464745ULL},
      {240, 0xccc7375172c41f03ULL},
      {241, 0x0b3b630948ce4a00ULL},
      {255, 0x89932170686cdd9aULL},
      {256, 0xec85b75bafe6ca74ULL},
      {257, 0x12ef0ff633841459ULL},
      {319, 0x29fe23f82501f66cULL},
      {320, 0x73df0720aa2b40f3ULL},
      {321, 0x00eb6918e05d3cc7ULL},
      {1023, 0xf0d330ce2b3300fbULL},
      {1024, 0x23bc880ebf0d29c6ULL},
      {1025, 0xc09fdfbc398c7d82ULL},
      {1087, 0x3ab6ed4b5be06fccULL},
      {1088, 0xa16bad67843c5a45ULL},
      {1089, 0x822327a86aad957cULL},
      {2047, 0xc49f1b36d955611eULL},
      {2048, 0x19f6f9c987331373ULL},
      {2049, 0x5045460f5d85c275ULL},
      {16383, 0x880f54f2d16d2d6fULL},
      {16384, 0xc76b744a26488b31ULL},
      {16385, 0x2c8ceb7b94c3bab0ULL},
      {100000, 0xccf90df7e7e37036ULL},
      {1048576, 0x269eb834f6c110a9ULL},
      {1048579, 0xbd1d0e8fc15f8450ULL},
};

TEST(Xxh3Test, MatchesTheReferenceImplementationAtEveryBoundary) {
  for (const auto& [length, expected] : kExpected) {
    EXPECT_EQ(Xxh3_64(Pattern(length)), expected) << "length " << length;
  }
}

TEST(Xxh3Test, ReadsUnalignedInput) {
  for (const auto& [length, expected] : kExpected) {
    if (length > 4096) continue;
    std::vector<std::byte> shifted(length + 3);
    const std::vector<std::byte> data = Pattern(length);
    std::copy(data.begin(), data.end(), shifted.begin() + 3);
    EXPECT_EQ(Xxh3_64(std::span(shifted).subspan(3)), expected) << "length " << length;
  }
}

TEST(Xxh3StreamTest, AnySplitOfTheInputGivesTheOneShotDigest) {
  std::mt19937_64 rng(42);
  for (const auto& [length, expected] : kExpected) {
    const std::vector<std::byte> data = Pattern(length);
    for (int trial = 0; trial < 20; ++trial) {
      Xxh3Stream stream;
      size_t at = 0;
      while (at < length) {
        // Mostly small pieces, sometimes large ones, sometimes empty ones.
        const size_t limit = trial % 3 == 0 ? 5000 : (trial % 3 == 1 ? 70 : 3);
        const size_t piece = std::min(length - at, static_cast<size_t>(rng() % (limit + 1)));
        stream.Update(std::span(data).subspan(at, piece));
        at += piece;
      }
      EXPECT_EQ(stream.Digest(), expected) << "length " << length << ", trial " << trial;
    }
  }
}

TEST(Xxh3StreamTest, DigestDoesNotConsumeTheState) {
  const std::vector<std::byte> data = Pattern(3000);
  Xxh3Stream stream;
  stream.Update(std::span(data).first(1000));
  EXPECT_EQ(stream.Digest(), Xxh3_64(std::span(data).first(1000)));
  stream.Update(std::span(data).subspan(1000));
  EXPECT_EQ(stream.Digest(), Xxh3_64(data));
}

}  // namespace
}  // namespace torchcachex
