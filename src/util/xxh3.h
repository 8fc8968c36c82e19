// XXH3-64 with seed 0 and the default secret: the whole-file checksum of the
// segments we write (footer key torchcachex.xxh3, see format/arrow_types.h).
// Written from the xxHash specification
// (https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md); the
// result is the reference XXH3_64bits() on every machine.
//
// Why not XXH64 (util/hash.h, still the key hash and the checksum of older
// files): on large inputs XXH3 runs at memory speed (SSE2 on x86-64: 8 lanes
// per 64-byte stripe, no dependency chain between stripes), about twice
// XXH64, and every segment is hashed once when written and once when first
// read by each process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace torchcachex {

// XXH3-64 (seed 0) of `data`.
uint64_t Xxh3_64(std::span<const std::byte> data);

// Incremental XXH3-64 (seed 0): Update() with pieces in order, then Digest().
// Digest() of the concatenation equals Xxh3_64() of the whole, for any split.
// Large pieces are hashed in place (only a tail of at most 64 bytes is copied).
class Xxh3Stream {
 public:
  Xxh3Stream();
  void Update(std::span<const std::byte> data);
  uint64_t Digest() const;

 private:
  static constexpr size_t kStripeBytes = 64;
  static constexpr size_t kShortMax = 240;         // inputs up to this length hash differently
  static constexpr size_t kBufferBytes = 256;      // a whole number of stripes above kShortMax

  // Accumulates `count` whole stripes at `p`, none of them the input's final
  // 64 bytes, scrambling after every 16th; remembers the last one.
  void ConsumeStripes(const unsigned char* p, size_t count);

  alignas(16) uint64_t acc_[8];
  size_t stripes_in_block_ = 0;  // stripes accumulated since the last scramble, < 16
  uint64_t total_ = 0;           // bytes passed to Update so far
  // Bytes not accumulated yet. Invariant: while total_ <= kShortMax, the whole
  // input; afterwards 1..64 bytes, because a stripe is accumulated only once a
  // byte after it is known (the input's final 64 bytes are mixed differently).
  unsigned char buffer_[kBufferBytes];
  size_t buffered_ = 0;
  // The last accumulated stripe: the bytes right before buffer_ once
  // total_ > kShortMax (the final stripe may reach back into them).
  unsigned char last_stripe_[kStripeBytes];
};

}  // namespace torchcachex
