#include "format/ipc_writer.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "format/arrow_fbs.h"
#include "format/flatbuffer_builder.h"
#include "torchcachex/errors.h"
#include "util/hash.h"
#include "util/xxh3.h"

namespace torchcachex::format {

namespace {

namespace fbs = arrow_fbs;
using Offset = FlatbufferBuilder::Offset;

constexpr std::byte kZeros[fbs::kAlignment] = {};

uint64_t PadTo8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

[[noreturn]] void Invalid(const ColumnBuffers& column, const std::string& problem) {
  throw InvalidArgumentError("cannot write segment column '" + column.field.name +
                             "': " + problem);
}

// Bytes of list child values for `count` elements of `element`.
uint64_t ValuesBytes(ArrowPrimitive element, uint64_t count) {
  const int bits = fbs::PrimitiveBits(element);
  return bits == 1 ? (count + 7) / 8 : count * static_cast<uint64_t>(bits / 8);
}

void ValidateColumn(const ColumnBuffers& column, int64_t num_rows) {
  const FieldType& type = column.field.type;
  if (type.large) Invalid(column, "large_* types are read but never written");
  if (type.kind == FieldType::Kind::kList &&
      fbs::EncodePrimitive(type.element).type == fbs::kTypeNone) {
    Invalid(column, "unknown list element type");
  }
  if (column.offsets.size() != static_cast<uint64_t>(num_rows) + 1) {
    Invalid(column, "offsets has " + std::to_string(column.offsets.size()) +
                        " entries, expected num_rows + 1 = " +
                        std::to_string(static_cast<uint64_t>(num_rows) + 1));
  }
  if (column.offsets[0] != 0) Invalid(column, "offsets[0] is not 0");
  // One linear pass: the only per-row work of the writer.
  const int32_t* offsets = column.offsets.data();
  for (int64_t i = 0; i < num_rows; ++i) {
    if (offsets[i + 1] < offsets[i]) {
      Invalid(column, "offsets decrease at row " + std::to_string(i));
    }
  }
  const uint64_t count = static_cast<uint64_t>(column.offsets.back());
  const uint64_t expected =
      type.kind == FieldType::Kind::kList ? ValuesBytes(type.element, count) : count;
  if (column.values.size() != expected) {
    Invalid(column, "values has " + std::to_string(column.values.size()) +
                        " bytes, offsets require " + std::to_string(expected));
  }
}

Offset BuildMetadata(FlatbufferBuilder& b, const KeyValueMetadata& metadata) {
  if (metadata.empty()) return 0;
  std::vector<Offset> entries;
  entries.reserve(metadata.size());
  for (const auto& [key, value] : metadata) {
    const Offset k = b.CreateString(key);
    const Offset v = b.CreateString(value);
    b.StartTable();
    b.AddOffset(fbs::key_value::kKey, k);
    b.AddOffset(fbs::key_value::kValue, v);
    entries.push_back(b.EndTable());
  }
  return b.CreateOffsetVector(entries);
}

// The Type union member for a list element: (type tag, table).
std::pair<uint8_t, Offset> BuildPrimitiveType(FlatbufferBuilder& b, ArrowPrimitive element) {
  const fbs::PrimitiveEncoding e = fbs::EncodePrimitive(element);
  b.StartTable();
  if (e.type == fbs::kTypeInt) {
    b.AddScalar<int32_t>(fbs::int_type::kBitWidth, e.bit_width);
    b.AddBool(fbs::int_type::kIsSigned, e.is_signed);
  } else if (e.type == fbs::kTypeFloatingPoint) {
    b.AddScalar<int16_t>(fbs::floating_point::kPrecision, e.precision);
  }
  return {e.type, b.EndTable()};
}

Offset BuildField(FlatbufferBuilder& b, std::string_view name, uint8_t type_tag,
                  Offset type_table, Offset children, Offset metadata) {
  const Offset name_offset = b.CreateString(name);
  b.StartTable();
  b.AddOffset(fbs::field::kName, name_offset);
  b.AddBool(fbs::field::kNullable, true);
  b.AddScalar<uint8_t>(fbs::field::kTypeType, type_tag);
  b.AddOffset(fbs::field::kType, type_table);
  b.AddOffset(fbs::field::kChildren, children);
  b.AddOffset(fbs::field::kCustomMetadata, metadata);
  return b.EndTable();
}

Offset BuildSchema(FlatbufferBuilder& b, const SegmentTable& table) {
  std::vector<Offset> fields;
  fields.reserve(table.columns.size());
  for (const ColumnBuffers& column : table.columns) {
    const Field& field = column.field;
    const Offset metadata = BuildMetadata(b, field.metadata);
    Offset children = 0;
    uint8_t tag;
    switch (field.type.kind) {
      case FieldType::Kind::kUtf8: tag = fbs::kTypeUtf8; break;
      case FieldType::Kind::kBinary: tag = fbs::kTypeBinary; break;
      case FieldType::Kind::kList: {
        tag = fbs::kTypeList;
        const auto [item_tag, item_type] = BuildPrimitiveType(b, field.type.element);
        const Offset empty = b.CreateOffsetVector({});
        const Offset item = BuildField(b, "item", item_tag, item_type, empty, 0);
        children = b.CreateOffsetVector(std::span<const Offset>(&item, 1));
        break;
      }
      default: tag = fbs::kTypeNone; break;
    }
    if (children == 0) children = b.CreateOffsetVector({});
    b.StartTable();  // Utf8, Binary and List tables have no fields.
    const Offset type_table = b.EndTable();
    fields.push_back(BuildField(b, field.name, tag, type_table, children, metadata));
  }
  const Offset fields_vector = b.CreateOffsetVector(fields);
  const Offset metadata = BuildMetadata(b, table.metadata);
  b.StartTable();
  b.AddScalar<int16_t>(fbs::schema::kEndianness, fbs::kEndiannessLittle);
  b.AddOffset(fbs::schema::kFields, fields_vector);
  b.AddOffset(fbs::schema::kCustomMetadata, metadata);
  return b.EndTable();
}

Offset BuildMessage(FlatbufferBuilder& b, uint8_t header_type, Offset header,
                    int64_t body_length) {
  b.StartTable();
  b.AddScalar<int64_t>(fbs::message::kBodyLength, body_length);
  b.AddOffset(fbs::message::kHeader, header);
  b.AddScalar<int16_t>(fbs::message::kVersion, fbs::kMetadataV5);
  b.AddScalar<uint8_t>(fbs::message::kHeaderType, header_type);
  return b.EndTable();
}

void AppendBytes(std::vector<std::byte>& out, const void* data, size_t n) {
  const auto* p = static_cast<const std::byte*>(data);
  out.insert(out.end(), p, p + n);
}

// Appends an encapsulated message's metadata: continuation marker, int32
// length, the flatbuffer, zero padding to 8 bytes. Returns the bytes
// appended (Block.metaDataLength).
int32_t AppendMessage(std::vector<std::byte>& out, std::span<const std::byte> flatbuffer) {
  const uint64_t padded = PadTo8(flatbuffer.size());
  if (padded > static_cast<uint64_t>(INT32_MAX) - 8) {
    throw InvalidArgumentError("Arrow message metadata exceeds 2 GiB");
  }
  const uint32_t continuation = fbs::kContinuation;
  const int32_t length = static_cast<int32_t>(padded);
  AppendBytes(out, &continuation, 4);
  AppendBytes(out, &length, 4);
  AppendBytes(out, flatbuffer.data(), flatbuffer.size());
  out.insert(out.end(), padded - flatbuffer.size(), std::byte{0});
  return static_cast<int32_t>(8 + padded);
}

void StoreLE64(std::byte* p, int64_t v) { std::memcpy(p, &v, 8); }

}  // namespace

uint64_t WriteSegment(const SegmentTable& table, const ByteSink& sink) {
  if (table.num_rows < 0) throw InvalidArgumentError("cannot write segment: num_rows < 0");
  for (const ColumnBuffers& column : table.columns) ValidateColumn(column, table.num_rows);

  // Body layout, in buffer order: per column validity (always empty: no
  // nulls), offsets, then for a list the child's validity (empty) and
  // values, else the data bytes. Each buffer starts 8-byte aligned.
  std::vector<std::span<const std::byte>> body;
  std::vector<std::byte> nodes;    // FieldNode structs, pre-order
  std::vector<std::byte> buffers;  // Buffer structs
  body.reserve(4 * table.columns.size());
  nodes.reserve(2 * table.columns.size() * fbs::kFieldNodeSize);
  buffers.reserve(4 * table.columns.size() * fbs::kBufferSize);
  uint64_t body_length = 0;
  auto add_node = [&](int64_t length) {
    const size_t at = nodes.size();
    nodes.resize(at + fbs::kFieldNodeSize);
    StoreLE64(&nodes[at], length);
    StoreLE64(&nodes[at + 8], 0);  // null_count
  };
  auto add_buffer = [&](std::span<const std::byte> bytes) {
    const size_t at = buffers.size();
    buffers.resize(at + fbs::kBufferSize);
    StoreLE64(&buffers[at], static_cast<int64_t>(body_length));
    StoreLE64(&buffers[at + 8], static_cast<int64_t>(bytes.size()));
    body.push_back(bytes);
    body_length += PadTo8(bytes.size());
  };
  for (const ColumnBuffers& column : table.columns) {
    add_node(table.num_rows);
    add_buffer({});
    add_buffer(std::as_bytes(column.offsets));
    if (column.field.type.kind == FieldType::Kind::kList) {
      add_node(column.offsets.back());
      add_buffer({});
    }
    add_buffer(column.values);
  }

  std::vector<std::byte> head;
  head.reserve(1024);
  AppendBytes(head, fbs::kMagic, fbs::kMagicSize);
  head.insert(head.end(), fbs::kPaddedMagicSize - fbs::kMagicSize, std::byte{0});
  {
    FlatbufferBuilder b;
    const Offset schema = BuildSchema(b, table);
    AppendMessage(head, b.Finish(BuildMessage(b, fbs::kHeaderSchema, schema, 0)));
  }
  const int64_t batch_offset = static_cast<int64_t>(head.size());
  int32_t batch_metadata_length;
  {
    FlatbufferBuilder b;
    const Offset buffer_vector = b.CreateStructVector(
        buffers.data(), buffers.size() / fbs::kBufferSize, fbs::kBufferSize,
        fbs::kStructAlignment);
    const Offset node_vector = b.CreateStructVector(
        nodes.data(), nodes.size() / fbs::kFieldNodeSize, fbs::kFieldNodeSize,
        fbs::kStructAlignment);
    b.StartTable();
    b.AddScalar<int64_t>(fbs::record_batch::kLength, table.num_rows);
    b.AddOffset(fbs::record_batch::kNodes, node_vector);
    b.AddOffset(fbs::record_batch::kBuffers, buffer_vector);
    const Offset batch = b.EndTable();
    batch_metadata_length = AppendMessage(
        head, b.Finish(BuildMessage(b, fbs::kHeaderRecordBatch, batch,
                                    static_cast<int64_t>(body_length))));
  }

  // Everything before the footer is streamed to the sink and hashed; the
  // footer then records the checksum (kChecksumMetadataKey). Pieces of
  // kHashThenSinkBytes are hashed and then handed to the sink while they are
  // still in the CPU cache, so a large buffer is read from memory once, not
  // once by the hash and again by the sink's copy.
  constexpr size_t kHashThenSinkBytes = size_t{256} << 10;
  Xxh3Stream checksum;
  auto emit = [&](std::span<const std::byte> bytes) {
    while (!bytes.empty()) {
      const std::span<const std::byte> piece = bytes.first(std::min(bytes.size(), kHashThenSinkBytes));
      checksum.Update(piece);
      sink(piece);
      bytes = bytes.subspan(piece.size());
    }
  };
  emit(head);
  for (std::span<const std::byte> bytes : body) {
    emit(bytes);
    const size_t padding = PadTo8(bytes.size()) - bytes.size();
    emit(std::span<const std::byte>(kZeros, padding));
  }
  // End-of-stream marker, for readers that stream through the file.
  const uint32_t eos[2] = {fbs::kContinuation, 0};
  emit(std::as_bytes(std::span(eos)));

  std::vector<std::byte> tail;
  {
    FlatbufferBuilder b;
    std::byte block[fbs::kBlockSize] = {};
    StoreLE64(block, batch_offset);
    std::memcpy(block + fbs::kBlockMetaDataLengthOffset, &batch_metadata_length, 4);
    StoreLE64(block + fbs::kBlockBodyLengthOffset, static_cast<int64_t>(body_length));
    const Offset blocks =
        b.CreateStructVector(block, 1, fbs::kBlockSize, fbs::kStructAlignment);
    const Offset dictionaries =
        b.CreateStructVector(nullptr, 0, fbs::kBlockSize, fbs::kStructAlignment);
    const Offset schema = BuildSchema(b, table);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(checksum.Digest()));
    KeyValueMetadata footer_entries = {{kChecksumMetadataKey, hex}};
    if (table.key_column >= 0) {
      const ColumnBuffers& keys = table.columns.at(static_cast<size_t>(table.key_column));
      Xxh64Stream keys_checksum;
      keys_checksum.Update(std::as_bytes(keys.offsets));
      keys_checksum.Update(keys.values);
      char keys_hex[17];
      std::snprintf(keys_hex, sizeof keys_hex, "%016llx",
                    static_cast<unsigned long long>(keys_checksum.Digest()));
      footer_entries.push_back({kKeysChecksumMetadataKey, keys_hex});
    }
    const Offset footer_metadata = BuildMetadata(b, footer_entries);
    b.StartTable();
    b.AddOffset(fbs::footer::kSchema, schema);
    b.AddOffset(fbs::footer::kDictionaries, dictionaries);
    b.AddOffset(fbs::footer::kRecordBatches, blocks);
    b.AddOffset(fbs::footer::kCustomMetadata, footer_metadata);
    b.AddScalar<int16_t>(fbs::footer::kVersion, fbs::kMetadataV5);
    const std::span<const std::byte> footer = b.Finish(b.EndTable());
    const int32_t footer_length = static_cast<int32_t>(footer.size());
    AppendBytes(tail, footer.data(), footer.size());
    AppendBytes(tail, &footer_length, 4);
    AppendBytes(tail, fbs::kMagic, fbs::kMagicSize);
  }
  sink(tail);
  return head.size() + body_length + sizeof(eos) + tail.size();
}

std::vector<std::byte> EncodeSegment(const SegmentTable& table) {
  std::vector<std::byte> out;
  WriteSegment(table, [&out](std::span<const std::byte> bytes) {
    out.insert(out.end(), bytes.begin(), bytes.end());
  });
  return out;
}

}  // namespace torchcachex::format
