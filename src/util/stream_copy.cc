#include "util/stream_copy.h"

#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace torchcachex {

void StreamCopy(std::byte* dst, const std::byte* src, size_t size) {
#if defined(__SSE2__)
  if (size >= kStreamCopyMinBytes) {
    // Head up to the first 16-byte aligned destination address: plain copy.
    const size_t head = (16 - (reinterpret_cast<uintptr_t>(dst) & 15)) & 15;
    std::memcpy(dst, src, head);
    dst += head;
    src += head;
    size -= head;
    // Body: 64 bytes (one cache line when dst is line-aligned) per iteration.
    auto* out = reinterpret_cast<__m128i*>(dst);
    const auto* in = reinterpret_cast<const __m128i*>(src);
    size_t blocks = size / 64;
    for (; blocks > 0; --blocks, out += 4, in += 4) {
      const __m128i a = _mm_loadu_si128(in);
      const __m128i b = _mm_loadu_si128(in + 1);
      const __m128i c = _mm_loadu_si128(in + 2);
      const __m128i d = _mm_loadu_si128(in + 3);
      _mm_stream_si128(out, a);
      _mm_stream_si128(out + 1, b);
      _mm_stream_si128(out + 2, c);
      _mm_stream_si128(out + 3, d);
    }
    const size_t done = size / 64 * 64;
    std::memcpy(dst + done, src + done, size - done);  // tail
    return;
  }
#endif
  std::memcpy(dst, src, size);
}

void StreamFence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace torchcachex
