// A bounds-checked FlatBuffers reader for untrusted buffers.
//
// Every uoffset, soffset, vtable, string and vector access is checked
// against the buffer before it is dereferenced; a violation throws
// CorruptFileError naming the field ("Footer.schema: ...") and the problem.
// Reads go through memcpy, so misaligned input is safe (if slow).
//
// The reader does not detect cycles or shared sub-objects: callers must not
// recurse through schema-defined nesting (Field.children) without a depth
// bound of their own.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "torchcachex/errors.h"

namespace torchcachex::format::fb {

static_assert(std::endian::native == std::endian::little,
              "the Arrow codec supports little-endian hosts only");

[[noreturn]] inline void Fail(std::string_view what, std::string_view problem) {
  std::string message = "corrupt Arrow IPC metadata: ";
  message.append(what);
  message.append(": ");
  message.append(problem);
  throw CorruptFileError(message);
}

// Reads a little-endian T at `p` (no alignment needed).
template <typename T>
inline T Load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// A vector of structs: size() elements of `struct_size` bytes, all inside
// the buffer.
class StructVector {
 public:
  StructVector() = default;
  StructVector(const std::byte* data, uint32_t size, size_t struct_size)
      : data_(data), size_(size), struct_size_(struct_size) {}
  uint32_t size() const { return size_; }
  const std::byte* at(uint32_t i) const { return data_ + size_t{i} * struct_size_; }

 private:
  const std::byte* data_ = nullptr;
  uint32_t size_ = 0;
  size_t struct_size_ = 0;
};

class Table;

// A vector of uoffsets to tables; elements are resolved (and checked) on
// access.
class TableVector {
 public:
  TableVector() = default;
  TableVector(std::span<const std::byte> buf, uint64_t pos, uint32_t size, const char* what)
      : buf_(buf), pos_(pos), size_(size), what_(what) {}
  uint32_t size() const { return size_; }
  inline Table at(uint32_t i) const;

 private:
  std::span<const std::byte> buf_;
  uint64_t pos_ = 0;  // of element 0
  uint32_t size_ = 0;
  const char* what_ = "";
};

// A table inside a buffer. A default-constructed Table is "absent".
class Table {
 public:
  Table() = default;

  // The table at absolute position `pos` of `buf`. Checks that the table's
  // soffset, its vtable and its inline part lie inside `buf`.
  Table(std::span<const std::byte> buf, uint64_t pos, const char* what)
      : buf_(buf), pos_(pos) {
    const uint64_t size = buf.size();
    if (pos > size || size - pos < 4) Fail(what, "table offset out of bounds");
    const int64_t vtable = static_cast<int64_t>(pos) - Load<int32_t>(buf.data() + pos);
    if (vtable < 0 || static_cast<uint64_t>(vtable) > size ||
        size - static_cast<uint64_t>(vtable) < 4) {
      Fail(what, "vtable offset out of bounds");
    }
    vtable_ = static_cast<uint64_t>(vtable);
    vtable_size_ = Load<uint16_t>(buf.data() + vtable_);
    table_size_ = Load<uint16_t>(buf.data() + vtable_ + 2);
    if (vtable_size_ < 4 || (vtable_size_ & 1) != 0 || vtable_size_ > size - vtable_) {
      Fail(what, "bad vtable size");
    }
    if (table_size_ < 4 || table_size_ > size - pos) Fail(what, "bad table size");
    present_ = true;
  }

  // The root table of `buf`.
  static Table Root(std::span<const std::byte> buf, const char* what) {
    if (buf.size() < 4) Fail(what, "flatbuffer too short");
    return Table(buf, Load<uint32_t>(buf.data()), what);
  }

  bool present() const { return present_; }

  template <typename T>
  T Scalar(int slot, T default_value, const char* what) const {
    const uint64_t p = FieldPosition(slot, sizeof(T), what);
    return p == 0 ? default_value : Load<T>(buf_.data() + p);
  }
  bool Bool(int slot, bool default_value, const char* what) const {
    return Scalar<uint8_t>(slot, default_value ? 1 : 0, what) != 0;
  }

  // Absent (present() == false) if the field is not set.
  Table GetTable(int slot, const char* what) const {
    const uint64_t target = Follow(slot, what);
    return target == 0 ? Table() : Table(buf_, target, what);
  }

  // `fallback` if the field is not set. The view points into the buffer.
  std::string_view GetString(int slot, const char* what,
                             std::string_view fallback = {}) const {
    const uint64_t target = Follow(slot, what);
    if (target == 0) return fallback;
    const uint32_t length = VectorLength(target, 1, what);
    return {reinterpret_cast<const char*>(buf_.data() + target + 4), length};
  }

  // Empty if the field is not set.
  StructVector GetStructVector(int slot, size_t struct_size, const char* what) const {
    const uint64_t target = Follow(slot, what);
    if (target == 0) return {};
    const uint32_t length = VectorLength(target, struct_size, what);
    return StructVector(buf_.data() + target + 4, length, struct_size);
  }

  TableVector GetTableVector(int slot, const char* what) const {
    const uint64_t target = Follow(slot, what);
    if (target == 0) return {};
    const uint32_t length = VectorLength(target, 4, what);
    return TableVector(buf_, target + 4, length, what);
  }

  bool Has(int slot) const { return VOffset(slot) != 0; }

 private:
  uint16_t VOffset(int slot) const {
    const uint64_t entry = 4 + 2 * static_cast<uint64_t>(slot);
    if (!present_ || entry + 2 > vtable_size_) return 0;
    return Load<uint16_t>(buf_.data() + vtable_ + entry);
  }

  // Absolute position of the field's `size` bytes, or 0 if it is not set.
  uint64_t FieldPosition(int slot, size_t size, const char* what) const {
    const uint16_t voffset = VOffset(slot);
    if (voffset == 0) return 0;
    if (voffset < 4 || voffset + size > table_size_) Fail(what, "field outside its table");
    return pos_ + voffset;  // inside the buffer: table_size_ <= size - pos_
  }

  // Absolute position the field's uoffset points at, or 0 if not set.
  uint64_t Follow(int slot, const char* what) const {
    const uint64_t p = FieldPosition(slot, 4, what);
    if (p == 0) return 0;
    const uint64_t target = p + Load<uint32_t>(buf_.data() + p);
    if (target == p || target >= buf_.size()) Fail(what, "offset out of bounds");
    return target;
  }

  // Length of the vector (or string) at `pos`, after checking that its
  // length prefix and `elem_size`-byte elements lie inside the buffer.
  uint32_t VectorLength(uint64_t pos, size_t elem_size, const char* what) const {
    const uint64_t size = buf_.size();
    if (pos > size || size - pos < 4) Fail(what, "vector offset out of bounds");
    const uint32_t length = Load<uint32_t>(buf_.data() + pos);
    if (uint64_t{length} * elem_size > size - pos - 4) Fail(what, "vector length out of bounds");
    return length;
  }

  std::span<const std::byte> buf_;
  uint64_t pos_ = 0;
  uint64_t vtable_ = 0;
  uint16_t vtable_size_ = 0;
  uint16_t table_size_ = 0;
  bool present_ = false;
};

inline Table TableVector::at(uint32_t i) const {
  // pos_ + 4 * size_ <= buf_.size() was checked when the vector was read.
  const uint64_t p = pos_ + 4 * uint64_t{i};
  const uint64_t target = p + Load<uint32_t>(buf_.data() + p);
  if (target == p || target >= buf_.size()) Fail(what_, "element offset out of bounds");
  return Table(buf_, target, what_);
}

}  // namespace torchcachex::format::fb
