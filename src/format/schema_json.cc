// schema.json encoding and decoding (format in schema_json.h).
//
// The file has two readers: the original torchcachex, which reads "fields",
// "metadata" and "output_structure", and us, who read the exact leaves from
// the "torchcachex" object. Files without that object come from the original
// implementation; their leaves are inferred exactly as for a segment written
// in the original layout (SchemaFromSegment), so a cache directory opens the
// same way whether we look at its schema.json or at its segments.

#include "format/schema_json.h"

#include <cmath>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "format/arrow_types.h"
#include "format/segment_layout.h"
#include "torchcachex/errors.h"
#include "util/json.h"

namespace torchcachex::format {

namespace {

constexpr int kFormatVersion = 1;

[[noreturn]] void Corrupt(const std::string& why) {
  throw CorruptFileError("schema.json: " + why);
}

const char* KindName(LeafKind kind) { return kind == LeafKind::kTensor ? "tensor" : "blob"; }

// The original keys of a segment's schema metadata, other than
// output_structure (which schema.json keeps at the top level).
json::Object OriginalMetadata(const Schema& schema) {
  json::Object metadata;
  if (schema.leaves.size() == 1 && schema.leaves[0].name.empty() &&
      schema.leaves[0].kind == LeafKind::kTensor) {
    metadata.emplace_back("torch_dtype", std::string(TorchName(schema.leaves[0].dtype)));
  }
  if (schema.output_structure == "dict") {
    json::Array tensor_keys;
    for (const LeafSpec& leaf : schema.leaves) {
      if (leaf.kind == LeafKind::kTensor) tensor_keys.emplace_back(leaf.name);
    }
    metadata.emplace_back("tensor_keys", json::Serialize(json::Value(std::move(tensor_keys))));
  }
  return metadata;
}

// ---- pyarrow type strings ----

std::optional<ArrowPrimitive> PrimitiveFromName(std::string_view name) {
  struct Entry {
    std::string_view name;
    ArrowPrimitive type;
  };
  static constexpr Entry kNames[] = {
      {"int8", ArrowPrimitive::kInt8},         {"int16", ArrowPrimitive::kInt16},
      {"int32", ArrowPrimitive::kInt32},       {"int64", ArrowPrimitive::kInt64},
      {"uint8", ArrowPrimitive::kUInt8},       {"uint16", ArrowPrimitive::kUInt16},
      {"uint32", ArrowPrimitive::kUInt32},     {"uint64", ArrowPrimitive::kUInt64},
      {"halffloat", ArrowPrimitive::kFloat16}, {"float16", ArrowPrimitive::kFloat16},
      {"float", ArrowPrimitive::kFloat32},     {"float32", ArrowPrimitive::kFloat32},
      {"double", ArrowPrimitive::kFloat64},    {"float64", ArrowPrimitive::kFloat64},
      {"bool", ArrowPrimitive::kBool},
  };
  for (const Entry& entry : kNames) {
    if (entry.name == name) return entry.type;
  }
  return std::nullopt;
}

// Parses "string", "large_binary", "list<item: float>",
// "large_list<element: int64 not null>", ... (as pyarrow prints types).
std::optional<FieldType> ParseType(std::string_view text) {
  if (text == "string" || text == "utf8") return FieldType::Utf8();
  if (text == "binary") return FieldType::Binary();
  FieldType type;
  type.large = true;
  if (text == "large_string" || text == "large_utf8") {
    type.kind = FieldType::Kind::kUtf8;
    return type;
  }
  if (text == "large_binary") {
    type.kind = FieldType::Kind::kBinary;
    return type;
  }
  type.kind = FieldType::Kind::kList;
  if (text.starts_with("large_list<")) {
    text.remove_prefix(11);
  } else if (text.starts_with("list<")) {
    type.large = false;
    text.remove_prefix(5);
  } else {
    return std::nullopt;
  }
  if (!text.ends_with(">")) return std::nullopt;
  text.remove_suffix(1);
  // "<child name>: <type>[ not null]"
  size_t colon = text.find(": ");
  if (colon == std::string_view::npos) return std::nullopt;
  std::string_view element = text.substr(colon + 2);
  if (element.ends_with(" not null")) element.remove_suffix(9);
  std::optional<ArrowPrimitive> primitive = PrimitiveFromName(element);
  if (!primitive) return std::nullopt;
  type.element = *primitive;
  return type;
}

// ---- decoding helpers ----

const json::Value& Member(const json::Value& object, std::string_view key, const std::string& where) {
  const json::Value* value = object.find(key);
  if (value == nullptr) Corrupt(where + " has no \"" + std::string(key) + "\"");
  return *value;
}

const std::string& StringMember(const json::Value& object, std::string_view key,
                                const std::string& where) {
  const json::Value& value = Member(object, key, where);
  if (!value.is_string()) Corrupt(where + "." + std::string(key) + " is not a string");
  return value.as_string();
}

Schema DecodeTorchcachex(const json::Value& root, const json::Value& ours) {
  if (!ours.is_object()) Corrupt("\"torchcachex\" is not an object");
  const json::Value& version = Member(ours, "format_version", "torchcachex");
  // No cast to an integer type here: a huge version would overflow it (UB).
  if (!version.is_number() || !(version.as_number() >= 1) ||
      version.as_number() != std::floor(version.as_number())) {
    Corrupt("torchcachex.format_version is not a positive integer");
  }
  if (version.as_number() > kFormatVersion) {
    Corrupt("format_version " + json::Serialize(version) +
            " is newer than this torchcachex understands (" + std::to_string(kFormatVersion) +
            "); upgrade torchcachex");
  }
  Schema schema;
  const json::Value& leaves = Member(ours, "leaves", "torchcachex");
  if (!leaves.is_array()) Corrupt("torchcachex.leaves is not an array");
  std::set<std::string> names;
  for (size_t i = 0; i < leaves.as_array().size(); ++i) {
    const json::Value& entry = leaves.as_array()[i];
    const std::string where = "torchcachex.leaves[" + std::to_string(i) + "]";
    if (!entry.is_object()) Corrupt(where + " is not an object");
    LeafSpec leaf;
    leaf.name = StringMember(entry, "name", where);
    const std::string& kind = StringMember(entry, "kind", where);
    if (kind == "tensor") {
      leaf.kind = LeafKind::kTensor;
      const std::string& dtype_name = StringMember(entry, "dtype", where);
      std::optional<DType> dtype = DTypeFromTorchName(dtype_name);
      if (!dtype) Corrupt(where + " has unknown dtype \"" + dtype_name + "\"");
      leaf.dtype = *dtype;
    } else if (kind == "blob") {
      leaf.kind = LeafKind::kBlob;
    } else {
      Corrupt(where + " has unknown kind \"" + kind + "\"");
    }
    if (!names.insert(leaf.name).second) Corrupt("leaf \"" + leaf.name + "\" appears twice");
    schema.leaves.push_back(std::move(leaf));
  }
  if (schema.leaves.empty()) Corrupt("torchcachex.leaves is empty");
  if (const json::Value* structure = ours.find("structure"); structure && !structure->is_null()) {
    schema.structure = json::Serialize(*structure);
  }
  if (const json::Value* output_structure = root.find("output_structure")) {
    if (!output_structure->is_string()) Corrupt("output_structure is not a string");
    schema.output_structure = output_structure->as_string();
  }
  return schema;
}

// A file written by the original implementation: infer the leaves from the
// fields and metadata as SchemaFromSegment does for a segment.
Schema DecodeOriginal(const json::Value& root) {
  const json::Value& fields_value = Member(root, "fields", "the file");
  if (!fields_value.is_array()) Corrupt("\"fields\" is not an array");
  std::vector<Field> fields;
  for (size_t i = 0; i < fields_value.as_array().size(); ++i) {
    const json::Value& entry = fields_value.as_array()[i];
    const std::string where = "fields[" + std::to_string(i) + "]";
    if (!entry.is_object()) Corrupt(where + " is not an object");
    Field field;
    field.name = StringMember(entry, "name", where);
    const std::string& type_name = StringMember(entry, "type", where);
    std::optional<FieldType> type = ParseType(type_name);
    if (!type) Corrupt(where + " has unsupported type \"" + type_name + "\"");
    field.type = *type;
    if (const json::Value* field_metadata = entry.find("metadata")) {
      if (!field_metadata->is_object()) Corrupt(where + ".metadata is not an object");
      for (const auto& [key, value] : field_metadata->as_object()) {
        field.metadata.emplace_back(key, value.is_string() ? value.as_string() : json::Serialize(value));
      }
    }
    fields.push_back(std::move(field));
  }
  KeyValueMetadata metadata;
  const json::Value* metadata_value = root.find("metadata");
  if (metadata_value != nullptr && !metadata_value->is_null()) {
    if (!metadata_value->is_object()) Corrupt("\"metadata\" is not an object");
    for (const auto& [key, value] : metadata_value->as_object()) {
      // Our own embedded schema never belongs here; ignoring it also keeps
      // SchemaFromSegment from recursing back into this decoder.
      if (key == kSchemaMetadataKey) continue;
      metadata.emplace_back(key, value.is_string() ? value.as_string() : json::Serialize(value));
    }
  }
  // The top-level output_structure, where present, is authoritative.
  if (const json::Value* output_structure = root.find("output_structure")) {
    if (!output_structure->is_string()) Corrupt("output_structure is not a string");
    std::erase_if(metadata, [](const auto& kv) { return kv.first == "output_structure"; });
    metadata.emplace_back("output_structure", output_structure->as_string());
  }
  try {
    return SchemaFromSegment(fields, metadata);
  } catch (const CorruptFileError& e) {
    Corrupt(e.what());
  }
}

}  // namespace

std::string EncodeSchemaJson(const Schema& schema) {
  json::Array fields;
  for (const Field& field : SegmentFields(schema)) {
    json::Object entry;
    entry.emplace_back("name", field.name);
    entry.emplace_back("type", TypeToString(field.type));
    fields.emplace_back(std::move(entry));
  }
  json::Array leaves;
  for (const LeafSpec& leaf : schema.leaves) {
    json::Object entry;
    entry.emplace_back("name", leaf.name);
    entry.emplace_back("kind", KindName(leaf.kind));
    if (leaf.kind == LeafKind::kTensor) entry.emplace_back("dtype", std::string(TorchName(leaf.dtype)));
    leaves.emplace_back(std::move(entry));
  }
  json::Value structure;
  if (!schema.structure.empty()) {
    try {
      structure = json::Parse(schema.structure);
    } catch (const json::JsonError& e) {
      throw InvalidArgumentError(std::string("the schema's structure is not valid JSON: ") + e.what());
    }
  }
  json::Object ours;
  ours.reserve(3);
  ours.emplace_back("format_version", kFormatVersion);
  ours.emplace_back("leaves", std::move(leaves));
  ours.emplace_back("structure", std::move(structure));

  json::Object root;
  root.reserve(4);
  root.emplace_back("fields", std::move(fields));
  root.emplace_back("metadata", OriginalMetadata(schema));
  root.emplace_back("output_structure", schema.output_structure);
  root.emplace_back("torchcachex", std::move(ours));
  try {
    return json::Serialize(json::Value(std::move(root)), 2) + "\n";
  } catch (const json::JsonError& e) {
    // Leaf names come from the front end; only invalid UTF-8 can fail here.
    throw InvalidArgumentError(std::string("cannot encode the schema: ") + e.what());
  }
}

Schema DecodeSchemaJson(std::string_view text) {
  json::Value root;
  try {
    root = json::Parse(text);
  } catch (const json::JsonError& e) {
    Corrupt(e.what());
  }
  if (!root.is_object()) Corrupt("the top level is not an object");
  if (const json::Value* ours = root.find("torchcachex")) return DecodeTorchcachex(root, *ours);
  return DecodeOriginal(root);
}

}  // namespace torchcachex::format
