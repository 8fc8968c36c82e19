#include "store/hot_cache.h"

namespace torchcachex {

void HotCache::Put(std::string_view key, std::span<const LeafRows> leaves, size_t i) {
  if (capacity_ == 0) return;
  Row row;
  row.reserve(leaves.size());
  for (const LeafRows& rows : leaves) {
    Cell cell;
    const std::byte* data = rows.is_dense ? rows.base + i * rows.row_stride : rows.rows[i].data();
    size_t size = rows.is_dense ? rows.row_bytes : rows.rows[i].size();
    cell.bytes.assign(data, data + size);
    cell.shape = rows.is_dense ? rows.shape : rows.shapes[i];
    row.push_back(std::move(cell));
  }
  std::lock_guard lock(mu_);
  auto it = map_.find(key);
  if (it != map_.end()) {
    it->second->row = std::move(row);
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  lru_.push_front(Entry{std::string(key), std::move(row)});
  map_.emplace(lru_.front().key, lru_.begin());
  while (lru_.size() > capacity_) {
    map_.erase(lru_.back().key);
    lru_.pop_back();
  }
  size_.store(map_.size(), std::memory_order_release);
}

bool HotCache::Contains(std::string_view key) const {
  std::lock_guard lock(mu_);
  return map_.count(key) > 0;
}

}  // namespace torchcachex
