// StreamCopy: memcpy whose stores bypass the caller's caches (non-temporal
// stores), for bytes this thread writes once and does not read back soon:
// rows copied into pending write buffers, which the writer thread encodes and
// writes on another core. A plain copy of a 512 KB batch reads every
// destination line before writing it and evicts as much of the caller's
// working set (the model's weights, the interpreter's objects).
//
// Non-temporal stores are weakly ordered: call StreamFence() after the last
// StreamCopy and before the bytes are published to another thread (before
// releasing the lock that publishes them).
#pragma once

#include <cstddef>

namespace torchcachex {

// Copies below this size are plain memcpy: too short for streaming to pay.
inline constexpr size_t kStreamCopyMinBytes = 1024;

// Copies `size` bytes from `src` to `dst` (non-overlapping).
void StreamCopy(std::byte* dst, const std::byte* src, size_t size);

// Orders every earlier StreamCopy before later stores (sfence on x86-64).
void StreamFence();

}  // namespace torchcachex
