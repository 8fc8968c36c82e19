// KeyIndex: an open-addressing hash table from key hash to the location of
// the key's latest row. It stores no keys: a probe that matches the hash tag
// is verified against the real key through a callback (the segment's key
// column), so hash collisions can never return another key's row.
//
// Memory: 12 bytes per slot (32-bit hash tag, segment, row), linear probing,
// load factor kept <= 0.8, so between 15 and 30 bytes per entry.
// Not thread-safe: the store guards it with its own lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>
#include <vector>

namespace torchcachex {

struct RowLocation {
  uint32_t segment = 0;  // store-assigned segment slot
  uint32_t row = 0;      // row within that segment
};

class KeyIndex {
 public:
  // Returns the key stored at a location (must be valid for every location
  // ever inserted and not erased).
  using KeyAt = std::function<std::string_view(RowLocation)>;

  KeyIndex() = default;

  // Points `key` (whose HashKey is `hash`) at `location`, replacing the
  // previous location of the same key if there is one.
  void Upsert(uint64_t hash, std::string_view key, RowLocation location, const KeyAt& key_at);

  // The location of `key`, or nullopt.
  std::optional<RowLocation> Find(uint64_t hash, std::string_view key, const KeyAt& key_at) const;

  // Removes every entry whose segment is `segment` (used when a segment is
  // dropped). O(capacity).
  void EraseSegment(uint32_t segment);

  // Makes room for `entries` entries without rehashing.
  void Reserve(size_t entries);

  size_t size() const { return size_; }
  size_t memory_bytes() const;

 private:
  struct Slot {
    uint32_t tag;
    uint32_t segment;  // kEmpty when the slot is free
    uint32_t row;
  };
  static constexpr uint32_t kEmpty = 0xFFFFFFFFu;
  void Grow(size_t min_capacity);
  std::vector<Slot> slots_;  // capacity is a power of two (or 0)
  size_t size_ = 0;
};

}  // namespace torchcachex
