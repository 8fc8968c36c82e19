// The hash of keys. Fixed and documented, because hashes may be persisted
// (index snapshots): XXH64 (xxHash, 64-bit variant) with seed 0 over the
// key's UTF-8 bytes. Never std::hash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace torchcachex {

uint64_t HashKey(std::string_view key);

// XXH64 (seed 0) of arbitrary bytes; the checksum of segment files.
uint64_t Xxh64(std::span<const std::byte> data);

// Incremental XXH64 (seed 0): Update() with pieces in order, then Digest().
// Digest() of the concatenation equals Xxh64() of the whole.
class Xxh64Stream {
 public:
  Xxh64Stream();
  void Update(std::span<const std::byte> data);
  uint64_t Digest() const;

 private:
  void Consume(const unsigned char* stripe);  // one 32-byte stripe
  uint64_t v1_, v2_, v3_, v4_;
  unsigned char buffer_[32];
  size_t buffered_ = 0;
  uint64_t total_ = 0;
};

}  // namespace torchcachex
