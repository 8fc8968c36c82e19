// OutputBuffer: large lookup results reuse recently released buffers.
#include "torchcachex/output_buffer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace torchcachex {
namespace {

TEST(OutputBufferTest, ALargeBufferIsReusedForTheNextBatchOfTheSameSize) {
  const size_t bytes = 3 * kPooledMinBytes;
  OutputBuffer first = AllocateOutputBuffer(bytes);
  std::memset(first.get(), 0x5a, bytes);  // writable over its whole size
  std::byte* address = first.get();
  first.reset();
  OutputBuffer second = AllocateOutputBuffer(bytes);
  EXPECT_EQ(second.get(), address);
  // A pooled buffer is not handed out for a request of less than half its size.
  second.reset();
  OutputBuffer small = AllocateOutputBuffer(bytes / 4);
  EXPECT_NE(small.get(), address);
}

TEST(OutputBufferTest, SmallBuffersAreNotPooled) {
  OutputBuffer small = AllocateOutputBuffer(1024);
  EXPECT_EQ(small.get_deleter().capacity, 1024u);
  OutputBuffer empty = AllocateOutputBuffer(0);  // still a valid, distinct buffer
  EXPECT_NE(empty.get(), nullptr);
}

TEST(OutputBufferTest, ThePoolKeepsOnlyTheMostRecentBuffers) {
  const size_t bytes = 2 * kPooledMinBytes;
  std::vector<OutputBuffer> held;
  std::vector<std::byte*> addresses;
  for (size_t i = 0; i < kPooledBuffers + 2; ++i) {
    held.push_back(AllocateOutputBuffer(bytes));
    addresses.push_back(held.back().get());
  }
  for (OutputBuffer& buffer : held) buffer.reset();  // in order: only the last kPooledBuffers stay pooled
  std::vector<OutputBuffer> again;
  for (size_t i = 0; i < kPooledBuffers; ++i) again.push_back(AllocateOutputBuffer(bytes));
  for (const OutputBuffer& buffer : again) {
    auto it = std::find(addresses.end() - kPooledBuffers, addresses.end(), buffer.get());
    EXPECT_NE(it, addresses.end()) << "expected a recently released buffer";
  }
}

}  // namespace
}  // namespace torchcachex
