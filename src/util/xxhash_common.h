// What XXH64 (util/hash.cc) and XXH3 (util/xxh3.cc) share, from the xxHash
// specification: its 64-bit primes, XXH64's avalanche, and little-endian
// reads of input words (the same result on every host, since hashes are
// persisted).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace torchcachex::xxhash {

inline constexpr uint64_t kPrime64_1 = 0x9E3779B185EBCA87ULL;
inline constexpr uint64_t kPrime64_2 = 0xC2B2AE3D27D4EB4FULL;
inline constexpr uint64_t kPrime64_3 = 0x165667B19E3779F9ULL;
inline constexpr uint64_t kPrime64_4 = 0x85EBCA77C2B2AE63ULL;
inline constexpr uint64_t kPrime64_5 = 0x27D4EB2F165667C5ULL;

inline uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// XXH64's final mix (avalanche), which XXH3 also applies to inputs of 0-3 bytes.
inline uint64_t AvalancheXxh64(uint64_t x) {
  x ^= x >> 33;
  x *= kPrime64_2;
  x ^= x >> 29;
  x *= kPrime64_3;
  return x ^ (x >> 32);
}

// The 64-bit word at p, little-endian.
inline uint64_t Read64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return std::endian::native == std::endian::little ? v : __builtin_bswap64(v);
}

// The 32-bit word at p, little-endian.
inline uint32_t Read32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return std::endian::native == std::endian::little ? v : __builtin_bswap32(v);
}

}  // namespace torchcachex::xxhash
