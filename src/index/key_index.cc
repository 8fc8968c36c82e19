// KeyIndex: linear-probing open addressing over 12-byte slots.
//
// Hash bits. A slot keeps only a 32-bit tag of the key's 64-bit hash:
//   tag  = high 32 bits XOR low 32 bits of the hash (so every hash bit counts,
//          even for callers whose hashes are small integers);
//   home = top log2(capacity) bits of (tag * 0x9E3779B9) (Fibonacci hashing).
// The home slot is a function of the tag alone, so the table can grow (and
// Reserve can rehash) without reading any key back from the segments: a
// rehash is pure memory work even at hundreds of millions of entries. Two
// entries can only share a tag if they share a home slot, so a probe meets a
// foreign entry with its tag with probability about load * capacity / 2^32;
// every tag match is verified through key_at, so such a match costs one key
// comparison and can never return another key's row.
//
// Invariants:
//   - slots_.size() is 0 or a power of two in [kMinCapacity, 2^32];
//   - size_ == number of slots whose segment != kEmpty;
//   - size_ <= 0.8 * slots_.size();
//   - for every occupied slot i with home h, slots h, h+1, ..., i (cyclic)
//     are all occupied (no hole between an entry and its home), which is
//     what lets Find stop at the first empty slot; the erasures keep it by
//     backward-shift deletion;
//   - each key appears at most once (Upsert replaces in place).

#include "index/key_index.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <string>

#include "torchcachex/errors.h"

namespace torchcachex {

namespace {

constexpr size_t kMinCapacity = 16;
constexpr uint64_t kMaxCapacity = uint64_t{1} << 32;

// Asks for transparent huge pages on a large table before it is first
// touched: random probes of a table of tens of MB otherwise miss the TLB on
// almost every lookup. A hint only (ignored where THP is off).
void AdviseHugePages(void* data, size_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20;
  if (bytes < 2 * kHuge) return;
  uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

// Whether `entries` fit in `capacity` slots at load factor <= 0.8.
inline bool Fits(size_t entries, size_t capacity) {
  return static_cast<uint64_t>(entries) * 5 <= static_cast<uint64_t>(capacity) * 4;
}

}  // namespace

std::optional<RowLocation> KeyIndex::Find(uint64_t hash, std::string_view key,
                                          const KeyAt& key_at) const {
  if (slots_.empty()) return std::nullopt;
  const size_t mask = slots_.size() - 1;
  const uint32_t tag = TagOf(hash);
  // Terminates: the load factor keeps at least one slot empty.
  for (size_t i = HomeOf(tag, CapacityBits(slots_.size()));; i = (i + 1) & mask) {
    const Slot& slot = slots_[i];
    if (slot.segment == kEmpty) return std::nullopt;
    if (slot.tag == tag) {
      RowLocation location{slot.segment, slot.row};
      if (key_at(location) == key) return location;
    }
  }
}

void KeyIndex::Upsert(uint64_t hash, std::string_view key, RowLocation location,
                      const KeyAt& key_at) {
  if (location.segment == kEmpty) {
    throw InvalidArgumentError("KeyIndex: segment id " + std::to_string(kEmpty) + " is reserved");
  }
  const uint32_t tag = TagOf(hash);
  size_t empty = 0;  // the first empty slot of the probe, where an absent key goes
  if (!slots_.empty()) {
    const size_t mask = slots_.size() - 1;
    for (size_t i = HomeOf(tag, CapacityBits(slots_.size()));; i = (i + 1) & mask) {
      Slot& slot = slots_[i];
      if (slot.segment == kEmpty) {
        empty = i;
        break;
      }
      if (slot.tag == tag && key_at(RowLocation{slot.segment, slot.row}) == key) {
        slot.segment = location.segment;
        slot.row = location.row;
        return;
      }
    }
  }
  // `key` is absent: insert it, growing first if the load factor requires
  // (then probing the new table; else the probe above found the slot).
  if (slots_.empty() || !Fits(size_ + 1, slots_.size())) {
    Grow(std::max(kMinCapacity, slots_.size() * 2));
    const size_t mask = slots_.size() - 1;
    empty = HomeOf(tag, CapacityBits(slots_.size()));
    while (slots_[empty].segment != kEmpty) empty = (empty + 1) & mask;
  }
  slots_[empty] = Slot{tag, location.segment, location.row};
  ++size_;
}

void KeyIndex::EraseAt(size_t hole) {
  const size_t mask = slots_.size() - 1;
  const int bits = CapacityBits(slots_.size());
  for (size_t j = (hole + 1) & mask; slots_[j].segment != kEmpty; j = (j + 1) & mask) {
    size_t home = HomeOf(slots_[j].tag, bits);
    bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (stays) continue;
    slots_[hole] = slots_[j];
    hole = j;
  }
  slots_[hole].segment = kEmpty;
  --size_;
}

void KeyIndex::EraseSegment(uint32_t segment) {
  if (slots_.empty() || segment == kEmpty) return;
  // Entries only ever move backwards into a hole at or after `i` in the
  // cluster being repaired, or within the wrapped prefix already scanned
  // (whose remaining entries are not in `segment`), so one pass suffices.
  for (size_t i = 0; i < slots_.size(); ++i) {
    while (slots_[i].segment == segment) EraseAt(i);
  }
}

size_t KeyIndex::GrowthFor(size_t entries) const noexcept {
  if (entries == 0) return 0;
  size_t capacity = slots_.empty() ? kMinCapacity : slots_.size();
  while (!Fits(entries, capacity)) {
    if (capacity >= kMaxCapacity) return 0;  // cannot fit: Reserve throws
    capacity *= 2;
  }
  return capacity > slots_.size() ? capacity : 0;
}

void KeyIndex::Reserve(size_t entries) { Reserve(entries, nullptr); }

void KeyIndex::Reserve(size_t entries, PreparedTable* prepared) {
  if (entries == 0) return;
  const size_t capacity = GrowthFor(entries);
  if (capacity > 0) {
    Grow(capacity, prepared);
  } else if (!Fits(entries, slots_.size())) {
    throw InvalidArgumentError("KeyIndex: too many entries");
  }
}

KeyIndex::PreparedTable KeyIndex::Prepare(size_t capacity) {
  PreparedTable table;
  table.slots_.reserve(capacity);
  AdviseHugePages(table.slots_.data(), capacity * sizeof(Slot));
  table.slots_.assign(capacity, Slot{0, kEmpty, 0});
  return table;
}

void KeyIndex::Grow(size_t min_capacity, PreparedTable* prepared) {
  size_t capacity = std::bit_ceil(std::max(min_capacity, kMinCapacity));
  if (capacity > kMaxCapacity) throw InvalidArgumentError("KeyIndex: too many entries");
  LargeVector<Slot> fresh;
  if (prepared != nullptr && prepared->capacity() == capacity) {
    fresh = std::move(prepared->slots_);  // empty slots, pages already faulted in
    prepared->slots_.clear();
  } else {
    fresh = std::move(Prepare(capacity).slots_);
  }
  const size_t mask = capacity - 1;
  const int bits = CapacityBits(capacity);
  for (const Slot& slot : slots_) {
    if (slot.segment == kEmpty) continue;
    size_t i = HomeOf(slot.tag, bits);
    while (fresh[i].segment != kEmpty) i = (i + 1) & mask;
    fresh[i] = slot;
  }
  slots_.swap(fresh);
}

size_t KeyIndex::memory_bytes() const { return slots_.capacity() * sizeof(Slot); }

}  // namespace torchcachex
