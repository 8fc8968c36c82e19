// schema.json: round trips of our own files, decoding files written by the
// original torchcachex, rejection of corrupt files; and Schema comparison.

#include "format/schema_json.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

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

void ExpectSameSchema(const Schema& got, const Schema& want) {
  ASSERT_EQ(got.leaves.size(), want.leaves.size());
  for (size_t i = 0; i < got.leaves.size(); ++i) {
    EXPECT_EQ(got.leaves[i].name, want.leaves[i].name) << i;
    EXPECT_EQ(got.leaves[i].kind, want.leaves[i].kind) << i;
    if (want.leaves[i].kind == LeafKind::kTensor) {
      EXPECT_EQ(got.leaves[i].dtype, want.leaves[i].dtype) << i;
    }
  }
  EXPECT_EQ(got.output_structure, want.output_structure);
  EXPECT_EQ(got.structure, want.structure);
}

std::string DecodeError(std::string_view text) {
  try {
    DecodeSchemaJson(text);
  } catch (const CorruptFileError& e) {
    return e.what();
  }
  return "(no error)";
}

// ---- our files ----

TEST(SchemaJsonTest, RoundTrips) {
  const Schema schemas[] = {
      MakeSchema({Tensor("", DType::kFloat32)}, "tensor"),
      MakeSchema({Blob("")}, "blob"),
      MakeSchema({Tensor("visual", DType::kBFloat16), Blob("meta"), Tensor("semantic", DType::kComplex32)}, "dict"),
      MakeSchema({Tensor("item0", DType::kFloat8E5M2FNUZ), Tensor("item1", DType::kUInt64), Blob("item2")}, "tuple"),
      MakeSchema({Tensor("item0", DType::kBool), Blob("item1")}, "list"),
      // Nested output: path-named leaves plus the front end's structure.
      MakeSchema({Tensor("enc.layers.0", DType::kFloat16), Tensor("enc.layers.1", DType::kFloat16),
                  Blob("info.caption"), Tensor("w\xC3\xA9ird \"name\"", DType::kInt8)},
                 "dict",
                 R"({"type":"dict","items":[["enc",{"type":"dict","items":[["layers",{"type":"list","n":2}]]}],)"
                 R"(["info",{"type":"dict","items":[["caption",null]]}]],"version":1.5,"ok":true})"),
  };
  for (const Schema& schema : schemas) {
    SCOPED_TRACE(schema.output_structure);
    std::string text = EncodeSchemaJson(schema);
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
    EXPECT_NE(text.find("\n  \""), std::string::npos) << "pretty-printed";
    ExpectSameSchema(DecodeSchemaJson(text), schema);
    // Stable: encoding the decoded schema gives the same bytes.
    EXPECT_EQ(EncodeSchemaJson(DecodeSchemaJson(text)), text);
  }
}

TEST(SchemaJsonTest, StructureIsAnyJsonValueStoredCompactly) {
  Schema schema = MakeSchema({Tensor("", DType::kFloat32)}, "tensor", " { \"a\" : [ 1 , 2.5 ] } ");
  Schema decoded = DecodeSchemaJson(EncodeSchemaJson(schema));
  EXPECT_EQ(decoded.structure, R"({"a":[1,2.5]})");
  // Embedded as a JSON value, not as a string.
  json::Value root = json::Parse(EncodeSchemaJson(schema));
  const json::Value* structure = root.find("torchcachex")->find("structure");
  ASSERT_NE(structure, nullptr);
  EXPECT_TRUE(structure->is_object());
  // No structure -> null -> "".
  root = json::Parse(EncodeSchemaJson(MakeSchema({Blob("")}, "blob")));
  EXPECT_TRUE(root.find("torchcachex")->find("structure")->is_null());
  EXPECT_EQ(DecodeSchemaJson(EncodeSchemaJson(MakeSchema({Blob("")}, "blob"))).structure, "");
  // A scalar structure is a value too.
  EXPECT_EQ(DecodeSchemaJson(EncodeSchemaJson(MakeSchema({Blob("")}, "blob", "\"x\""))).structure, "\"x\"");
}

TEST(SchemaJsonTest, InvalidStructureCannotBeEncoded) {
  EXPECT_THROW(EncodeSchemaJson(MakeSchema({Blob("")}, "blob", "{oops")), InvalidArgumentError);
}

TEST(SchemaJsonTest, EncodedFileIsReadableAsTheOriginalLayout) {
  json::Value root = json::Parse(EncodeSchemaJson(MakeSchema({Tensor("", DType::kFloat32)}, "tensor")));
  EXPECT_EQ(json::Serialize(*root.find("fields")),
            R"([{"name":"key","type":"string"},{"name":"data","type":"list<item: float>"},)"
            R"({"name":"shape","type":"list<item: int64>"}])");
  EXPECT_EQ(json::Serialize(*root.find("metadata")), R"({"torch_dtype":"torch.float32"})");
  EXPECT_EQ(root.find("output_structure")->as_string(), "tensor");
  EXPECT_EQ(json::Serialize(*root.find("torchcachex")),
            R"({"format_version":1,"leaves":[{"name":"","kind":"tensor","dtype":"torch.float32"}],"structure":null})");

  root = json::Parse(EncodeSchemaJson(MakeSchema({Tensor("visual", DType::kFloat16), Blob("meta")}, "dict")));
  EXPECT_EQ(json::Serialize(*root.find("fields")),
            R"([{"name":"key","type":"string"},{"name":"visual_data","type":"list<item: halffloat>"},)"
            R"({"name":"visual_shape","type":"list<item: int64>"},{"name":"meta_blob","type":"binary"}])");
  EXPECT_EQ(json::Serialize(*root.find("metadata")), R"({"tensor_keys":"[\"visual\"]"})");

  // Reading it while ignoring our object gives the same leaves when the
  // dtypes are ones the original layout can express.
  json::Object original;
  for (const auto& [key, value] : root.as_object()) {
    if (key != "torchcachex") original.emplace_back(key, value);
  }
  ExpectSameSchema(DecodeSchemaJson(json::Serialize(json::Value(original))),
                   MakeSchema({Tensor("visual", DType::kFloat16), Blob("meta")}, "dict"));
}

// ---- files written by the original implementation ----

TEST(SchemaJsonTest, DecodesOriginalSingleTensor) {
  const char* text = R"({"fields": [{"name": "key", "type": "string"},
                                     {"name": "data", "type": "list<item: float>"},
                                     {"name": "shape", "type": "list<item: int64>"}],
                         "metadata": {"torch_dtype": "torch.float32"},
                         "output_structure": "tensor"})";
  ExpectSameSchema(DecodeSchemaJson(text), MakeSchema({Tensor("", DType::kFloat32)}, "tensor"));
}

TEST(SchemaJsonTest, DecodesOriginalDict) {
  const char* text = R"({"fields": [{"name": "key", "type": "string"},
                                     {"name": "visual_data", "type": "list<item: float>"},
                                     {"name": "visual_shape", "type": "list<item: int64>"},
                                     {"name": "meta_blob", "type": "binary"}],
                         "metadata": {"tensor_keys": "[\"visual\"]"},
                         "output_structure": "dict"})";
  ExpectSameSchema(DecodeSchemaJson(text),
                   MakeSchema({Tensor("visual", DType::kFloat32), Blob("meta")}, "dict"));
}

TEST(SchemaJsonTest, DecodesOriginalVariants) {
  // float16 via metadata, large types, "element" child names, no output_structure.
  ExpectSameSchema(DecodeSchemaJson(R"({"fields": [{"name": "key", "type": "large_string"},
      {"name": "data", "type": "large_list<element: halffloat not null>"},
      {"name": "shape", "type": "list<element: int64>"}], "metadata": {"torch_dtype": "torch.half"}})"),
                   MakeSchema({Tensor("", DType::kFloat16)}, "tensor"));
  // Tuple inferred from item<i> names; dtypes from element types.
  ExpectSameSchema(DecodeSchemaJson(R"({"fields": [{"name": "key", "type": "utf8"},
      {"name": "item0_data", "type": "list<item: double>"}, {"name": "item0_shape", "type": "list<item: int64>"},
      {"name": "item1_data", "type": "list<item: bool>"}, {"name": "item1_shape", "type": "list<item: int64>"},
      {"name": "item2_blob", "type": "large_binary"}]})"),
                   MakeSchema({Tensor("item0", DType::kFloat64), Tensor("item1", DType::kBool), Blob("item2")},
                              "tuple"));
  // Single blob stored in "data".
  ExpectSameSchema(DecodeSchemaJson(R"({"fields": [{"name": "key", "type": "string"},
      {"name": "data", "type": "binary"}], "metadata": {}, "output_structure": "blob"})"),
                   MakeSchema({Blob("")}, "blob"));
  // Metadata output_structure is used when there is no top-level one;
  // the top-level one wins otherwise.
  const char* fields = R"("fields": [{"name": "key", "type": "string"},
      {"name": "item0_data", "type": "list<item: int32>"}, {"name": "item0_shape", "type": "list<item: int64>"}])";
  EXPECT_EQ(DecodeSchemaJson(std::string("{") + fields + R"(, "metadata": {"output_structure": "list"}})")
                .output_structure,
            "list");
  EXPECT_EQ(DecodeSchemaJson(std::string("{") + fields +
                             R"(, "metadata": {"output_structure": "list"}, "output_structure": "dict"})")
                .output_structure,
            "dict");
  // Field-level metadata, if present, names the dtype.
  ExpectSameSchema(DecodeSchemaJson(R"({"fields": [{"name": "key", "type": "string"},
      {"name": "x_data", "type": "list<item: uint16>", "metadata": {"torch_dtype": "torch.bfloat16"}},
      {"name": "x_shape", "type": "list<item: int64>"}], "output_structure": "dict"})"),
                   MakeSchema({Tensor("x", DType::kBFloat16)}, "dict"));
}

// ---- corrupt files ----

TEST(SchemaJsonTest, RejectsCorruptFiles) {
  const std::string good = EncodeSchemaJson(MakeSchema({Tensor("a", DType::kFloat32)}, "dict"));
  const char* leaves_prefix = R"({"output_structure": "dict", "torchcachex": {"format_version": 1, "leaves": )";
  const std::vector<std::string> corrupt = {
      "",
      "   ",
      "{",
      good.substr(0, good.size() / 2),
      good + "x",
      "[]",
      "\"schema\"",
      "null",
      "{}",
      R"({"fields": {}})",
      R"({"fields": [1]})",
      R"({"fields": [{"name": "key"}]})",
      R"({"fields": [{"name": 3, "type": "string"}]})",
      R"({"fields": [{"name": "key", "type": "string"}, {"name": "data", "type": "list<item: string>"}]})",
      R"({"fields": [{"name": "key", "type": "string"}, {"name": "data", "type": "struct<a: int32>"}]})",
      R"({"fields": [{"name": "key", "type": "string"}, {"name": "data", "type": "list<item: float"}]})",
      R"({"fields": [{"name": "data", "type": "list<item: float>"}, {"name": "shape", "type": "list<item: int64>"}]})",
      R"({"fields": [{"name": "key", "type": "string"}, {"name": "x_data", "type": "list<item: float>"}]})",
      R"({"fields": [{"name": "key", "type": "string"}], "metadata": {}})",
      R"({"fields": [{"name": "key", "type": "string"}, {"name": "blob", "type": "binary"}], "metadata": []})",
      R"({"fields": [{"name": "key", "type": "string"}, {"name": "blob", "type": "binary"}], "output_structure": 1})",
      R"({"fields": [{"name": "key", "type": "string"}, {"name": "data", "type": "list<item: float>"},)"
      R"( {"name": "shape", "type": "list<item: int64>"}], "metadata": {"torch_dtype": "torch.float1"}})",
      R"({"torchcachex": []})",
      R"({"torchcachex": {"leaves": []}})",
      R"({"torchcachex": {"format_version": "1", "leaves": [{"name": "", "kind": "blob"}]}})",
      R"({"torchcachex": {"format_version": 0, "leaves": [{"name": "", "kind": "blob"}]}})",
      R"({"torchcachex": {"format_version": 1.5, "leaves": [{"name": "", "kind": "blob"}]}})",
      std::string(leaves_prefix) + "{}}}",
      std::string(leaves_prefix) + "[]}}",
      std::string(leaves_prefix) + "[1]}}",
      std::string(leaves_prefix) + R"([{"kind": "blob"}]}})",
      std::string(leaves_prefix) + R"([{"name": "a", "kind": "vector"}]}})",
      std::string(leaves_prefix) + R"([{"name": "a", "kind": "tensor"}]}})",
      std::string(leaves_prefix) + R"([{"name": "a", "kind": "tensor", "dtype": "torch.float99"}]}})",
      std::string(leaves_prefix) + R"([{"name": "a", "kind": "tensor", "dtype": 5}]}})",
      std::string(leaves_prefix) + R"([{"name": "a", "kind": "blob"}, {"name": "a", "kind": "blob"}]}})",
      R"({"output_structure": 7, "torchcachex": {"format_version": 1, "leaves": [{"name": "", "kind": "blob"}]}})",
      std::string(300, '[') + std::string(300, ']'),
  };
  for (const std::string& text : corrupt) {
    std::string message = DecodeError(text);
    EXPECT_EQ(message.rfind("schema.json: ", 0), 0u) << "input: " << text << "\nmessage: " << message;
  }
}

TEST(SchemaJsonTest, NewerFormatVersionSaysToUpgrade) {
  std::string message = DecodeError(
      R"({"torchcachex": {"format_version": 2, "leaves": [{"name": "", "kind": "blob"}]}})");
  EXPECT_NE(message.find("upgrade"), std::string::npos) << message;
}

TEST(SchemaJsonTest, EveryTruncationIsRejected) {
  const std::string text = EncodeSchemaJson(
      MakeSchema({Tensor("visual", DType::kFloat32), Blob("meta")}, "dict", R"({"k":[1,2]})"));
  for (size_t n = 0; n + 1 < text.size(); ++n) {  // the last byte is the optional newline
    EXPECT_THROW(DecodeSchemaJson(text.substr(0, n)), CorruptFileError) << n;
  }
}

// ---- Schema::DescribeDifference (this = the cache, other = the output) ----

TEST(SchemaDifferenceTest, EqualSchemas) {
  Schema cache = MakeSchema({Tensor("visual", DType::kFloat32), Blob("meta")}, "dict", R"({"a":1})");
  Schema output = MakeSchema({Tensor("visual", DType::kFloat32), Blob("meta")}, "dict");
  EXPECT_EQ(cache.DescribeDifference(output), "");  // structure text is not compared
  // Blob leaves have no dtype.
  output.leaves[1].dtype = DType::kInt8;
  EXPECT_EQ(cache.DescribeDifference(output), "");
  // An unknown output_structure on either side is not a difference.
  output.output_structure = "";
  EXPECT_EQ(cache.DescribeDifference(output), "");
}

TEST(SchemaDifferenceTest, Messages) {
  Schema cache = MakeSchema({Tensor("visual", DType::kFloat32), Tensor("semantic", DType::kFloat32)}, "dict");
  EXPECT_EQ(cache.DescribeDifference(MakeSchema({Tensor("visual", DType::kFloat32), Tensor("semantic", DType::kFloat32),
                                                 Blob("meta")},
                                                "dict")),
            "the output has 3 leaves but the cache stores 2 (visual, semantic)");
  EXPECT_EQ(cache.DescribeDifference(
                MakeSchema({Tensor("visual", DType::kFloat16), Tensor("semantic", DType::kFloat32)}, "dict")),
            "leaf 'visual' is torch.float16 in the output but torch.float32 in the cache");
  EXPECT_EQ(cache.DescribeDifference(MakeSchema({Tensor("visual", DType::kFloat32), Blob("semantic")}, "dict")),
            "leaf 'semantic' is a blob in the output but a tensor in the cache");
  EXPECT_EQ(cache.DescribeDifference(
                MakeSchema({Tensor("visual", DType::kFloat32), Tensor("text", DType::kFloat32)}, "dict")),
            "leaf 1 is named 'text' in the output but 'semantic' in the cache");
  EXPECT_EQ(cache.DescribeDifference(
                MakeSchema({Tensor("item0", DType::kFloat32), Tensor("item1", DType::kFloat32)}, "tuple")),
            "the output is a tuple but the cache stores a dict");
  Schema single = MakeSchema({Tensor("", DType::kBFloat16)}, "tensor");
  EXPECT_EQ(single.DescribeDifference(MakeSchema({Tensor("", DType::kFloat32)}, "tensor")),
            "the unnamed leaf is torch.float32 in the output but torch.bfloat16 in the cache");
  EXPECT_EQ(single.DescribeDifference(MakeSchema({Tensor("a", DType::kFloat32), Tensor("b", DType::kFloat32)}, "")),
            "the output has 2 leaves but the cache stores 1 (<unnamed>)");
  EXPECT_EQ(MakeSchema({Blob("")}, "blob").DescribeDifference(single),
            "the output is a tensor but the cache stores a blob");
}

}  // namespace
}  // namespace torchcachex::format
