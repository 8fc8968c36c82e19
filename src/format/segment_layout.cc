// Schema <-> segment columns, in the original torchcachex layout.
//
// The schema-level metadata of a segment is by definition the "metadata"
// object of the cache's schema.json plus "output_structure" and the full
// schema.json text (kSchemaMetadataKey): SegmentMetadata derives it from
// EncodeSchemaJson so the original keys are computed in one place.

#include "format/segment_layout.h"

#include <set>
#include <string>

#include "format/schema_json.h"
#include "torchcachex/errors.h"
#include "util/json.h"

namespace torchcachex::format {

namespace {

constexpr const char* kTorchDTypeKey = "torch_dtype";
constexpr const char* kOutputStructureKey = "output_structure";

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Index of the first field named `name`, or -1.
int FindField(const std::vector<Field>& fields, std::string_view name) {
  for (size_t i = 0; i < fields.size(); ++i) {
    if (fields[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

int FindKeyColumn(const std::vector<Field>& fields) {
  int i = FindField(fields, kKeyColumn);
  return i >= 0 && fields[i].type.kind == FieldType::Kind::kUtf8 ? i : -1;
}

[[noreturn]] void NotASegment(const std::string& why) {
  throw CorruptFileError("not a torchcachex segment: " + why);
}

// The dtype of an inferred tensor leaf whose data column is `data`.
DType InferDType(const Field& data, bool unnamed, const KeyValueMetadata& metadata) {
  const std::string* name = FindMetadata(data.metadata, kTorchDTypeKey);
  if (name == nullptr && unnamed) name = FindMetadata(metadata, kTorchDTypeKey);
  if (name == nullptr) return NaturalDType(data.type.element);
  std::optional<DType> dtype = DTypeFromTorchName(*name);
  if (!dtype) NotASegment("column '" + data.name + "' has unknown torch_dtype '" + *name + "'");
  return *dtype;
}

bool IsTupleItemName(const std::string& name) {
  if (name.size() <= 4 || name.compare(0, 4, "item") != 0) return false;
  for (size_t i = 4; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
  }
  return true;
}

// Leaves and output_structure of a table written in the original layout.
Schema InferFromLayout(const std::vector<Field>& fields, const KeyValueMetadata& metadata) {
  if (FindKeyColumn(fields) < 0) NotASegment("no utf8 'key' column");
  Schema schema;
  std::set<std::string> names;
  auto add_leaf = [&](LeafSpec leaf) {
    if (!names.insert(leaf.name).second) {
      NotASegment("leaf '" + leaf.name + "' has more than one data column");
    }
    schema.leaves.push_back(std::move(leaf));
  };
  auto add_tensor = [&](const Field& data, const std::string& leaf_name) {
    LeafSpec leaf;
    leaf.name = leaf_name;
    leaf.kind = LeafKind::kTensor;
    if (FindField(fields, leaf.ShapeColumn()) < 0) {
      NotASegment("column '" + data.name + "' has no '" + leaf.ShapeColumn() + "' column");
    }
    leaf.dtype = InferDType(data, leaf_name.empty(), metadata);
    add_leaf(std::move(leaf));
  };
  auto add_blob = [&](const std::string& leaf_name) {
    LeafSpec leaf;
    leaf.name = leaf_name;
    leaf.kind = LeafKind::kBlob;
    add_leaf(std::move(leaf));
  };
  // Columns that are neither key, data, shape nor blob are ignored.
  for (const Field& field : fields) {
    const FieldType::Kind kind = field.type.kind;
    if (field.name == kKeyColumn) continue;
    if (field.name == "data") {
      if (kind == FieldType::Kind::kList) {
        add_tensor(field, "");
      } else if (kind == FieldType::Kind::kBinary) {
        add_blob("");
      } else {
        NotASegment("column 'data' is " + TypeToString(field.type) + ", not a list or binary");
      }
    } else if (field.name == "blob") {
      if (kind != FieldType::Kind::kBinary) {
        NotASegment("column 'blob' is " + TypeToString(field.type) + ", not binary");
      }
      add_blob("");
    } else if (EndsWith(field.name, "_data") && field.name.size() > 5) {
      if (kind != FieldType::Kind::kList) {
        NotASegment("column '" + field.name + "' is " + TypeToString(field.type) + ", not a list");
      }
      add_tensor(field, field.name.substr(0, field.name.size() - 5));
    } else if (EndsWith(field.name, "_blob") && field.name.size() > 5) {
      if (kind != FieldType::Kind::kBinary) {
        NotASegment("column '" + field.name + "' is " + TypeToString(field.type) + ", not binary");
      }
      add_blob(field.name.substr(0, field.name.size() - 5));
    }
  }
  if (schema.leaves.empty()) NotASegment("no data or blob columns");

  const std::string* recorded = FindMetadata(metadata, kOutputStructureKey);
  if (recorded != nullptr && !recorded->empty()) {
    schema.output_structure = *recorded;
  } else if (schema.leaves.size() == 1 && schema.leaves[0].name.empty()) {
    schema.output_structure = schema.leaves[0].kind == LeafKind::kTensor ? "tensor" : "blob";
  } else {
    bool all_items = true;
    for (const LeafSpec& leaf : schema.leaves) all_items = all_items && IsTupleItemName(leaf.name);
    schema.output_structure = all_items ? "tuple" : "dict";
  }
  return schema;
}

bool IsList(const FieldType& type) { return type.kind == FieldType::Kind::kList; }

// Checks that field `name` exists and satisfies `ok`; `wanted` describes the
// expected type in the error.
std::optional<std::string> CheckColumn(const std::vector<Field>& fields, const std::string& name,
                                       bool (*ok)(const FieldType&, DType), DType dtype,
                                       const std::string& wanted, int* index) {
  *index = FindField(fields, name);
  if (*index < 0) return "missing column '" + name + "'";
  const FieldType& type = fields[*index].type;
  if (!ok(type, dtype)) {
    return "column '" + name + "' is " + TypeToString(type) + " but the schema needs " + wanted;
  }
  return std::nullopt;
}

bool TensorDataOk(const FieldType& type, DType dtype) {
  if (!IsList(type)) return false;
  if (type.element == StorageType(dtype)) return true;
  // torch.bool may also be read from Arrow's bit-packed booleans.
  return dtype == DType::kBool && type.element == ArrowPrimitive::kBool;
}

bool ShapeOk(const FieldType& type, DType) {
  return IsList(type) && type.element == ArrowPrimitive::kInt64;
}

bool BinaryOk(const FieldType& type, DType) { return type.kind == FieldType::Kind::kBinary; }

bool Utf8Ok(const FieldType& type, DType) { return type.kind == FieldType::Kind::kUtf8; }

}  // namespace

std::vector<Field> SegmentFields(const Schema& schema) {
  std::vector<Field> fields;
  fields.push_back(Field{kKeyColumn, FieldType::Utf8(), {}});
  for (const LeafSpec& leaf : schema.leaves) {
    if (leaf.kind == LeafKind::kTensor) {
      fields.push_back(Field{leaf.DataColumn(), FieldType::List(StorageType(leaf.dtype)),
                             {{kTorchDTypeKey, std::string(TorchName(leaf.dtype))}}});
      fields.push_back(Field{leaf.ShapeColumn(), FieldType::List(ArrowPrimitive::kInt64), {}});
    } else {
      fields.push_back(Field{leaf.BlobColumn(), FieldType::Binary(), {}});
    }
  }
  return fields;
}

KeyValueMetadata SegmentMetadata(const Schema& schema) {
  std::string schema_json = EncodeSchemaJson(schema);
  KeyValueMetadata metadata;
  if (!schema.output_structure.empty()) {
    metadata.emplace_back(kOutputStructureKey, schema.output_structure);
  }
  // EncodeSchemaJson's "metadata" object holds exactly the original keys.
  json::Value parsed = json::Parse(schema_json);
  if (const json::Value* original = parsed.find("metadata")) {
    for (const auto& [key, value] : original->as_object()) {
      metadata.emplace_back(key, value.as_string());
    }
  }
  metadata.emplace_back(kSchemaMetadataKey, std::move(schema_json));
  return metadata;
}

Schema SchemaFromSegment(const std::vector<Field>& fields, const KeyValueMetadata& metadata) {
  if (FindKeyColumn(fields) < 0) NotASegment("no utf8 'key' column");
  if (const std::string* text = FindMetadata(metadata, kSchemaMetadataKey)) {
    try {
      return DecodeSchemaJson(*text);
    } catch (const CorruptFileError&) {
      // Unreadable embedded schema: fall back to the column layout below.
    }
  }
  return InferFromLayout(fields, metadata);
}

std::optional<std::string> MatchColumns(const Schema& schema, const std::vector<Field>& fields,
                                        int* key_column, std::vector<LeafColumns>* leaf_columns) {
  std::vector<LeafColumns> columns(schema.leaves.size());
  int key = -1;
  if (auto error = CheckColumn(fields, kKeyColumn, Utf8Ok, DType::kUInt8, "string", &key)) {
    return error;
  }
  for (size_t i = 0; i < schema.leaves.size(); ++i) {
    const LeafSpec& leaf = schema.leaves[i];
    LeafColumns& found = columns[i];
    if (leaf.kind == LeafKind::kTensor) {
      std::string wanted = TypeToString(FieldType::List(StorageType(leaf.dtype)));
      if (auto error = CheckColumn(fields, leaf.DataColumn(), TensorDataOk, leaf.dtype, wanted,
                                   &found.data)) {
        return error;
      }
      std::string shape_type = TypeToString(FieldType::List(ArrowPrimitive::kInt64));
      if (auto error = CheckColumn(fields, leaf.ShapeColumn(), ShapeOk, leaf.dtype, shape_type,
                                   &found.shape)) {
        return error;
      }
    } else {
      std::string name = leaf.BlobColumn();
      // The original layout stores a single blob output in "data".
      if (leaf.name.empty() && FindField(fields, name) < 0 && FindField(fields, "data") >= 0) {
        name = "data";
      }
      if (auto error = CheckColumn(fields, name, BinaryOk, leaf.dtype,
                                   TypeToString(FieldType::Binary()), &found.blob)) {
        return error;
      }
    }
  }
  *key_column = key;
  *leaf_columns = std::move(columns);
  return std::nullopt;
}

}  // namespace torchcachex::format
