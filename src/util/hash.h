// The hash of keys. Fixed and documented, because hashes may be persisted
// (index snapshots): XXH64 (xxHash, 64-bit variant) with seed 0 over the
// key's UTF-8 bytes. Never std::hash.
#pragma once

#include <cstdint>
#include <string_view>

namespace torchcachex {

uint64_t HashKey(std::string_view key);

}  // namespace torchcachex
