// PendingBatch: rows put but not yet written, held as the Arrow buffers of
// the segment they will become (key offsets + chars, list offsets + values).
// Sealing is free: the writer encodes these buffers directly.
//
// Not thread-safe; the store appends under its exclusive lock and reads
// (view(), Table()) under its shared lock. view() is valid until the next
// Append.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "format/ipc_writer.h"
#include "store/batch_view.h"
#include "torchcachex/schema.h"
#include "torchcachex/store.h"
#include "util/default_init_allocator.h"
#include "util/large_allocator.h"

namespace torchcachex {

class PendingBatch {
 public:
  explicit PendingBatch(const Schema& schema);

  // Appends row `i` of `leaves` under `key`; returns its row number.
  // The caller has validated the leaves against the schema. The row becomes
  // visible through view() after the next UpdateView(). Row bytes are copied
  // with StreamCopy: call StreamFence() before another thread reads them.
  int64_t Append(std::string_view key, std::span<const LeafRows> leaves, size_t i);

  // Empties the batch, keeping its buffers' capacity for reuse.
  void Clear();

  // Points view() at the current buffers (they may have moved).
  void UpdateView();

  // Reserves room for `rows` rows like row `i` of `leaves` (keys of
  // `key_bytes`), so that filling the batch does not reallocate.
  void Reserve(size_t rows, size_t key_bytes, std::span<const LeafRows> leaves, size_t i);

  // The buffers' capacities, for a batch made ahead like this one.
  struct Capacity {
    size_t key_offsets = 0, key_chars = 0;
    struct Leaf {
      size_t data_offsets = 0, data_values = 0, shape_offsets = 0, shape_values = 0;
    };
    std::vector<Leaf> leaves;
    // This capacity scaled to `rows` rows (each buffer in proportion to its
    // room per row here; at least 1 row).
    Capacity ForRows(size_t rows) const;
  };
  Capacity capacity() const;

  // Reserves `capacity` (from a batch of the same schema) and has the kernel
  // fault in the pages of every buffer now, so that appending rows later
  // takes no page faults.
  void ReserveAndPopulate(const Capacity& capacity);

  // The reserved bytes of every buffer (keys, offsets, shapes and row bytes)
  // past what is appended, as spans (read under the owner's lock). Another
  // thread may fault them in with PopulateForWrite while rows are appended:
  // that changes no bytes. If a buffer moves meanwhile (an Append past its
  // capacity), the span is stale, and faulting in whatever is mapped there is
  // harmless as well. (Keys, offsets and shapes are a quarter of the bytes
  // of a 16-float batch.)
  std::vector<std::span<std::byte>> UnfilledBuffers();

  int64_t num_rows() const { return num_rows_; }
  // The key of `row` (< num_rows()), from the current buffers (no
  // UpdateView needed). Valid until the next Append or Clear.
  std::string_view KeyOf(int64_t row) const {
    return {reinterpret_cast<const char*>(key_chars_.data()) + key_offsets_[row],
            static_cast<size_t>(key_offsets_[row + 1] - key_offsets_[row])};
  }
  size_t bytes() const { return bytes_; }

  // Would appending `row_bytes` more bytes/elements overflow int32 offsets?
  bool WouldOverflow(size_t row_bytes) const;

  const BatchView& view() const { return view_; }

  // The buffers as a segment table (borrowed; valid while this batch lives
  // and is not appended to).
  format::SegmentTable Table() const;

 private:
  struct LeafBuffers {
    // Large buffers are mapped of their own (LargeAllocator): a batch freed
    // once written gives its memory back to the OS.
    LargeVector<int32_t> data_offsets{0};  // elements (tensors) or bytes (blobs)
    // Not zeroed on growth: Append overwrites what it adds.
    std::vector<std::byte, DefaultInitAllocator<std::byte, LargeAllocator<std::byte>>> data_values;
    LargeVector<int32_t> shape_offsets{0};
    LargeVector<int64_t> shape_values;
    // Bytes per storage element of a tensor leaf (a row's elements, as its
    // data offsets count them, are its bytes / this; see dtype.h); 1 for blobs.
    size_t storage_width = 1;
  };
  const Schema schema_;
  std::vector<format::Field> fields_;
  format::KeyValueMetadata metadata_;
  int64_t num_rows_ = 0;
  size_t bytes_ = 0;
  LargeVector<int32_t> key_offsets_{0};
  LargeVector<std::byte> key_chars_;
  std::vector<LeafBuffers> leaves_;
  BatchView view_;
};

}  // namespace torchcachex
