#include "format/arrow_types.h"

namespace torchcachex::format {

namespace {

const char* PrimitiveName(ArrowPrimitive type) {
  switch (type) {
    case ArrowPrimitive::kInt8: return "int8";
    case ArrowPrimitive::kInt16: return "int16";
    case ArrowPrimitive::kInt32: return "int32";
    case ArrowPrimitive::kInt64: return "int64";
    case ArrowPrimitive::kUInt8: return "uint8";
    case ArrowPrimitive::kUInt16: return "uint16";
    case ArrowPrimitive::kUInt32: return "uint32";
    case ArrowPrimitive::kUInt64: return "uint64";
    case ArrowPrimitive::kFloat16: return "halffloat";
    case ArrowPrimitive::kFloat32: return "float";
    case ArrowPrimitive::kFloat64: return "double";
    case ArrowPrimitive::kBool: return "bool";
  }
  return "unknown";
}

}  // namespace

std::string TypeToString(const FieldType& type) {
  switch (type.kind) {
    case FieldType::Kind::kUtf8:
      return type.large ? "large_string" : "string";
    case FieldType::Kind::kBinary:
      return type.large ? "large_binary" : "binary";
    case FieldType::Kind::kList:
      return std::string(type.large ? "large_list<item: " : "list<item: ") +
             PrimitiveName(type.element) + ">";
  }
  return "unknown";
}

const std::string* FindMetadata(const KeyValueMetadata& metadata, const std::string& key) {
  for (const auto& [k, v] : metadata) {
    if (k == key) return &v;
  }
  return nullptr;
}

}  // namespace torchcachex::format
