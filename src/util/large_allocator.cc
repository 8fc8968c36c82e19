#include "util/large_allocator.h"

#include <sys/mman.h>

#include <new>

namespace torchcachex {

void* MapAnonymous(size_t bytes) {
  void* data = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) throw std::bad_alloc();
  return data;
}

void UnmapAnonymous(void* data, size_t bytes) noexcept { ::munmap(data, bytes); }

}  // namespace torchcachex
