// Writes the seed corpus of the libFuzzer targets with our own writer:
//
//   fuzz_make_corpus <out_dir>
//
// creates <out_dir>/<target>/ for every target in fuzz/ and fills it with
// small, valid inputs (segments encoded by PendingBatch + WriteSegment, the
// code path Store uses to write segment files; schema.json text from
// EncodeSchemaJson; JSON documents). The committed corpus in fuzz/corpus/
// was written by this program (scripts/fuzz.sh --make-corpus rewrites it);
// fuzzing grows it from there. Names are stable, so rerunning it only
// rewrites the same files.
//
// Kept small on purpose (a few rows per file): libFuzzer mutates small
// inputs much faster, and every structural feature is reached with 2-5 rows.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "format/ipc_writer.h"
#include "format/schema_json.h"
#include "format/segment_layout.h"
#include "fuzz_util.h"
#include "store/pending_batch.h"
#include "torchcachex/dtype.h"
#include "torchcachex/schema.h"
#include "torchcachex/store.h"

using namespace torchcachex;
namespace fs = std::filesystem;

namespace {

std::string g_out;
int g_files = 0;

void WriteFile(const std::string& target, const std::string& name, std::span<const std::byte> bytes) {
  const fs::path dir = fs::path(g_out) / target;
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  FUZZ_CHECK(out.good(), "writing " + (dir / name).string());
  ++g_files;
}

void WriteText(const std::string& target, const std::string& name, std::string_view text) {
  WriteFile(target, name, std::as_bytes(std::span(text.data(), text.size())));
}

// A tensor cell: its shape and bytes (deterministic pattern).
struct TensorCell {
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};

TensorCell MakeCell(DType dtype, std::vector<int64_t> shape, int seed) {
  TensorCell cell;
  cell.shape = std::move(shape);
  uint64_t n = 1;
  for (int64_t d : cell.shape) n *= static_cast<uint64_t>(d);
  const size_t size = ElementSize(dtype);
  cell.bytes.resize(n * size);
  for (size_t i = 0; i < cell.bytes.size(); ++i) {
    // Bools are 0/1 bytes; everything else an arbitrary but fixed pattern.
    const uint8_t v = dtype == DType::kBool ? static_cast<uint8_t>((i + seed) % 2)
                                            : static_cast<uint8_t>(seed * 31 + i * 7 + 1);
    cell.bytes[i] = static_cast<std::byte>(v);
  }
  return cell;
}

// Rows of one segment, built up row by row, then appended to a PendingBatch.
struct Rows {
  const Schema& schema;
  std::vector<std::string> keys;
  // [leaf][row]
  std::vector<std::vector<TensorCell>> cells;
  std::vector<std::vector<std::string>> blobs;

  explicit Rows(const Schema& s) : schema(s), cells(s.leaves.size()), blobs(s.leaves.size()) {}

  // Adds a row whose tensor leaf l has shape shape_of(l) and whose blobs
  // hold a small JSON document.
  template <typename ShapeOf>
  void Add(std::string key, int seed, ShapeOf shape_of) {
    keys.push_back(std::move(key));
    for (size_t l = 0; l < schema.leaves.size(); ++l) {
      const LeafSpec& spec = schema.leaves[l];
      if (spec.kind == LeafKind::kTensor) {
        cells[l].push_back(MakeCell(spec.dtype, shape_of(l), seed));
        blobs[l].emplace_back();
      } else {
        cells[l].emplace_back();
        blobs[l].push_back("{\"i\": " + std::to_string(seed) + ", \"tag\": \"r\"}");
      }
    }
  }

  // Ragged LeafRows pointing into this object.
  std::vector<LeafRows> Leaves() const {
    std::vector<LeafRows> leaves(schema.leaves.size());
    for (size_t l = 0; l < schema.leaves.size(); ++l) {
      for (size_t r = 0; r < keys.size(); ++r) {
        if (schema.leaves[l].kind == LeafKind::kTensor) {
          leaves[l].rows.push_back(cells[l][r].bytes);
          leaves[l].shapes.push_back(cells[l][r].shape);
        } else {
          leaves[l].rows.push_back(std::as_bytes(std::span(blobs[l][r].data(), blobs[l][r].size())));
          leaves[l].shapes.emplace_back();
        }
      }
    }
    return leaves;
  }
};

enum class Flavor {
  kOurs,            // exactly what Store writes
  kForeign,         // original-layout metadata only (no torchcachex.schema), as another tool writes
  kNoKeyChecksum,   // footer without the key-column checksum
};

// The segment file the store would write for `rows`.
std::vector<std::byte> EncodeRows(const Rows& rows, Flavor flavor = Flavor::kOurs) {
  PendingBatch batch(rows.schema);
  const std::vector<LeafRows> leaves = rows.Leaves();
  std::vector<std::string_view> keys(rows.keys.begin(), rows.keys.end());
  for (size_t i = 0; i < keys.size(); ++i) batch.Append(keys[i], leaves, i);
  format::SegmentTable table = batch.Table();
  if (flavor == Flavor::kForeign) {
    std::erase_if(table.metadata, [](const auto& kv) { return kv.first == format::kSchemaMetadataKey; });
  }
  if (flavor != Flavor::kOurs) table.key_column = -1;
  return format::EncodeSegment(table);
}

Schema MakeSchema(std::string output_structure, std::vector<LeafSpec> leaves, std::string structure = "") {
  Schema schema;
  schema.output_structure = std::move(output_structure);
  schema.leaves = std::move(leaves);
  schema.structure = std::move(structure);
  return schema;
}

// Schemas covering every leaf kind, every storage width and the original
// layout's output structures.
std::vector<std::pair<std::string, Schema>> Schemas() {
  return {
      {"tensor_f32", MakeSchema("tensor", {{"", LeafKind::kTensor, DType::kFloat32}})},
      {"store_dict", fuzz::StoreFuzzSchema()},
      {"tuple_i64_f16",
       MakeSchema("tuple", {{"item0", LeafKind::kTensor, DType::kInt64}, {"item1", LeafKind::kTensor, DType::kFloat16}},
                  R"({"type": "tuple", "items": [{"leaf": "item0"}, {"leaf": "item1"}]})")},
      {"blob", MakeSchema("blob", {{"", LeafKind::kBlob, DType::kUInt8}})},
      {"dict_dtypes",
       MakeSchema("dict", {{"bf", LeafKind::kTensor, DType::kBFloat16},
                           {"c", LeafKind::kTensor, DType::kComplex64},
                           {"f8", LeafKind::kTensor, DType::kFloat8E4M3FN},
                           {"u64", LeafKind::kTensor, DType::kUInt64},
                           {"i8", LeafKind::kTensor, DType::kInt8},
                           {"d", LeafKind::kTensor, DType::kFloat64}})},
      {"list_mixed",
       MakeSchema("list", {{"0", LeafKind::kTensor, DType::kInt32}, {"1", LeafKind::kBlob, DType::kUInt8}},
                  R"({"type": "list", "items": [{"leaf": "0"}, {"leaf": "1"}], "n": 2})")},
  };
}

void WriteSegments() {
  for (const auto& [name, schema] : Schemas()) {
    // Dense: every row the same shape.
    Rows dense(schema);
    for (int i = 0; i < 3; ++i) dense.Add("sample_" + std::to_string(i), i, [](size_t) {
      return std::vector<int64_t>{2};
    });
    // Ragged: rank 0, rank 2, a zero-size dimension; unicode and empty keys;
    // a key written twice (the later row wins).
    Rows ragged(schema);
    ragged.Add("", 1, [](size_t) { return std::vector<int64_t>{}; });
    ragged.Add("\xc3\xa9t\xc3\xa9_\xe2\x82\xac", 2, [](size_t l) { return std::vector<int64_t>{2, int64_t(l % 2 + 1)}; });
    ragged.Add("7", 3, [](size_t) { return std::vector<int64_t>{0, 3}; });
    ragged.Add("7", 4, [](size_t) { return std::vector<int64_t>{3}; });
    const std::vector<std::byte> dense_file = EncodeRows(dense);
    const std::vector<std::byte> ragged_file = EncodeRows(ragged);
    WriteFile("fuzz_segment_reader", name + "_dense.arrow", dense_file);
    if (name != "dict_dtypes") {  // the largest: its dense file alone covers every dtype
      WriteFile("fuzz_segment_reader", name + "_ragged.arrow", ragged_file);
      WriteFile("fuzz_segment_reader", name + "_foreign.arrow", EncodeRows(dense, Flavor::kForeign));
    }

    // The store target opens a cache whose schema.json is StoreFuzzSchema():
    // its files, plus a few others (recovered without schema.json).
    if (name == "store_dict") {
      WriteFile("fuzz_store_open", name + "_dense.arrow", dense_file);
      WriteFile("fuzz_store_open", name + "_ragged.arrow", ragged_file);
      WriteFile("fuzz_store_open", name + "_foreign.arrow", EncodeRows(dense, Flavor::kForeign));
      WriteFile("fuzz_store_open", name + "_nokeysum.arrow", EncodeRows(dense, Flavor::kNoKeyChecksum));
      Rows one(schema);
      one.Add("absent", 9, [](size_t) { return std::vector<int64_t>{1}; });
      WriteFile("fuzz_store_open", name + "_one.arrow", EncodeRows(one));
    } else if (name == "tensor_f32" || name == "blob") {
      WriteFile("fuzz_store_open", name + "_dense.arrow", dense_file);
    }

    // schema.json as the store writes it, and as the original implementation
    // wrote it (no "torchcachex" member: leaves inferred from fields).
    const std::string text = format::EncodeSchemaJson(schema);
    WriteText("fuzz_schema_json", name + ".json", text);
    WriteText("fuzz_json", name + ".json", text);
  }
}

void WriteSchemaJsons() {
  // The original implementation's schema.json files (pyarrow type names).
  WriteText("fuzz_schema_json", "original_tensor.json", R"({
  "fields": [{"name": "key", "type": "string"},
             {"name": "data", "type": "list<item: float>"},
             {"name": "shape", "type": "list<item: int64>"}],
  "metadata": {"torch_dtype": "torch.float32"},
  "output_structure": "tensor"
})");
  WriteText("fuzz_schema_json", "original_dict.json", R"({
  "fields": [{"name": "key", "type": "string"},
             {"name": "emb_data", "type": "list<item: halffloat>"},
             {"name": "emb_shape", "type": "list<item: int64>"},
             {"name": "meta_blob", "type": "binary"}],
  "metadata": {"tensor_keys": "[\"emb\"]"},
  "output_structure": "dict"
})");
  WriteText("fuzz_schema_json", "original_tuple.json", R"({
  "fields": [{"name": "key", "type": "string"},
             {"name": "item0_data", "type": "list<item: int64>"},
             {"name": "item0_shape", "type": "list<item: int64>"},
             {"name": "item1_data", "type": "large_list<item: double>"},
             {"name": "item1_shape", "type": "list<item: int64>"},
             {"name": "item2_data", "type": "list<item: uint8>", "metadata": {"torch_dtype": "torch.bool"}},
             {"name": "item2_shape", "type": "list<item: int64>"}],
  "metadata": {},
  "output_structure": "tuple"
})");
  WriteText("fuzz_schema_json", "original_blob.json",
            R"({"fields": [{"name": "key", "type": "large_string"}, {"name": "blob", "type": "large_binary"}],)"
            R"( "metadata": {}, "output_structure": "blob"})");
}

void WriteJsons() {
  const std::pair<const char*, const char*> docs[] = {
      {"scalars.json", R"([null, true, false, 0, -0, 1, -1, 1.5, -2.5e-3, 1E+300, 123456789012345678901234567890])"},
      {"strings.json", R"(["", "a\"b\\c\/d", "\b\f\n\r\t", "\u0000\u001f\u00e9\u20ac", "\ud83d\ude00", "\u0041", "caf\u00e9"])"},
      {"utf8.json", "[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\", \"\xed\x9f\xbf\"]"},
      {"nested.json", R"({"a": {"b": [1, [2, [3, {"c": []}]]], "d": {}}, "e": [{}, [], ""]})"},
      {"object_dup.json", R"({"k": 1, "k": 2, "": null})"},
      {"deep.json", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"},
      {"whitespace.json", " \t\r\n {\n  \"x\" : [ 1 , 2 ]\n}\n "},
      {"numbers.json", R"([0.1, 1e-400, 2.2250738585072014e-308, 9007199254740993, -1.7976931348623157e308, 5e-324])"},
  };
  for (const auto& [name, text] : docs) WriteText("fuzz_json", name, text);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <out_dir>\n", argv[0]);
    return 2;
  }
  g_out = argv[1];
  WriteSegments();
  WriteSchemaJsons();
  WriteJsons();
  std::printf("wrote %d seed files under %s\n", g_files, g_out.c_str());
  return 0;
}
