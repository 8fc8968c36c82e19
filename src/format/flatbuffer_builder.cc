#include "format/flatbuffer_builder.h"

#include <algorithm>
#include <cassert>
#include <limits>

#include "torchcachex/errors.h"

namespace torchcachex::format {

namespace {
// uoffsets are 32-bit and Arrow stores metadata lengths as int32.
constexpr size_t kMaxSize = std::numeric_limits<int32_t>::max();
}  // namespace

FlatbufferBuilder::FlatbufferBuilder(size_t initial_capacity)
    : buf_(std::max<size_t>(initial_capacity, 64)) {}

void FlatbufferBuilder::Reserve(size_t n) {
  if (n > kMaxSize - size_) {
    throw InvalidArgumentError("Arrow metadata would exceed 2 GiB");
  }
  if (size_ + n <= buf_.size()) return;
  size_t capacity = buf_.size();
  while (capacity < size_ + n) capacity *= 2;
  std::vector<std::byte> grown(capacity);
  std::memcpy(grown.data() + (capacity - size_), Front(), size_);
  buf_.swap(grown);
}

void FlatbufferBuilder::Push(const void* data, size_t n) {
  Reserve(n);
  size_ += n;
  if (n != 0) std::memcpy(Front(), data, n);
}

void FlatbufferBuilder::PushZeros(size_t n) {
  Reserve(n);
  size_ += n;
  std::memset(Front(), 0, n);
}

void FlatbufferBuilder::Align(size_t alignment) { PreAlign(0, alignment); }

void FlatbufferBuilder::PreAlign(size_t len, size_t alignment) {
  max_alignment_ = std::max(max_alignment_, alignment);
  PushZeros((alignment - ((size_ + len) & (alignment - 1))) & (alignment - 1));
}

FlatbufferBuilder::Offset FlatbufferBuilder::CreateString(std::string_view s) {
  assert(!in_table_);
  PreAlign(s.size() + 1, sizeof(uint32_t));
  PushZeros(1);
  Push(s.data(), s.size());
  const uint32_t length = static_cast<uint32_t>(s.size());
  Push(&length, sizeof(length));
  return static_cast<Offset>(size_);
}

FlatbufferBuilder::Offset FlatbufferBuilder::CreateOffsetVector(
    std::span<const Offset> elements) {
  assert(!in_table_);
  if (elements.size() > kMaxSize / sizeof(uint32_t)) {
    throw InvalidArgumentError("Arrow metadata would exceed 2 GiB");
  }
  PreAlign(elements.size() * sizeof(uint32_t), sizeof(uint32_t));
  for (size_t i = elements.size(); i-- > 0;) {
    // The element's own Offset once pushed is size_ + 4; it points forward
    // to elements[i], which is closer to the end.
    assert(elements[i] != 0 && elements[i] <= size_);
    const uint32_t rel = static_cast<uint32_t>(size_ + sizeof(uint32_t) - elements[i]);
    Push(&rel, sizeof(rel));
  }
  const uint32_t length = static_cast<uint32_t>(elements.size());
  Push(&length, sizeof(length));
  return static_cast<Offset>(size_);
}

FlatbufferBuilder::Offset FlatbufferBuilder::CreateStructVector(const void* data, size_t count,
                                                                size_t struct_size,
                                                                size_t alignment) {
  assert(!in_table_);
  assert(alignment != 0 && (alignment & (alignment - 1)) == 0);
  if (struct_size != 0 && count > kMaxSize / struct_size) {
    throw InvalidArgumentError("Arrow metadata would exceed 2 GiB");
  }
  const size_t bytes = count * struct_size;
  // The length prefix is 4-aligned and immediately precedes the elements.
  PreAlign(bytes, sizeof(uint32_t));
  PreAlign(bytes, alignment);
  Push(data, bytes);
  const uint32_t length = static_cast<uint32_t>(count);
  Push(&length, sizeof(length));
  return static_cast<Offset>(size_);
}

void FlatbufferBuilder::StartTable() {
  assert(!in_table_);
  in_table_ = true;
  fields_.clear();
  table_start_ = size_;
}

void FlatbufferBuilder::AddOffset(int slot, Offset target) {
  assert(in_table_);
  if (target == 0) return;
  Align(sizeof(uint32_t));
  assert(target <= size_);
  const uint32_t rel = static_cast<uint32_t>(size_ + sizeof(uint32_t) - target);
  Push(&rel, sizeof(rel));
  fields_.emplace_back(slot, size_);
}

FlatbufferBuilder::Offset FlatbufferBuilder::EndTable() {
  assert(in_table_);
  in_table_ = false;
  // The table starts with an int32 soffset to its vtable.
  Align(sizeof(int32_t));
  PushZeros(sizeof(int32_t));
  const size_t table = size_;

  int max_slot = -1;
  for (const auto& [slot, offset] : fields_) max_slot = std::max(max_slot, slot);
  const size_t object_size = table - table_start_;
  const size_t vtable_entries = 2 + static_cast<size_t>(max_slot + 1);
  if (object_size > 0xFFFF || vtable_entries * 2 > 0xFFFF) {
    throw InvalidArgumentError("flatbuffer table too large");
  }
  // vtable: [vtable bytes, table inline bytes, per-slot offset from the
  // table start (0 = absent)].
  std::vector<uint16_t> vtable(vtable_entries, 0);
  vtable[0] = static_cast<uint16_t>(vtable_entries * 2);
  vtable[1] = static_cast<uint16_t>(object_size);
  for (const auto& [slot, offset] : fields_) {
    vtable[2 + slot] = static_cast<uint16_t>(table - offset);
  }
  Push(vtable.data(), vtable.size() * sizeof(uint16_t));
  // The vtable lies before the table: vtable = table - soffset.
  const int32_t soffset = static_cast<int32_t>(size_ - table);
  std::memcpy(buf_.data() + (buf_.size() - table), &soffset, sizeof(soffset));
  return static_cast<Offset>(table);
}

std::span<const std::byte> FlatbufferBuilder::Finish(Offset root) {
  assert(!in_table_);
  PreAlign(sizeof(uint32_t), max_alignment_);
  const uint32_t rel = static_cast<uint32_t>(size_ + sizeof(uint32_t) - root);
  Push(&rel, sizeof(rel));
  return {Front(), size_};
}

}  // namespace torchcachex::format
