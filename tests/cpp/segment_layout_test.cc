// Segment layout: the columns and metadata we write, the schema we infer
// from tables in the original torchcachex layout, and column matching.

#include "format/segment_layout.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "format/schema_json.h"
#include "torchcachex/errors.h"
#include "util/json.h"

namespace torchcachex::format {
namespace {

LeafSpec Tensor(std::string name, DType dtype) { return LeafSpec{std::move(name), LeafKind::kTensor, dtype}; }
LeafSpec Blob(std::string name) { return LeafSpec{std::move(name), LeafKind::kBlob, DType::kFloat32}; }

Schema MakeSchema(std::vector<LeafSpec> leaves, std::string output_structure, std::string structure = "") {
  Schema schema;
  schema.leaves = std::move(leaves);
  schema.output_structure = std::move(output_structure);
  schema.structure = std::move(structure);
  return schema;
}

FieldType ListOf(ArrowPrimitive element, bool large = false) {
  FieldType type = FieldType::List(element);
  type.large = large;
  return type;
}

Field F(std::string name, FieldType type, KeyValueMetadata metadata = {}) {
  return Field{std::move(name), type, std::move(metadata)};
}

Field Key() { return F("key", FieldType::Utf8()); }
Field Shape(std::string name) { return F(std::move(name), ListOf(ArrowPrimitive::kInt64)); }

void ExpectSameSchema(const Schema& got, const Schema& want) {
  EXPECT_EQ(want.DescribeDifference(got), "");
  ASSERT_EQ(got.leaves.size(), want.leaves.size());
  for (size_t i = 0; i < got.leaves.size(); ++i) EXPECT_TRUE(got.leaves[i] == want.leaves[i]) << i;
  EXPECT_EQ(got.output_structure, want.output_structure);
  EXPECT_EQ(got.structure, want.structure);
}

std::string CorruptMessage(const std::vector<Field>& fields, const KeyValueMetadata& metadata = {}) {
  try {
    SchemaFromSegment(fields, metadata);
  } catch (const CorruptFileError& e) {
    return e.what();
  }
  return "(no error)";
}

std::optional<std::string> Match(const Schema& schema, const std::vector<Field>& fields) {
  int key = -1;
  std::vector<LeafColumns> columns;
  return MatchColumns(schema, fields, &key, &columns);
}

// ---- writing ----

TEST(SegmentLayoutTest, SingleTensorFields) {
  Schema schema = MakeSchema({Tensor("", DType::kFloat32)}, "tensor");
  std::vector<Field> fields = SegmentFields(schema);
  ASSERT_EQ(fields.size(), 3u);
  EXPECT_EQ(fields[0].name, "key");
  EXPECT_EQ(fields[0].type, FieldType::Utf8());
  EXPECT_TRUE(fields[0].metadata.empty());
  EXPECT_EQ(fields[1].name, "data");
  EXPECT_EQ(TypeToString(fields[1].type), "list<item: float>");
  ASSERT_NE(FindMetadata(fields[1].metadata, "torch_dtype"), nullptr);
  EXPECT_EQ(*FindMetadata(fields[1].metadata, "torch_dtype"), "torch.float32");
  EXPECT_EQ(fields[2].name, "shape");
  EXPECT_EQ(TypeToString(fields[2].type), "list<item: int64>");

  KeyValueMetadata metadata = SegmentMetadata(schema);
  ASSERT_NE(FindMetadata(metadata, "output_structure"), nullptr);
  EXPECT_EQ(*FindMetadata(metadata, "output_structure"), "tensor");
  ASSERT_NE(FindMetadata(metadata, "torch_dtype"), nullptr);
  EXPECT_EQ(*FindMetadata(metadata, "torch_dtype"), "torch.float32");
  EXPECT_EQ(FindMetadata(metadata, "tensor_keys"), nullptr);
  ASSERT_NE(FindMetadata(metadata, kSchemaMetadataKey), nullptr);
  EXPECT_EQ(*FindMetadata(metadata, kSchemaMetadataKey), EncodeSchemaJson(schema));
}

TEST(SegmentLayoutTest, DictFieldsAndMetadata) {
  Schema schema = MakeSchema({Tensor("visual", DType::kBFloat16), Blob("meta"),
                              Tensor("semantic", DType::kComplex64)},
                             "dict");
  std::vector<Field> fields = SegmentFields(schema);
  std::vector<std::string> names;
  std::vector<std::string> types;
  for (const Field& f : fields) {
    names.push_back(f.name);
    types.push_back(TypeToString(f.type));
  }
  EXPECT_EQ(names, (std::vector<std::string>{"key", "visual_data", "visual_shape", "meta_blob",
                                             "semantic_data", "semantic_shape"}));
  EXPECT_EQ(types, (std::vector<std::string>{"string", "list<item: uint16>", "list<item: int64>",
                                             "binary", "list<item: float>", "list<item: int64>"}));
  EXPECT_EQ(*FindMetadata(fields[1].metadata, "torch_dtype"), "torch.bfloat16");
  EXPECT_EQ(*FindMetadata(fields[4].metadata, "torch_dtype"), "torch.complex64");
  EXPECT_TRUE(fields[3].metadata.empty());

  KeyValueMetadata metadata = SegmentMetadata(schema);
  EXPECT_EQ(*FindMetadata(metadata, "output_structure"), "dict");
  EXPECT_EQ(FindMetadata(metadata, "torch_dtype"), nullptr);
  ASSERT_NE(FindMetadata(metadata, "tensor_keys"), nullptr);
  json::Value tensor_keys = json::Parse(*FindMetadata(metadata, "tensor_keys"));
  ASSERT_EQ(tensor_keys.as_array().size(), 2u);
  EXPECT_EQ(tensor_keys.as_array()[0].as_string(), "visual");
  EXPECT_EQ(tensor_keys.as_array()[1].as_string(), "semantic");
}

TEST(SegmentLayoutTest, WrittenSegmentsDescribeTheirSchema) {
  const Schema schemas[] = {
      MakeSchema({Tensor("", DType::kFloat8E4M3FN)}, "tensor"),
      MakeSchema({Blob("")}, "blob"),
      MakeSchema({Tensor("item0", DType::kInt64), Blob("item1"), Tensor("item2", DType::kBool)}, "tuple"),
      MakeSchema({Tensor("a.b", DType::kFloat16), Tensor("a.c", DType::kComplex128)}, "dict",
                 R"({"kind":"dict","keys":{"a":{"kind":"dict","keys":["b","c"]}}})"),
  };
  for (const Schema& schema : schemas) {
    SCOPED_TRACE(schema.output_structure);
    std::vector<Field> fields = SegmentFields(schema);
    ExpectSameSchema(SchemaFromSegment(fields, SegmentMetadata(schema)), schema);
    int key = -1;
    std::vector<LeafColumns> columns;
    EXPECT_EQ(MatchColumns(schema, fields, &key, &columns), std::nullopt);
  }
}

TEST(SegmentLayoutTest, LeafNamesThatLookLikeColumnSuffixes) {
  Schema schema = MakeSchema({Tensor("a_data", DType::kInt16), Blob("x_shape"), Tensor("blob", DType::kUInt8)},
                             "dict");
  std::vector<Field> fields = SegmentFields(schema);
  // Inferred from the columns alone, the leaves come back unchanged.
  ExpectSameSchema(SchemaFromSegment(fields, {}), schema);
  EXPECT_EQ(Match(schema, fields), std::nullopt);
}

TEST(SegmentLayoutTest, UnknownOutputStructureIsNotRecorded) {
  Schema schema = MakeSchema({Tensor("", DType::kInt32)}, "");
  KeyValueMetadata metadata = SegmentMetadata(schema);
  EXPECT_EQ(FindMetadata(metadata, "output_structure"), nullptr);
  // An empty recorded value is treated as absent by inference.
  std::vector<Field> fields = SegmentFields(schema);
  EXPECT_EQ(SchemaFromSegment(fields, {{"output_structure", ""}}).output_structure, "tensor");
}

// ---- inference from the original layout (no kSchemaMetadataKey) ----

TEST(SegmentLayoutTest, InfersSingleTensor) {
  std::vector<Field> fields = {Key(), F("data", ListOf(ArrowPrimitive::kUInt16)), Shape("shape")};
  // Schema-level torch_dtype names the unnamed leaf's dtype.
  Schema schema = SchemaFromSegment(fields, {{"torch_dtype", "torch.bfloat16"}});
  ExpectSameSchema(schema, MakeSchema({Tensor("", DType::kBFloat16)}, "tensor"));
  // Without metadata the element type decides.
  fields[1].type = ListOf(ArrowPrimitive::kFloat64);
  ExpectSameSchema(SchemaFromSegment(fields, {}), MakeSchema({Tensor("", DType::kFloat64)}, "tensor"));
  // Field metadata wins over schema metadata.
  fields[1].metadata = {{"torch_dtype", "torch.float64"}};
  ExpectSameSchema(SchemaFromSegment(fields, {{"torch_dtype", "torch.float32"}}),
                   MakeSchema({Tensor("", DType::kFloat64)}, "tensor"));
}

TEST(SegmentLayoutTest, InfersDictWithBlobsAndFieldDTypes) {
  std::vector<Field> fields = {
      Key(),
      F("visual_data", ListOf(ArrowPrimitive::kUInt16), {{"torch_dtype", "torch.bfloat16"}}),
      Shape("visual_shape"),
      F("meta_blob", FieldType::Binary()),
      F("ids_data", ListOf(ArrowPrimitive::kInt32)),
      Shape("ids_shape"),
      F("extra_column", FieldType::Utf8()),  // not ours: ignored
  };
  Schema schema = SchemaFromSegment(fields, {{"output_structure", "dict"},
                                             {"torch_dtype", "torch.float32"},  // not for named leaves
                                             {"tensor_keys", R"(["visual", "ids"])"}});
  ExpectSameSchema(schema, MakeSchema({Tensor("visual", DType::kBFloat16), Blob("meta"),
                                       Tensor("ids", DType::kInt32)},
                                      "dict"));
  // Without output_structure metadata, names that are not item<i> mean a dict.
  EXPECT_EQ(SchemaFromSegment(fields, {}).output_structure, "dict");
}

TEST(SegmentLayoutTest, InfersTupleFromItemNames) {
  std::vector<Field> fields = {Key(), F("item0_data", ListOf(ArrowPrimitive::kFloat32)), Shape("item0_shape"),
                               F("item1_blob", FieldType::Binary()), F("item10_data", ListOf(ArrowPrimitive::kBool)),
                               Shape("item10_shape")};
  ExpectSameSchema(SchemaFromSegment(fields, {}),
                   MakeSchema({Tensor("item0", DType::kFloat32), Blob("item1"), Tensor("item10", DType::kBool)},
                              "tuple"));
  // Recorded output_structure wins (a list is stored like a tuple).
  EXPECT_EQ(SchemaFromSegment(fields, {{"output_structure", "list"}}).output_structure, "list");
  // "item" alone or "itemx" is not a tuple item.
  fields.push_back(F("itemx_blob", FieldType::Binary()));
  EXPECT_EQ(SchemaFromSegment(fields, {}).output_structure, "dict");
}

TEST(SegmentLayoutTest, InfersSingleBlob) {
  ExpectSameSchema(SchemaFromSegment({Key(), F("blob", FieldType::Binary())}, {}), MakeSchema({Blob("")}, "blob"));
  ExpectSameSchema(SchemaFromSegment({F("data", FieldType::Binary()), Key()}, {}), MakeSchema({Blob("")}, "blob"));
}

TEST(SegmentLayoutTest, InfersLargeVariants) {
  FieldType large_key = FieldType::Utf8();
  large_key.large = true;
  std::vector<Field> fields = {F("key", large_key), F("data", ListOf(ArrowPrimitive::kInt8, true)),
                               F("shape", ListOf(ArrowPrimitive::kInt64, true))};
  ExpectSameSchema(SchemaFromSegment(fields, {}), MakeSchema({Tensor("", DType::kInt8)}, "tensor"));
}

TEST(SegmentLayoutTest, RejectsTablesThatAreNotCaches) {
  EXPECT_NE(CorruptMessage({F("data", ListOf(ArrowPrimitive::kFloat32)), Shape("shape")})
                .find("not a torchcachex segment"),
            std::string::npos);
  EXPECT_NE(CorruptMessage({F("key", FieldType::Binary()), F("blob", FieldType::Binary())})
                .find("not a torchcachex segment"),
            std::string::npos);
  EXPECT_NE(CorruptMessage({Key(), F("x_data", ListOf(ArrowPrimitive::kFloat32))}).find("x_shape"),
            std::string::npos);
  EXPECT_NE(CorruptMessage({Key(), F("data", ListOf(ArrowPrimitive::kFloat32))}).find("'shape'"),
            std::string::npos);
  EXPECT_NE(CorruptMessage({Key()}).find("not a torchcachex segment"), std::string::npos);
  EXPECT_NE(CorruptMessage({Key(), F("x_data", FieldType::Utf8()), Shape("x_shape")}).find("x_data"),
            std::string::npos);
  EXPECT_NE(CorruptMessage({Key(), F("x_blob", ListOf(ArrowPrimitive::kUInt8))}).find("x_blob"),
            std::string::npos);
  EXPECT_NE(CorruptMessage({Key(), F("data", ListOf(ArrowPrimitive::kFloat32)), Shape("shape")},
                           {{"torch_dtype", "torch.float4"}})
                .find("torch.float4"),
            std::string::npos);
  // The same leaf twice (tensor and blob columns).
  EXPECT_NE(CorruptMessage({Key(), F("x_data", ListOf(ArrowPrimitive::kFloat32)), Shape("x_shape"),
                            F("x_blob", FieldType::Binary())}),
            "(no error)");
}

TEST(SegmentLayoutTest, UnreadableEmbeddedSchemaFallsBackToLayout) {
  std::vector<Field> fields = {Key(), F("data", ListOf(ArrowPrimitive::kFloat32)), Shape("shape")};
  ExpectSameSchema(SchemaFromSegment(fields, {{kSchemaMetadataKey, "{not json"}}),
                   MakeSchema({Tensor("", DType::kFloat32)}, "tensor"));
  // A readable embedded schema is authoritative (it carries the structure).
  Schema nested = MakeSchema({Tensor("", DType::kFloat32)}, "tensor", "[1,2]");
  ExpectSameSchema(SchemaFromSegment(fields, {{kSchemaMetadataKey, EncodeSchemaJson(nested)}}), nested);
  // ...but never makes a table without a key column a cache.
  EXPECT_THROW(SchemaFromSegment({fields[1], fields[2]}, {{kSchemaMetadataKey, EncodeSchemaJson(nested)}}),
               CorruptFileError);
}

// ---- matching ----

TEST(SegmentLayoutTest, MatchFindsColumnsInAnyOrder) {
  Schema schema = MakeSchema({Tensor("visual", DType::kFloat32), Blob("meta")}, "dict");
  std::vector<Field> fields = {F("meta_blob", FieldType::Binary()), Shape("visual_shape"), F("other", FieldType::Utf8()),
                               F("visual_data", ListOf(ArrowPrimitive::kFloat32)), Key()};
  int key = -1;
  std::vector<LeafColumns> columns;
  ASSERT_EQ(MatchColumns(schema, fields, &key, &columns), std::nullopt);
  EXPECT_EQ(key, 4);
  ASSERT_EQ(columns.size(), 2u);
  EXPECT_EQ(columns[0].data, 3);
  EXPECT_EQ(columns[0].shape, 1);
  EXPECT_EQ(columns[0].blob, -1);
  EXPECT_EQ(columns[1].data, -1);
  EXPECT_EQ(columns[1].shape, -1);
  EXPECT_EQ(columns[1].blob, 0);
}

TEST(SegmentLayoutTest, MatchDescribesTypeMismatches) {
  Schema schema = MakeSchema({Tensor("visual", DType::kFloat32), Tensor("x", DType::kInt64)}, "dict");
  std::vector<Field> fields = SegmentFields(schema);
  fields[1].type = ListOf(ArrowPrimitive::kFloat64);
  EXPECT_EQ(Match(schema, fields), "column 'visual_data' is list<item: double> but the schema needs list<item: float>");
  fields = SegmentFields(schema);
  fields.erase(fields.begin() + 4);  // x_shape
  EXPECT_EQ(Match(schema, fields), "missing column 'x_shape'");
  fields = SegmentFields(schema);
  fields[2].type = ListOf(ArrowPrimitive::kInt32);
  EXPECT_EQ(Match(schema, fields), "column 'visual_shape' is list<item: int32> but the schema needs list<item: int64>");
  fields = SegmentFields(schema);
  fields[0].type = FieldType::Binary();
  EXPECT_EQ(Match(schema, fields), "column 'key' is binary but the schema needs string");
  fields.erase(fields.begin());
  EXPECT_EQ(Match(schema, fields), "missing column 'key'");
  fields = SegmentFields(schema);
  fields[1].type = FieldType::Binary();
  EXPECT_EQ(Match(schema, fields), "column 'visual_data' is binary but the schema needs list<item: float>");

  Schema blobs = MakeSchema({Blob("meta")}, "dict");
  EXPECT_EQ(Match(blobs, {Key(), F("meta_blob", FieldType::Utf8())}),
            "column 'meta_blob' is string but the schema needs binary");
}

TEST(SegmentLayoutTest, MatchAcceptsReadOnlyVariants) {
  // Large offsets everywhere.
  Schema schema = MakeSchema({Tensor("", DType::kBFloat16)}, "tensor");
  FieldType large_key = FieldType::Utf8();
  large_key.large = true;
  FieldType large_binary = FieldType::Binary();
  large_binary.large = true;
  EXPECT_EQ(Match(schema, {F("key", large_key), F("data", ListOf(ArrowPrimitive::kUInt16, true)),
                           F("shape", ListOf(ArrowPrimitive::kInt64, true))}),
            std::nullopt);
  // bfloat16 is stored as uint16, not as float16.
  EXPECT_NE(Match(schema, {Key(), F("data", ListOf(ArrowPrimitive::kFloat16)), Shape("shape")}), std::nullopt);
  // torch.bool: uint8 (what we write) or Arrow's bit-packed bool; nothing else.
  Schema flags = MakeSchema({Tensor("", DType::kBool)}, "tensor");
  EXPECT_EQ(Match(flags, {Key(), F("data", ListOf(ArrowPrimitive::kUInt8)), Shape("shape")}), std::nullopt);
  EXPECT_EQ(Match(flags, {Key(), F("data", ListOf(ArrowPrimitive::kBool)), Shape("shape")}), std::nullopt);
  EXPECT_NE(Match(flags, {Key(), F("data", ListOf(ArrowPrimitive::kInt8)), Shape("shape")}), std::nullopt);
  // Arrow bools are not uint8 data for other dtypes.
  Schema bytes = MakeSchema({Tensor("", DType::kUInt8)}, "tensor");
  EXPECT_NE(Match(bytes, {Key(), F("data", ListOf(ArrowPrimitive::kBool)), Shape("shape")}), std::nullopt);
  // The unnamed blob may live in "blob" or (original layout) "data".
  Schema blob = MakeSchema({Blob("")}, "blob");
  int key = -1;
  std::vector<LeafColumns> columns;
  ASSERT_EQ(MatchColumns(blob, {Key(), F("data", large_binary)}, &key, &columns), std::nullopt);
  EXPECT_EQ(columns[0].blob, 1);
  ASSERT_EQ(MatchColumns(blob, {F("blob", FieldType::Binary()), Key()}, &key, &columns), std::nullopt);
  EXPECT_EQ(columns[0].blob, 0);
  EXPECT_EQ(key, 1);
  EXPECT_EQ(Match(blob, {Key()}), "missing column 'blob'");
}

}  // namespace
}  // namespace torchcachex::format
