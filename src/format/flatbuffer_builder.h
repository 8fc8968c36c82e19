// A minimal FlatBuffers builder: strings, vectors of offsets, vectors of
// structs and tables of scalars and offsets. Enough to emit Arrow IPC
// metadata without depending on the flatbuffers library.
//
// Like the reference implementation it fills its buffer back to front: an
// object must be finished before anything that refers to it is started, so
// every uoffset points forward (to a higher address). An Offset is an
// object's distance from the END of the buffer, which stays fixed while
// more bytes are prepended. Alignment is likewise kept relative to the end;
// Finish() pads so that the buffer size is a multiple of the largest
// alignment used, which makes end-relative and start-relative alignment the
// same.
//
// Little-endian hosts only (the whole codec assumes it).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace torchcachex::format {

static_assert(std::endian::native == std::endian::little,
              "the Arrow codec supports little-endian hosts only");

class FlatbufferBuilder {
 public:
  // Distance of an object from the end of the buffer; 0 means "no object".
  using Offset = uint32_t;

  explicit FlatbufferBuilder(size_t initial_capacity = 1024);

  FlatbufferBuilder(const FlatbufferBuilder&) = delete;
  FlatbufferBuilder& operator=(const FlatbufferBuilder&) = delete;

  // A string: uint32 length, bytes, NUL terminator.
  Offset CreateString(std::string_view s);

  // A vector of uoffsets to tables or strings, in the given order.
  Offset CreateOffsetVector(std::span<const Offset> elements);

  // A vector of `count` structs of `struct_size` bytes each, already in wire
  // (little-endian) form, aligned to `alignment` (a power of two).
  Offset CreateStructVector(const void* data, size_t count, size_t struct_size,
                            size_t alignment);

  // Table construction. Between StartTable() and EndTable() only Add*()
  // calls are allowed; every object an AddOffset() refers to must already
  // have been created. Tables may not nest.
  void StartTable();
  template <typename T>
  void AddScalar(int slot, T value) {
    static_assert(std::is_arithmetic_v<T>);
    Align(sizeof(T));
    Push(&value, sizeof(T));
    fields_.emplace_back(slot, size_);
  }
  void AddBool(int slot, bool value) { AddScalar<uint8_t>(slot, value ? 1 : 0); }
  // Skipped when `target` is 0.
  void AddOffset(int slot, Offset target);
  Offset EndTable();

  // Writes the root uoffset. The returned bytes (valid until the builder is
  // modified or destroyed) form a buffer whose size is a multiple of 8.
  std::span<const std::byte> Finish(Offset root);

 private:
  // Grows the buffer so that `n` more bytes can be prepended.
  void Reserve(size_t n);
  void Push(const void* data, size_t n);
  void PushZeros(size_t n);
  // Pads so that size_ is a multiple of `alignment`.
  void Align(size_t alignment);
  // Pads so that after prepending `len` more bytes size_ is a multiple of
  // `alignment`.
  void PreAlign(size_t len, size_t alignment);
  std::byte* Front() { return buf_.data() + (buf_.size() - size_); }

  // buf_[buf_.size() - size_, buf_.size()) holds the bytes built so far.
  std::vector<std::byte> buf_;
  size_t size_ = 0;
  size_t max_alignment_ = 8;
  bool in_table_ = false;
  size_t table_start_ = 0;
  std::vector<std::pair<int, size_t>> fields_;  // (slot, Offset of the value)
};

}  // namespace torchcachex::format
