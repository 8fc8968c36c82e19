// XXH64 with seed 0, written from the xxHash specification
// (https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md).
// Input words are read little-endian regardless of the host, so the hash of a
// key is the same on every machine (hashes may be persisted).

#include "util/hash.h"

#include <cstddef>
#include <cstring>

#include "util/xxhash_common.h"

namespace torchcachex {

namespace {

using xxhash::Read32;
using xxhash::Read64;
using xxhash::Rotl;
constexpr uint64_t kPrime1 = xxhash::kPrime64_1;
constexpr uint64_t kPrime2 = xxhash::kPrime64_2;
constexpr uint64_t kPrime3 = xxhash::kPrime64_3;
constexpr uint64_t kPrime4 = xxhash::kPrime64_4;
constexpr uint64_t kPrime5 = xxhash::kPrime64_5;

inline uint64_t Round(uint64_t acc, uint64_t lane) {
  acc += lane * kPrime2;
  acc = Rotl(acc, 31);
  return acc * kPrime1;
}

inline uint64_t MergeAccumulator(uint64_t acc, uint64_t lane_acc) {
  acc ^= Round(0, lane_acc);
  return acc * kPrime1 + kPrime4;
}

uint64_t Finish(uint64_t acc, const unsigned char* p, const unsigned char* end);

uint64_t XXH64(const unsigned char* p, size_t len, uint64_t seed) {
  const unsigned char* const end = p + len;
  uint64_t acc;
  if (len >= 32) {
    uint64_t v1 = seed + kPrime1 + kPrime2;
    uint64_t v2 = seed + kPrime2;
    uint64_t v3 = seed;
    uint64_t v4 = seed - kPrime1;
    const unsigned char* const limit = end - 32;
    do {
      v1 = Round(v1, Read64(p));
      v2 = Round(v2, Read64(p + 8));
      v3 = Round(v3, Read64(p + 16));
      v4 = Round(v4, Read64(p + 24));
      p += 32;
    } while (p <= limit);
    acc = Rotl(v1, 1) + Rotl(v2, 7) + Rotl(v3, 12) + Rotl(v4, 18);
    acc = MergeAccumulator(acc, v1);
    acc = MergeAccumulator(acc, v2);
    acc = MergeAccumulator(acc, v3);
    acc = MergeAccumulator(acc, v4);
  } else {
    acc = seed + kPrime5;
  }
  acc += static_cast<uint64_t>(len);
  return Finish(acc, p, end);
}

// Consumes the last (< 32) bytes and avalanches.
uint64_t Finish(uint64_t acc, const unsigned char* p, const unsigned char* end) {
  while (end - p >= 8) {
    acc ^= Round(0, Read64(p));
    acc = Rotl(acc, 27) * kPrime1 + kPrime4;
    p += 8;
  }
  if (end - p >= 4) {
    acc ^= static_cast<uint64_t>(Read32(p)) * kPrime1;
    acc = Rotl(acc, 23) * kPrime2 + kPrime3;
    p += 4;
  }
  while (p < end) {
    acc ^= static_cast<uint64_t>(*p) * kPrime5;
    acc = Rotl(acc, 11) * kPrime1;
    ++p;
  }

  return xxhash::AvalancheXxh64(acc);
}

}  // namespace

uint64_t HashKey(std::string_view key) {
  return XXH64(reinterpret_cast<const unsigned char*>(key.data()), key.size(), 0);
}

Xxh64Stream::Xxh64Stream() : v1_(kPrime1 + kPrime2), v2_(kPrime2), v3_(0), v4_(0 - kPrime1) {}

void Xxh64Stream::Update(std::span<const std::byte> data) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  size_t len = data.size();
  total_ += len;
  if (buffered_ + len < 32) {
    std::memcpy(buffer_ + buffered_, p, len);
    buffered_ += len;
    return;
  }
  if (buffered_ > 0) {
    size_t fill = 32 - buffered_;
    std::memcpy(buffer_ + buffered_, p, fill);
    Consume(buffer_);
    p += fill;
    len -= fill;
    buffered_ = 0;
  }
  while (len >= 32) {
    Consume(p);
    p += 32;
    len -= 32;
  }
  std::memcpy(buffer_, p, len);
  buffered_ = len;
}

void Xxh64Stream::Consume(const unsigned char* stripe) {
  v1_ = Round(v1_, Read64(stripe));
  v2_ = Round(v2_, Read64(stripe + 8));
  v3_ = Round(v3_, Read64(stripe + 16));
  v4_ = Round(v4_, Read64(stripe + 24));
}

uint64_t Xxh64Stream::Digest() const {
  uint64_t acc;
  if (total_ >= 32) {
    acc = Rotl(v1_, 1) + Rotl(v2_, 7) + Rotl(v3_, 12) + Rotl(v4_, 18);
    acc = MergeAccumulator(acc, v1_);
    acc = MergeAccumulator(acc, v2_);
    acc = MergeAccumulator(acc, v3_);
    acc = MergeAccumulator(acc, v4_);
  } else {
    acc = kPrime5;
  }
  acc += total_;
  return Finish(acc, buffer_, buffer_ + buffered_);
}

uint64_t Xxh64(std::span<const std::byte> data) {
  return XXH64(reinterpret_cast<const unsigned char*>(data.data()), data.size(), 0);
}

}  // namespace torchcachex
