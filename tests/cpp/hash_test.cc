// XXH64 (seed 0) against reference vectors. The vectors were produced with
// the reference implementation (python `xxhash` package); they are constants
// here so the test has no dependency.

#include "util/hash.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <span>
#include <string>

namespace torchcachex {
namespace {

TEST(HashTest, KnownVectors) {
  EXPECT_EQ(HashKey(""), 0xEF46DB3751D8E999ULL);
  EXPECT_EQ(HashKey("a"), 0xD24EC4F1A98C6E5BULL);
  EXPECT_EQ(HashKey("abc"), 0x44BC2CF5AD770999ULL);
  EXPECT_EQ(HashKey("message digest"), 0x066ED728FCEEB3BEULL);
  EXPECT_EQ(HashKey(std::string(31, 'x')), 0x60DD0D01083B99F0ULL);
  EXPECT_EQ(HashKey(std::string(32, 'x')), 0xE2DF261FC2EC30EBULL);
  EXPECT_EQ(HashKey(std::string(33, 'x')), 0xB3FA465F554208A6ULL);
  EXPECT_EQ(HashKey("0123456789abcdef0123456789abcdef0123456789"), 0xA76190C3ACF08A1CULL);
  EXPECT_EQ(HashKey("\xff\xfe\x80"), 0x9F49840836C4364BULL);
  EXPECT_EQ(HashKey("h\xc3\xa9llo w\xc3\xb6rld \xf0\x9f\x99\x82"), 0x1AC8EF844A0F1B7AULL);
}

TEST(HashTest, LargeInput) {
  std::string data;
  for (int rep = 0; rep < 3; ++rep) {
    for (int i = 0; i < 256; ++i) data.push_back(static_cast<char>(i));
  }
  EXPECT_EQ(HashKey(data), 0x8E03C838C596036FULL);
}

// Every length 0..70 of the pattern byte[i] = (31 * i + 7) & 0xff, which
// exercises every combination of 32-byte stripes and 8/4/1-byte tails.
TEST(HashTest, EveryTailLength) {
  static const uint64_t kExpected[] = {
    0xef46db3751d8e999ULL,
    0xa96c7f0ce858bbb7ULL,
    0xac378c5993cd5f9aULL,
    0x56e6957632a487f9ULL,
    0xc60d15b1e3ff8f04ULL,
    0x808815858624dd4eULL,
    0xcf22b4e87e9bbd00ULL,
    0xafbefc3d6c6f9a8eULL,
    0x3da5c7aa269683e0ULL,
    0x4b17a9ba9e215c09ULL,
    0x6b889090b8a922b8ULL,
    0x1fc070e44716bd8eULL,
    0x8fe8ab1c1fd0666eULL,
    0x0382284cc19c4abbULL,
    0x1523f762201ba56eULL,
    0xae2a37eb9357caa7ULL,
    0xa19ad429b02bc413ULL,
    0xfe9f0feb7eeedc09ULL,
    0xa44dbc53c815d4feULL,
    0x3693e04c0dfc7dd2ULL,
    0x0bfbadb368e7f37cULL,
    0xfe78683697d5c575ULL,
    0xb07142420c77fe7fULL,
    0xe77b1fcea84118c3ULL,
    0x929438e5c2159ef9ULL,
    0x7e6c95919380459fULL,
    0xaf2efe1aa0cf37dcULL,
    0x8edaa24c28d12ec6ULL,
    0xa36b5c4091187d2aULL,
    0xeb1fee1bf0954759ULL,
    0x6a54ebe6fe40b928ULL,
    0x4a74f3a1a39ad4a1ULL,
    0x8d57d6a4671cc43dULL,
    0x62c9fd21ed857664ULL,
    0x42cce8a8f5fc5f1fULL,
    0x85cbcf9e0d9cbecaULL,
    0xa4475c606b0abc3cULL,
    0x5d71d9fc4b676d9fULL,
    0x88a74ab8eaeb0218ULL,
    0x1789542489e59cc4ULL,
    0x49b45332e280f187ULL,
    0xb410b48464dc1268ULL,
    0x9dacb790a1526540ULL,
    0x7c296a6b49b188e7ULL,
    0xa6b69c7cee5d5b54ULL,
    0xaa6aeb7198c8c81cULL,
    0x7c4b5a84f7cd59f3ULL,
    0x05e3ab06c6bb0a6bULL,
    0x9f31c521803da811ULL,
    0x9f787017de727118ULL,
    0xca2eee5cb9fb5469ULL,
    0x33a29bd165146948ULL,
    0x76d9caacc61b6870ULL,
    0xa7a6e96a5be18eb9ULL,
    0x4a6d8c8cb7ab9234ULL,
    0x2471440903895716ULL,
    0x69aea7699abf3484ULL,
    0x49e8d867c0ac8865ULL,
    0xd3928f8d2530d5eeULL,
    0x8a1f4d8f4c9045feULL,
    0xeafefbf83ab62c32ULL,
    0x1be3ba2ea41289beULL,
    0x7acaef6ae2f7a5b6ULL,
    0x5c320a0d2707057fULL,
    0x7bbabbc45729d17eULL,
    0xf3980c34bae65dc1ULL,
    0x37082d58ba4215f9ULL,
    0x6acef358c3e521bdULL,
    0x2c0a027bbf50ec18ULL,
    0x7d90ea5f45d705cbULL,
    0x383a51c48c4f8f4cULL,
  };
  std::string data;
  for (size_t n = 0; n < std::size(kExpected); ++n) {
    EXPECT_EQ(HashKey(data), kExpected[n]) << "length " << n;
    data.push_back(static_cast<char>((31 * n + 7) & 0xff));
  }
}

TEST(HashTest, EmbeddedNulAndAlignment) {
  // The hash covers every byte (NULs included) and does not depend on the
  // address alignment of the input.
  std::string with_nul("a\0b", 3);
  EXPECT_NE(HashKey(with_nul), HashKey("a"));
  std::string buffer = "_" + std::string(100, 'q');
  EXPECT_EQ(HashKey(std::string_view(buffer).substr(1)), HashKey(std::string(100, 'q')));
}

}  // namespace
}  // namespace torchcachex

namespace torchcachex {
namespace {

TEST(Xxh64StreamTest, AnySplitOfTheInputGivesTheOneShotDigest) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(static_cast<char>(i * 37 + 11));
  auto bytes = std::as_bytes(std::span(data));
  for (size_t len : {size_t{0}, size_t{5}, size_t{31}, size_t{32}, size_t{33}, size_t{100}, size_t{1000}}) {
    uint64_t expected = Xxh64(bytes.first(len));
    EXPECT_EQ(expected, HashKey(std::string_view(data.data(), len)));
    for (size_t step : {size_t{1}, size_t{3}, size_t{7}, size_t{32}, size_t{64}, size_t{333}}) {
      Xxh64Stream stream;
      for (size_t at = 0; at < len; at += step) stream.Update(bytes.subspan(at, std::min(step, len - at)));
      EXPECT_EQ(stream.Digest(), expected) << "len " << len << " step " << step;
    }
  }
}

}  // namespace
}  // namespace torchcachex
