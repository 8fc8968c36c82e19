// LargeAllocator: a std::allocator that maps requests of kLargeAllocationBytes
// and more as anonymous memory of their own (mmap), and frees them with
// munmap, so that a freed large buffer goes back to the OS at once.
//
// Why: the engine allocates and frees buffers of segment size (pending rows,
// index tables) throughout a fill. Through malloc, glibc's dynamic mmap
// threshold soon rises past them and they land in the heap, whose freed pages
// it keeps: 1M rows of 2 KB then left ~60 MB more resident. The engine used
// to give them back with malloc_trim(0), which walks the whole process heap
// and also unmaps the free pages of the user's own allocations (torch's), to
// be faulted in again: 2-3 ms, on the writer thread, that an epoch-end flush
// waited for. Buffers mapped here need neither.
//
// Smaller requests go to std::allocator. Mapped memory is page-aligned and
// zero-filled; the allocator is stateless (all instances compare equal).
#pragma once

#include <cstddef>
#include <limits>
#include <memory>
#include <new>
#include <vector>

namespace torchcachex {

inline constexpr size_t kLargeAllocationBytes = size_t{1} << 20;

// Maps `bytes` of anonymous read-write memory; throws std::bad_alloc.
void* MapAnonymous(size_t bytes);
// Unmaps what MapAnonymous(bytes) returned.
void UnmapAnonymous(void* data, size_t bytes) noexcept;

template <typename T>
class LargeAllocator {
 public:
  using value_type = T;

  LargeAllocator() noexcept = default;
  template <typename U>
  LargeAllocator(const LargeAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor): rebinding

  T* allocate(size_t n) {
    if (n > std::numeric_limits<size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    if (n * sizeof(T) < kLargeAllocationBytes) return std::allocator<T>().allocate(n);
    return static_cast<T*>(MapAnonymous(n * sizeof(T)));
  }

  void deallocate(T* data, size_t n) noexcept {
    if (n * sizeof(T) < kLargeAllocationBytes) {
      std::allocator<T>().deallocate(data, n);
      return;
    }
    UnmapAnonymous(data, n * sizeof(T));
  }

  template <typename U>
  bool operator==(const LargeAllocator<U>&) const noexcept {
    return true;
  }
};

// A vector whose large buffers are mapped by LargeAllocator.
template <typename T>
using LargeVector = std::vector<T, LargeAllocator<T>>;

}  // namespace torchcachex
