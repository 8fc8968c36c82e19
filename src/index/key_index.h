// KeyIndex: an open-addressing hash table from key hash to the location of
// the key's latest row. It stores no keys: a probe that matches the hash tag
// is verified against the real key through a callback (the segment's key
// column), so hash collisions can never return another key's row.
//
// Memory: 12 bytes per slot (32-bit hash tag, segment, row), linear probing,
// load factor kept <= 0.8, so between 15 and 30 bytes per entry.
// Not thread-safe: the store guards it with its own lock.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>
#include <vector>

#include "util/large_allocator.h"
#include "util/prefetch.h"

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

  // Batched lookups (software pipelining, see Store's Lookup): hints the CPU
  // to fetch the home slot of `hash` and the next kPrefetchSlots - 1 slots
  // (one or two cache lines) now, so that a later Find or Upsert of it does
  // not stall on a cache miss. A probe reads 3.4 slots on average at load
  // 0.6, and 12-byte slots straddle lines: fetching only the home slot's
  // line left most probes with a second, unhidden miss.
  void PrefetchHome(uint64_t hash) const {
    if (slots_.empty()) return;
    const auto* home = reinterpret_cast<const char*>(slots_.data() + HomeOf(TagOf(hash), CapacityBits(slots_.size())));
    Prefetch(home);
    Prefetch(home + kPrefetchSlots * sizeof(Slot) - 1);
  }

  // The location of the first slot whose tag matches `hash` (unverified: the
  // key may differ), or nullopt. Only a hint for prefetching the key column;
  // Find is the authoritative lookup.
  std::optional<RowLocation> Candidate(uint64_t hash) const {
    if (slots_.empty()) return std::nullopt;
    const size_t mask = slots_.size() - 1;
    const uint32_t tag = TagOf(hash);
    for (size_t i = HomeOf(tag, CapacityBits(slots_.size()));; i = (i + 1) & mask) {
      const Slot& slot = slots_[i];
      if (slot.segment == kEmpty) return std::nullopt;
      if (slot.tag == tag) return RowLocation{slot.segment, slot.row};
    }
  }

  // Removes every entry whose segment is `segment` (used when a segment is
  // dropped). O(capacity).
  void EraseSegment(uint32_t segment);

  // Makes room for `entries` entries without rehashing.
  void Reserve(size_t entries);

  // Empty slot storage made ahead of a growth. Most of the cost of growing a
  // large index is the kernel zeroing the new table's fresh pages, not
  // moving the entries (perf of a 3.4M-entry growth: 52% against 8% of the
  // samples); a caller can build this without holding the lock that guards
  // the index, then hand it to Reserve.
  class PreparedTable {
   public:
    PreparedTable() = default;
    size_t capacity() const { return slots_.size(); }

   private:
    friend class KeyIndex;
    struct Slot {
      uint32_t tag;
      uint32_t segment;
      uint32_t row;
    };
    LargeVector<Slot> slots_;  // a large table is mapped of its own (LargeAllocator)
  };
  // The capacity Reserve(entries) would grow to; 0 if `entries` fit now (or
  // can never fit: Reserve then throws).
  size_t GrowthFor(size_t entries) const noexcept;
  // `capacity` empty slots with their memory faulted in. Any thread, no lock.
  static PreparedTable Prepare(size_t capacity);
  // Reserve(entries), growing into `prepared` if it has the capacity that
  // needs (it is then consumed); otherwise as Reserve(entries).
  void Reserve(size_t entries, PreparedTable* prepared);

  size_t size() const { return size_; }
  size_t capacity() const { return slots_.size(); }  // slots
  size_t memory_bytes() const;

 private:
  using Slot = PreparedTable::Slot;  // segment is kEmpty when the slot is free
  static constexpr uint32_t kEmpty = 0xFFFFFFFFu;
  static constexpr size_t kPrefetchSlots = 4;  // slots PrefetchHome covers
  // tag  = high 32 bits XOR low 32 bits of the hash;
  // home = top log2(capacity) bits of (tag * 0x9E3779B9) (Fibonacci hashing).
  static uint32_t TagOf(uint64_t hash) {
    return static_cast<uint32_t>(hash >> 32) ^ static_cast<uint32_t>(hash);
  }
  static size_t HomeOf(uint32_t tag, int bits) {
    uint32_t mixed = tag * 0x9E3779B9u;
    return static_cast<size_t>(static_cast<uint64_t>(mixed) >> (32 - bits));
  }
  static int CapacityBits(size_t capacity) { return std::countr_zero(capacity); }
  void Grow(size_t min_capacity, PreparedTable* prepared = nullptr);
  // Empties occupied slot `hole` by backward-shift deletion: later entries of
  // its cluster whose home does not lie cyclically in (hole, j] move back, so
  // no entry is left separated from its home by an empty slot.
  void EraseAt(size_t hole);
  LargeVector<Slot> slots_;  // capacity is a power of two (or 0)
  size_t size_ = 0;
};

}  // namespace torchcachex
