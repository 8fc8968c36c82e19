#include "torchcachex/output_buffer.h"

#include <algorithm>
#include <mutex>
#include <utility>
#include <vector>

namespace torchcachex {
namespace {

// Recently released large buffers, most recent last. Invariant: at most
// kPooledBuffers entries, each of kPooledMinBytes or more.
struct Pool {
  std::mutex mu;
  std::vector<std::pair<std::byte*, size_t>> free;  // (data, capacity)
};

Pool& GetPool() {
  static Pool* pool = new Pool;  // never destroyed: buffers may be released at interpreter exit
  return *pool;
}

}  // namespace

void OutputBufferDeleter::operator()(std::byte* data) const noexcept {
  if (data == nullptr) return;
  if (capacity >= kPooledMinBytes) {
    Pool& pool = GetPool();
    std::unique_lock lock(pool.mu, std::try_to_lock);
    if (lock.owns_lock()) {
      pool.free.emplace_back(data, capacity);
      if (pool.free.size() <= kPooledBuffers) return;
      data = pool.free.front().first;  // keep the most recent ones
      pool.free.erase(pool.free.begin());
    }
  }
  delete[] data;
}

OutputBuffer AllocateOutputBuffer(size_t bytes) {
  bytes = std::max<size_t>(bytes, 1);
  if (bytes >= kPooledMinBytes) {
    Pool& pool = GetPool();
    std::unique_lock lock(pool.mu, std::try_to_lock);
    if (lock.owns_lock()) {
      // The most recent buffer that fits without wasting more than half of it.
      for (auto it = pool.free.rbegin(); it != pool.free.rend(); ++it) {
        if (it->second >= bytes && it->second / 2 <= bytes) {
          auto [data, capacity] = *it;
          pool.free.erase(std::next(it).base());
          return OutputBuffer(data, OutputBufferDeleter{capacity});
        }
      }
    }
  }
  return OutputBuffer(new std::byte[bytes], OutputBufferDeleter{bytes});
}

}  // namespace torchcachex
