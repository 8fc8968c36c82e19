// HotCache: an LRU of whole rows kept in RAM, for stores that do not persist
// (DDP non-writer ranks keep their computed rows here). Thread-safe.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "torchcachex/store.h"

namespace torchcachex {

class HotCache {
 public:
  struct Cell {
    std::vector<std::byte> bytes;
    std::vector<int64_t> shape;  // empty for blobs
  };
  using Row = std::vector<Cell>;  // one cell per leaf

  explicit HotCache(size_t capacity) : capacity_(capacity) {}

  // Stores row `i` of `leaves` under `key`, evicting the least recently used
  // rows beyond capacity. No-op when capacity is 0.
  void Put(std::string_view key, std::span<const LeafRows> leaves, size_t i);

  // Calls fn(const Row&) under the cache lock if `key` is present (marking it
  // recently used); returns whether it was.
  template <typename Fn>
  bool With(std::string_view key, Fn&& fn) {
    std::lock_guard lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return false;
    lru_.splice(lru_.begin(), lru_, it->second);
    fn(it->second->row);
    return true;
  }

  bool Contains(std::string_view key) const;
  // The number of rows held, read without the lock: a lookup asks it for
  // every key it did not find elsewhere, and a persisting store's hot cache
  // is always empty (a mutex per missing key cost about 20 ns).
  size_t size() const { return size_.load(std::memory_order_acquire); }

 private:
  struct Entry {
    std::string key;
    Row row;
  };
  const size_t capacity_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // most recent first
  std::unordered_map<std::string_view, std::list<Entry>::iterator> map_;  // views into lru_ keys
  std::atomic<size_t> size_{0};  // == map_.size(), stored under mu_
};

}  // namespace torchcachex
