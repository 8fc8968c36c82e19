// OutputBuffer: the owned byte buffer that GetBatch returns dense rows in.
//
// Buffers of kPooledMinBytes and more are recycled through a small
// process-wide pool: a training loop asks for the same size on every batch,
// and a fresh allocation that large is a fresh mapping whose every page the
// kernel faults in and zeroes (at 48 MB per batch that costs as much as the
// copy itself). Releasing a buffer returns it to the pool, which keeps at most
// kPooledBuffers of them; smaller buffers are plain heap allocations.
//
// Thread-safe. The pool never blocks: if its lock is busy (or was held by a
// thread that did not survive fork()), it is bypassed.
#pragma once

#include <cstddef>
#include <memory>

namespace torchcachex {

inline constexpr size_t kPooledMinBytes = size_t{1} << 20;
inline constexpr size_t kPooledBuffers = 2;

// Returns a buffer to the pool (or frees it). `capacity` is its allocated size.
struct OutputBufferDeleter {
  size_t capacity = 0;
  void operator()(std::byte* data) const noexcept;
};

using OutputBuffer = std::unique_ptr<std::byte[], OutputBufferDeleter>;

// A buffer of at least `bytes` bytes (at least 1), contents unspecified.
OutputBuffer AllocateOutputBuffer(size_t bytes);

}  // namespace torchcachex
