// StreamCopy: every byte arrives, whatever the size and the alignments of
// source and destination (the streamed body has an unaligned head and a tail).
#include "util/stream_copy.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace torchcachex {
namespace {

TEST(StreamCopyTest, CopiesEveryByteForAnySizeAndAlignment) {
  const size_t sizes[] = {0, 1, 15, 63, kStreamCopyMinBytes - 1, kStreamCopyMinBytes, kStreamCopyMinBytes + 1,
                          kStreamCopyMinBytes + 63, 4096, 16384 + 17};
  std::vector<std::byte> source(16384 + 17 + 64);
  for (size_t i = 0; i < source.size(); ++i) source[i] = static_cast<std::byte>((i * 131 + 7) & 0xff);
  for (size_t size : sizes) {
    for (size_t src_offset : {0, 1, 8, 33}) {
      for (size_t dst_offset : {0, 3, 16, 40}) {
        std::vector<std::byte> destination(size + 128, std::byte{0xee});
        StreamCopy(destination.data() + dst_offset, source.data() + src_offset, size);
        StreamFence();
        ASSERT_EQ(std::memcmp(destination.data() + dst_offset, source.data() + src_offset, size), 0)
            << "size " << size << ", source offset " << src_offset << ", destination offset " << dst_offset;
        // Nothing written outside [dst_offset, dst_offset + size).
        for (size_t i = 0; i < dst_offset; ++i) ASSERT_EQ(destination[i], std::byte{0xee});
        for (size_t i = dst_offset + size; i < destination.size(); ++i) ASSERT_EQ(destination[i], std::byte{0xee});
      }
    }
  }
}

}  // namespace
}  // namespace torchcachex
