#include "format/ipc_reader.h"

#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "format/arrow_fbs.h"
#include "format/flatbuffer_reader.h"
#include "torchcachex/errors.h"

namespace torchcachex::format {

namespace {

namespace fbs = arrow_fbs;
using fb::Load;

// Offsets of an empty array whose offsets buffer was written with length 0
// (allowed by the format): a single 0 of either width.
alignas(8) constexpr std::byte kZeroOffsets[8] = {};

[[noreturn]] void Corrupt(const std::string& problem) {
  throw CorruptFileError("corrupt Arrow IPC file: " + problem);
}

[[noreturn]] void Unsupported(const std::string& problem) {
  throw CorruptFileError("unsupported: " + problem);
}

std::string Quoted(std::string_view name) {
  std::string out;
  out.reserve(name.size() + 2);
  out.push_back('\'');
  out.append(name);
  out.push_back('\'');
  return out;
}

// Bounds the memory materialized from the footer. Flatbuffer objects may be
// shared, so a small footer could otherwise name the same long string or
// field table millions of times. Honest files stay far below the limit: each
// field or key/value pair occupies well over kObjectCost / 16 footer bytes.
class Budget {
 public:
  static constexpr uint64_t kObjectCost = 64;
  explicit Budget(uint64_t footer_length) : left_(16 * footer_length + (1u << 20)) {}

  void Charge(uint64_t bytes) {
    if (bytes > left_) Corrupt("footer metadata expands to more memory than the file could hold");
    left_ -= bytes;
  }
  std::string Copy(std::string_view s) {
    Charge(s.size());
    return std::string(s);
  }

 private:
  uint64_t left_;
};

int16_t CheckVersion(int16_t version, const char* what) {
  if (version != fbs::kMetadataV4 && version != fbs::kMetadataV5) {
    Unsupported(std::string(what) + " metadata version " + std::to_string(version) +
                " (expected V4 or V5)");
  }
  return version;
}

KeyValueMetadata ReadMetadata(const fb::Table& table, int slot, const char* what,
                              Budget& budget) {
  KeyValueMetadata metadata;
  const fb::TableVector entries = table.GetTableVector(slot, what);
  for (uint32_t i = 0; i < entries.size(); ++i) {
    const fb::Table kv = entries.at(i);
    budget.Charge(Budget::kObjectCost);
    std::string key = budget.Copy(kv.GetString(fbs::key_value::kKey, "KeyValue.key"));
    std::string value = budget.Copy(kv.GetString(fbs::key_value::kValue, "KeyValue.value"));
    metadata.emplace_back(std::move(key), std::move(value));
  }
  return metadata;
}

// The element type of list column `column`, from its child field. Only
// primitive children are supported, so there is no further nesting.
ArrowPrimitive ReadElementType(const fb::Table& child, const std::string& column) {
  if (child.Has(fbs::field::kDictionary)) {
    Unsupported("dictionary-encoded list elements in column " + Quoted(column));
  }
  const uint8_t tag = child.Scalar<uint8_t>(fbs::field::kTypeType, fbs::kTypeNone,
                                            "Field.type_type");
  const fb::Table type = child.GetTable(fbs::field::kType, "Field.type");
  std::optional<ArrowPrimitive> element;
  switch (tag) {
    case fbs::kTypeInt:
      if (!type.present()) Corrupt("list column " + Quoted(column) + ": Int type has no table");
      element = fbs::DecodeInt(type.Scalar<int32_t>(fbs::int_type::kBitWidth, 0, "Int.bitWidth"),
                               type.Bool(fbs::int_type::kIsSigned, false, "Int.is_signed"));
      if (!element) Corrupt("list column " + Quoted(column) + ": bad Int bitWidth");
      break;
    case fbs::kTypeFloatingPoint:
      if (!type.present()) {
        Corrupt("list column " + Quoted(column) + ": FloatingPoint type has no table");
      }
      element = fbs::DecodeFloatingPoint(type.Scalar<int16_t>(
          fbs::floating_point::kPrecision, fbs::kPrecisionHalf, "FloatingPoint.precision"));
      if (!element) Corrupt("list column " + Quoted(column) + ": bad FloatingPoint precision");
      break;
    case fbs::kTypeBool:
      element = ArrowPrimitive::kBool;
      break;
    default:
      Unsupported("list column " + Quoted(column) + " has element type " +
                  fbs::TypeName(tag) + " (only integer, floating point and bool elements)");
  }
  if (child.GetTableVector(fbs::field::kChildren, "Field.children").size() != 0) {
    Corrupt("list column " + Quoted(column) + ": primitive child field has children");
  }
  return *element;
}

Field ReadField(const fb::Table& table, Budget& budget) {
  budget.Charge(Budget::kObjectCost);
  Field field;
  field.name = budget.Copy(table.GetString(fbs::field::kName, "Field.name"));
  if (table.Has(fbs::field::kDictionary)) {
    Unsupported("dictionary-encoded column " + Quoted(field.name));
  }
  const uint8_t tag =
      table.Scalar<uint8_t>(fbs::field::kTypeType, fbs::kTypeNone, "Field.type_type");
  const fb::TableVector children = table.GetTableVector(fbs::field::kChildren, "Field.children");
  switch (tag) {
    case fbs::kTypeUtf8:
    case fbs::kTypeLargeUtf8:
    case fbs::kTypeBinary:
    case fbs::kTypeLargeBinary:
      field.type.kind = (tag == fbs::kTypeUtf8 || tag == fbs::kTypeLargeUtf8)
                            ? FieldType::Kind::kUtf8
                            : FieldType::Kind::kBinary;
      field.type.large = tag == fbs::kTypeLargeUtf8 || tag == fbs::kTypeLargeBinary;
      if (children.size() != 0) {
        Corrupt("column " + Quoted(field.name) + " of type " + fbs::TypeName(tag) +
                " has child fields");
      }
      break;
    case fbs::kTypeList:
    case fbs::kTypeLargeList:
      field.type.kind = FieldType::Kind::kList;
      field.type.large = tag == fbs::kTypeLargeList;
      if (children.size() != 1) {
        Corrupt("list column " + Quoted(field.name) + " has " +
                std::to_string(children.size()) + " child fields, expected 1");
      }
      field.type.element = ReadElementType(children.at(0), field.name);
      break;
    default:
      Unsupported("column " + Quoted(field.name) + " has Arrow type " + fbs::TypeName(tag) +
                  " (only utf8, binary, list<primitive> and their large variants)");
  }
  field.metadata =
      ReadMetadata(table, fbs::field::kCustomMetadata, "Field.custom_metadata", budget);
  return field;
}

void ReadSchema(const fb::Table& schema, ParsedSegment* out, Budget& budget) {
  if (schema.Scalar<int16_t>(fbs::schema::kEndianness, fbs::kEndiannessLittle,
                             "Schema.endianness") != fbs::kEndiannessLittle) {
    Unsupported("big-endian Arrow data");
  }
  const fb::TableVector fields = schema.GetTableVector(fbs::schema::kFields, "Schema.fields");
  out->fields.reserve(fields.size());
  for (uint32_t i = 0; i < fields.size(); ++i) {
    out->fields.push_back(ReadField(fields.at(i), budget));
  }
  out->metadata =
      ReadMetadata(schema, fbs::schema::kCustomMetadata, "Schema.custom_metadata", budget);
}

// Checks 0 <= offsets[0] <= ... <= offsets[length] <= limit; returns the
// problem, or an empty string.
template <typename T>
std::string CheckOffsets(const std::byte* offsets, int64_t length, int64_t limit) {
  T prev = Load<T>(offsets);
  if (prev < 0) return "negative first offset";
  for (int64_t i = 1; i <= length; ++i) {
    const T cur = Load<T>(offsets + i * static_cast<int64_t>(sizeof(T)));
    if (cur < prev) return "offsets decrease at row " + std::to_string(i - 1);
    prev = cur;
  }
  if (static_cast<int64_t>(prev) > limit) {
    return "last offset " + std::to_string(prev) + " is past the end of the " +
           std::to_string(limit) + " values";
  }
  return {};
}

struct BufferRange {
  const std::byte* data;
  int64_t length;
};

struct Node {
  int64_t length;
  int64_t null_count;
};

// Reads one record batch: the block's message and body, validated against
// the schema. The caller has checked that the block lies inside the file.
class BatchReader {
 public:
  BatchReader(std::span<const std::byte> file, uint32_t index) : file_(file), index_(index) {}

  RecordBatchView Read(const std::vector<Field>& fields, int64_t block_offset,
                       int32_t metadata_length, int64_t block_body_length,
                       const BodyBuffersHook& before_reading_body) {
    const fb::Table message = ReadMessage(block_offset, metadata_length);
    CheckVersion(message.Scalar<int16_t>(fbs::message::kVersion, 0, "Message.version"),
                 "record batch message");
    if (message.Scalar<uint8_t>(fbs::message::kHeaderType, 0, "Message.header_type") !=
        fbs::kHeaderRecordBatch) {
      Fail(": block does not point at a record batch message");
    }
    const int64_t body_length =
        message.Scalar<int64_t>(fbs::message::kBodyLength, 0, "Message.bodyLength");
    if (body_length < 0 || body_length > block_body_length) {
      Fail(": message body length " + std::to_string(body_length) +
           " disagrees with the footer's " + std::to_string(block_body_length));
    }
    body_ = file_.data() + block_offset + metadata_length;
    body_length_ = body_length;

    const fb::Table batch = message.GetTable(fbs::message::kHeader, "Message.header");
    if (!batch.present()) Fail(": message has no RecordBatch header");
    if (batch.Has(fbs::record_batch::kCompression)) {
      Unsupported(Where() + " uses body compression");
    }
    RecordBatchView view;
    view.num_rows = batch.Scalar<int64_t>(fbs::record_batch::kLength, 0, "RecordBatch.length");
    if (view.num_rows < 0) Fail(": negative length");
    nodes_ = batch.GetStructVector(fbs::record_batch::kNodes, fbs::kFieldNodeSize,
                                   "RecordBatch.nodes");
    buffers_ = batch.GetStructVector(fbs::record_batch::kBuffers, fbs::kBufferSize,
                                     "RecordBatch.buffers");
    CheckCounts(fields);
    if (before_reading_body) AnnounceBuffers(fields, before_reading_body);

    view.columns.reserve(fields.size());
    for (const Field& field : fields) view.columns.push_back(ReadColumn(field, view.num_rows));
    return view;
  }

 private:
  // The flatbuffer Message of the block at `offset`, whose metadata (prefix,
  // flatbuffer, padding) spans `metadata_length` bytes.
  fb::Table ReadMessage(int64_t offset, int32_t metadata_length) {
    const std::byte* p = file_.data() + offset;
    uint64_t prefix = 8;
    int32_t flatbuffer_length;
    if (Load<uint32_t>(p) == fbs::kContinuation) {
      flatbuffer_length = Load<int32_t>(p + 4);
    } else {
      // Pre-1.0 framing: the length without a continuation marker.
      prefix = 4;
      flatbuffer_length = Load<int32_t>(p);
    }
    if (flatbuffer_length <= 0 ||
        static_cast<uint64_t>(flatbuffer_length) > metadata_length - prefix) {
      Fail(": message metadata length " + std::to_string(flatbuffer_length) +
           " does not fit its block");
    }
    return fb::Table::Root(file_.subspan(offset + prefix, flatbuffer_length), "Message");
  }

  // Calls `hook` with every buffer of the batch (CheckCounts has checked
  // their number and bounds).
  void AnnounceBuffers(const std::vector<Field>& fields, const BodyBuffersHook& hook) const {
    std::vector<BodyBuffer> buffers;
    buffers.reserve(buffers_.size());
    uint32_t i = 0;
    auto add = [&](const Field& field, BufferRole role) {
      const std::byte* p = buffers_.at(i++);
      buffers.push_back({&field, role,
                         {body_ + Load<int64_t>(p), static_cast<size_t>(Load<int64_t>(p + 8))}});
    };
    for (const Field& field : fields) {
      add(field, BufferRole::kValidity);
      add(field, BufferRole::kOffsets);
      if (field.type.kind == FieldType::Kind::kList) add(field, BufferRole::kChildValidity);
      add(field, BufferRole::kValues);
    }
    hook(buffers);
  }

  void CheckCounts(const std::vector<Field>& fields) {
    uint64_t nodes = 0, buffers = 0;
    for (const Field& field : fields) {
      const bool list = field.type.kind == FieldType::Kind::kList;
      nodes += list ? 2 : 1;
      buffers += list ? 4 : 3;
    }
    if (nodes_.size() != nodes) {
      Fail(" has " + std::to_string(nodes_.size()) + " field nodes, the schema needs " +
           std::to_string(nodes));
    }
    if (buffers_.size() != buffers) {
      Fail(" has " + std::to_string(buffers_.size()) + " buffers, the schema needs " +
           std::to_string(buffers));
    }
    // Buffers of honest files are disjoint; their total bounds the work done
    // validating them (shared regions could otherwise make it quadratic).
    uint64_t total = 0;
    for (uint32_t i = 0; i < buffers_.size(); ++i) {
      const int64_t offset = Load<int64_t>(buffers_.at(i));
      const int64_t length = Load<int64_t>(buffers_.at(i) + 8);
      if (offset < 0 || length < 0 || offset > body_length_ || length > body_length_ - offset) {
        Fail(": buffer " + std::to_string(i) + " (offset " + std::to_string(offset) +
             ", length " + std::to_string(length) + ") is outside the " +
             std::to_string(body_length_) + "-byte body");
      }
      total += static_cast<uint64_t>(length);
    }
    if (total > static_cast<uint64_t>(body_length_)) {
      Fail(": buffers overlap (" + std::to_string(total) + " bytes in a " +
           std::to_string(body_length_) + "-byte body)");
    }
  }

  Node NextNode(const Field& field) {
    const std::byte* p = nodes_.at(next_node_++);
    Node node{Load<int64_t>(p), Load<int64_t>(p + 8)};
    if (node.length < 0 || node.null_count < 0 || node.null_count > node.length) {
      Fail(field, "bad field node (length " + std::to_string(node.length) +
                      ", null_count " + std::to_string(node.null_count) + ")");
    }
    return node;
  }

  // In bounds: CheckCounts() checked every buffer against the body.
  BufferRange NextBuffer() {
    const std::byte* p = buffers_.at(next_buffer_++);
    return {body_ + Load<int64_t>(p), Load<int64_t>(p + 8)};
  }

  ColumnView ReadColumn(const Field& field, int64_t num_rows) {
    ColumnView view;
    const Node node = NextNode(field);
    if (node.length != num_rows) {
      Fail(field, "length " + std::to_string(node.length) + " differs from the batch's " +
                      std::to_string(num_rows));
    }
    const BufferRange validity = NextBuffer();
    if (node.null_count > 0) {
      if (validity.length < num_rows / 8 + (num_rows % 8 != 0)) {
        Fail(field, "validity bitmap too short");
      }
      view.validity = validity.data;
    }

    view.large_offsets = field.type.large;
    const int64_t width = view.large_offsets ? 8 : 4;
    const BufferRange offsets = NextBuffer();
    if (num_rows == 0 && offsets.length == 0) {
      view.offsets = kZeroOffsets;
    } else if (offsets.length / width <= num_rows) {
      Fail(field, "offsets buffer too short for " + std::to_string(num_rows) + " rows");
    } else {
      view.offsets = offsets.data;
    }

    if (field.type.kind == FieldType::Kind::kList) {
      const Node child = NextNode(field);
      if (child.null_count > 0) Unsupported("null elements in list column " + Quoted(field.name));
      NextBuffer();  // child validity: unused, the child has no nulls
      const BufferRange values = NextBuffer();
      const int bits = fbs::PrimitiveBits(field.type.element);
      const bool fits = bits == 1 ? values.length >= child.length / 8 + (child.length % 8 != 0)
                                  : values.length / (bits / 8) >= child.length;
      if (!fits) {
        Fail(field, "values buffer too short for " + std::to_string(child.length) +
                        " list elements");
      }
      view.values = values.data;
      view.values_length = child.length;
    } else {
      const BufferRange data = NextBuffer();
      view.values = data.data;
      view.values_length = data.length;
    }

    const std::string problem =
        view.large_offsets ? CheckOffsets<int64_t>(view.offsets, num_rows, view.values_length)
                           : CheckOffsets<int32_t>(view.offsets, num_rows, view.values_length);
    if (!problem.empty()) Fail(field, problem);
    return view;
  }

  // Error context is built only when failing: it may be long (field names).
  std::string Where() const { return "record batch " + std::to_string(index_); }
  // `rest` continues the sentence: ": <problem>" or " has ...".
  [[noreturn]] void Fail(const std::string& rest) const { Corrupt(Where() + rest); }
  [[noreturn]] void Fail(const Field& field, const std::string& problem) const {
    Corrupt(Where() + ", column " + Quoted(field.name) + ": " + problem);
  }

  std::span<const std::byte> file_;
  uint32_t index_;
  const std::byte* body_ = nullptr;
  int64_t body_length_ = 0;
  fb::StructVector nodes_;
  fb::StructVector buffers_;
  uint32_t next_node_ = 0;
  uint32_t next_buffer_ = 0;
};

}  // namespace

ParsedSegment ParseSegment(std::span<const std::byte> file, const BodyBuffersHook& before_reading_body) {
  // Leading "ARROW1\0\0", trailing int32 footer length and "ARROW1".
  constexpr uint64_t kTrailerSize = 4 + fbs::kMagicSize;
  const uint64_t size = file.size();
  if (size < fbs::kPaddedMagicSize + kTrailerSize) {
    Corrupt("not an Arrow IPC file (only " + std::to_string(size) + " bytes)");
  }
  if (std::memcmp(file.data(), fbs::kMagic, fbs::kMagicSize) != 0) {
    Corrupt("not an Arrow IPC file (no leading ARROW1 magic)");
  }
  if (std::memcmp(file.data() + size - fbs::kMagicSize, fbs::kMagic, fbs::kMagicSize) != 0) {
    Corrupt("truncated or not an Arrow IPC file (no trailing ARROW1 magic)");
  }
  const int32_t footer_length = Load<int32_t>(file.data() + size - kTrailerSize);
  if (footer_length <= 0 ||
      static_cast<uint64_t>(footer_length) > size - kTrailerSize - fbs::kPaddedMagicSize) {
    Corrupt("bad footer length " + std::to_string(footer_length));
  }
  const uint64_t footer_start = size - kTrailerSize - static_cast<uint64_t>(footer_length);

  const fb::Table footer =
      fb::Table::Root(file.subspan(footer_start, static_cast<size_t>(footer_length)), "Footer");
  CheckVersion(footer.Scalar<int16_t>(fbs::footer::kVersion, 0, "Footer.version"), "footer");
  const fb::Table schema = footer.GetTable(fbs::footer::kSchema, "Footer.schema");
  if (!schema.present()) Corrupt("footer has no schema");

  ParsedSegment out;
  Budget budget(static_cast<uint64_t>(footer_length));
  ReadSchema(schema, &out, budget);
  out.footer_metadata = ReadMetadata(footer, fbs::footer::kCustomMetadata, "Footer.custom_metadata", budget);
  out.footer_offset = footer_start;

  if (footer.GetStructVector(fbs::footer::kDictionaries, fbs::kBlockSize, "Footer.dictionaries")
          .size() != 0) {
    Unsupported("dictionary batches");
  }
  const fb::StructVector blocks = footer.GetStructVector(
      fbs::footer::kRecordBatches, fbs::kBlockSize, "Footer.recordBatches");
  // Blocks of honest files are disjoint: their total size bounds the work.
  uint64_t claimed = 0;
  out.batches.reserve(blocks.size());
  for (uint32_t i = 0; i < blocks.size(); ++i) {
    const std::byte* block = blocks.at(i);
    const int64_t offset = Load<int64_t>(block);
    const int32_t metadata_length = Load<int32_t>(block + fbs::kBlockMetaDataLengthOffset);
    const int64_t body_length = Load<int64_t>(block + fbs::kBlockBodyLengthOffset);
    const uint64_t limit = footer_start;
    if (offset < static_cast<int64_t>(fbs::kPaddedMagicSize) || metadata_length < 8 ||
        body_length < 0 || static_cast<uint64_t>(offset) > limit ||
        static_cast<uint64_t>(metadata_length) > limit - static_cast<uint64_t>(offset) ||
        static_cast<uint64_t>(body_length) >
            limit - static_cast<uint64_t>(offset) - static_cast<uint64_t>(metadata_length)) {
      Corrupt("record batch " + std::to_string(i) + ": block (offset " + std::to_string(offset) +
              ", metadata " + std::to_string(metadata_length) + ", body " +
              std::to_string(body_length) + " bytes) is outside the file's " +
              std::to_string(limit) + " data bytes");
    }
    claimed += static_cast<uint64_t>(metadata_length) + static_cast<uint64_t>(body_length);
    if (claimed > limit - fbs::kPaddedMagicSize) Corrupt("record batch blocks overlap");

    BatchReader reader(file, i);
    out.batches.push_back(reader.Read(out.fields, offset, metadata_length, body_length, before_reading_body));
    if (__builtin_add_overflow(out.num_rows, out.batches.back().num_rows, &out.num_rows)) {
      Corrupt("total row count overflows");
    }
  }
  return out;
}

}  // namespace torchcachex::format
