// Arrow's flatbuffer schema (Schema.fbs, Message.fbs, File.fbs), reduced to
// what the segment codec reads and writes: table slots, union and enum
// values, struct sizes, and the IPC file framing constants.
//
// Slot numbers count vtable entries: a union field takes two slots, its
// type tag first and its value second.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "torchcachex/dtype.h"

namespace torchcachex::format::arrow_fbs {

// ---- IPC file framing ----
inline constexpr char kMagic[6] = {'A', 'R', 'R', 'O', 'W', '1'};
inline constexpr size_t kMagicSize = 6;
inline constexpr size_t kPaddedMagicSize = 8;  // "ARROW1\0\0" at the file start
inline constexpr uint32_t kContinuation = 0xFFFFFFFFu;
inline constexpr size_t kAlignment = 8;        // of messages and body buffers

// ---- enums ----
inline constexpr int16_t kMetadataV4 = 3;
inline constexpr int16_t kMetadataV5 = 4;
inline constexpr int16_t kEndiannessLittle = 0;

// union MessageHeader
inline constexpr uint8_t kHeaderSchema = 1;
inline constexpr uint8_t kHeaderDictionaryBatch = 2;
inline constexpr uint8_t kHeaderRecordBatch = 3;

// union Type
inline constexpr uint8_t kTypeNone = 0;
inline constexpr uint8_t kTypeInt = 2;
inline constexpr uint8_t kTypeFloatingPoint = 3;
inline constexpr uint8_t kTypeBinary = 4;
inline constexpr uint8_t kTypeUtf8 = 5;
inline constexpr uint8_t kTypeBool = 6;
inline constexpr uint8_t kTypeList = 12;
inline constexpr uint8_t kTypeLargeBinary = 19;
inline constexpr uint8_t kTypeLargeUtf8 = 20;
inline constexpr uint8_t kTypeLargeList = 21;

// enum Precision
inline constexpr int16_t kPrecisionHalf = 0;
inline constexpr int16_t kPrecisionSingle = 1;
inline constexpr int16_t kPrecisionDouble = 2;

// The name of a Type union member, for error messages.
inline const char* TypeName(uint8_t type) {
  static constexpr const char* kNames[] = {
      "NONE",      "Null",          "Int",           "FloatingPoint", "Binary",
      "Utf8",      "Bool",          "Decimal",       "Date",          "Time",
      "Timestamp", "Interval",      "List",          "Struct_",       "Union",
      "FixedSizeBinary", "FixedSizeList", "Map",     "Duration",      "LargeBinary",
      "LargeUtf8", "LargeList",     "RunEndEncoded", "BinaryView",    "Utf8View",
      "ListView",  "LargeListView"};
  return type < sizeof(kNames) / sizeof(kNames[0]) ? kNames[type] : "unknown";
}

// ---- table slots ----
namespace footer {
inline constexpr int kVersion = 0;
inline constexpr int kSchema = 1;
inline constexpr int kDictionaries = 2;
inline constexpr int kRecordBatches = 3;
inline constexpr int kCustomMetadata = 4;
}  // namespace footer

namespace message {
inline constexpr int kVersion = 0;
inline constexpr int kHeaderType = 1;
inline constexpr int kHeader = 2;
inline constexpr int kBodyLength = 3;
}  // namespace message

namespace schema {
inline constexpr int kEndianness = 0;
inline constexpr int kFields = 1;
inline constexpr int kCustomMetadata = 2;
}  // namespace schema

namespace field {
inline constexpr int kName = 0;
inline constexpr int kNullable = 1;
inline constexpr int kTypeType = 2;
inline constexpr int kType = 3;
inline constexpr int kDictionary = 4;
inline constexpr int kChildren = 5;
inline constexpr int kCustomMetadata = 6;
}  // namespace field

namespace key_value {
inline constexpr int kKey = 0;
inline constexpr int kValue = 1;
}  // namespace key_value

namespace int_type {
inline constexpr int kBitWidth = 0;
inline constexpr int kIsSigned = 1;
}  // namespace int_type

namespace floating_point {
inline constexpr int kPrecision = 0;
}  // namespace floating_point

namespace record_batch {
inline constexpr int kLength = 0;
inline constexpr int kNodes = 1;
inline constexpr int kBuffers = 2;
inline constexpr int kCompression = 3;
}  // namespace record_batch

// ---- structs (little-endian, 8-byte aligned) ----
// FieldNode { length: long; null_count: long; }
inline constexpr size_t kFieldNodeSize = 16;
// Buffer { offset: long; length: long; }
inline constexpr size_t kBufferSize = 16;
// Block { offset: long; metaDataLength: int; (4 bytes padding) bodyLength: long; }
inline constexpr size_t kBlockSize = 24;
inline constexpr size_t kBlockMetaDataLengthOffset = 8;
inline constexpr size_t kBlockBodyLengthOffset = 16;
inline constexpr size_t kStructAlignment = 8;

// ---- primitive element types ----
// How an ArrowPrimitive is spelled in a Field's Type union.
struct PrimitiveEncoding {
  uint8_t type;          // kTypeInt, kTypeFloatingPoint or kTypeBool
  int32_t bit_width;     // Int.bitWidth; for the others the storage width
  bool is_signed;        // Int.is_signed
  int16_t precision;     // FloatingPoint.precision
};

inline PrimitiveEncoding EncodePrimitive(ArrowPrimitive p) {
  switch (p) {
    case ArrowPrimitive::kInt8: return {kTypeInt, 8, true, 0};
    case ArrowPrimitive::kInt16: return {kTypeInt, 16, true, 0};
    case ArrowPrimitive::kInt32: return {kTypeInt, 32, true, 0};
    case ArrowPrimitive::kInt64: return {kTypeInt, 64, true, 0};
    case ArrowPrimitive::kUInt8: return {kTypeInt, 8, false, 0};
    case ArrowPrimitive::kUInt16: return {kTypeInt, 16, false, 0};
    case ArrowPrimitive::kUInt32: return {kTypeInt, 32, false, 0};
    case ArrowPrimitive::kUInt64: return {kTypeInt, 64, false, 0};
    case ArrowPrimitive::kFloat16: return {kTypeFloatingPoint, 16, false, kPrecisionHalf};
    case ArrowPrimitive::kFloat32: return {kTypeFloatingPoint, 32, false, kPrecisionSingle};
    case ArrowPrimitive::kFloat64: return {kTypeFloatingPoint, 64, false, kPrecisionDouble};
    case ArrowPrimitive::kBool: return {kTypeBool, 1, false, 0};
  }
  return {kTypeNone, 0, false, 0};
}

// Bits per element: 8..64, or 1 for bit-packed kBool.
inline int PrimitiveBits(ArrowPrimitive p) { return EncodePrimitive(p).bit_width; }

inline std::optional<ArrowPrimitive> DecodeInt(int32_t bit_width, bool is_signed) {
  switch (bit_width) {
    case 8: return is_signed ? ArrowPrimitive::kInt8 : ArrowPrimitive::kUInt8;
    case 16: return is_signed ? ArrowPrimitive::kInt16 : ArrowPrimitive::kUInt16;
    case 32: return is_signed ? ArrowPrimitive::kInt32 : ArrowPrimitive::kUInt32;
    case 64: return is_signed ? ArrowPrimitive::kInt64 : ArrowPrimitive::kUInt64;
    default: return std::nullopt;
  }
}

inline std::optional<ArrowPrimitive> DecodeFloatingPoint(int16_t precision) {
  switch (precision) {
    case kPrecisionHalf: return ArrowPrimitive::kFloat16;
    case kPrecisionSingle: return ArrowPrimitive::kFloat32;
    case kPrecisionDouble: return ArrowPrimitive::kFloat64;
    default: return std::nullopt;
  }
}

}  // namespace torchcachex::format::arrow_fbs
