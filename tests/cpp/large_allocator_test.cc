// LargeAllocator: large buffers are mapped of their own and go back to the OS
// when freed (the engine relies on it to keep a long fill's memory bounded);
// small ones behave as with std::allocator.

#include "util/large_allocator.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <numeric>
#include <string>

namespace torchcachex {
namespace {

// Resident anonymous memory of this process, in bytes (Linux: RssAnon).
size_t ResidentAnonymousBytes() {
  std::ifstream status("/proc/self/status");
  std::string field;
  while (status >> field) {
    if (field == "RssAnon:") {
      size_t kib = 0;
      status >> kib;
      return kib << 10;
    }
  }
  return 0;
}

TEST(LargeAllocatorTest, KeepsContentsAcrossGrowthFromSmallToLarge) {
  LargeVector<int64_t> values;
  for (int64_t i = 0; i < 400'000; ++i) values.push_back(i);  // 3.2 MB: crosses the threshold
  ASSERT_GE(values.capacity() * sizeof(int64_t), kLargeAllocationBytes);
  EXPECT_EQ(std::accumulate(values.begin(), values.end(), int64_t{0}), int64_t{399'999} * 400'000 / 2);
}

TEST(LargeAllocatorTest, LargeBuffersArePageAlignedMappings) {
  LargeVector<std::byte> buffer(kLargeAllocationBytes);
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer.data()) % page, 0u);
}

TEST(LargeAllocatorTest, FreedLargeBufferLeavesNothingResident) {
  if (ResidentAnonymousBytes() == 0) GTEST_SKIP() << "no RssAnon in /proc/self/status";
  constexpr size_t kBytes = size_t{64} << 20;
  const size_t before = ResidentAnonymousBytes();
  {
    LargeVector<std::byte> buffer(kBytes);  // value-initialized: every page written
    ASSERT_GE(ResidentAnonymousBytes(), before + kBytes / 2);
  }
  // Through malloc, glibc would keep a freed buffer of this size in its heap
  // once its dynamic mmap threshold had risen past it.
  EXPECT_LT(ResidentAnonymousBytes(), before + kBytes / 4);
}

TEST(LargeAllocatorTest, ImpossibleSizeThrowsBadAlloc) {
  LargeAllocator<int64_t> allocator;
  EXPECT_THROW(allocator.allocate(size_t{1} << 62), std::bad_array_new_length);
  EXPECT_THROW(allocator.allocate(size_t{1} << 58), std::bad_alloc);  // 2 EiB: no mapping
}

}  // namespace
}  // namespace torchcachex
