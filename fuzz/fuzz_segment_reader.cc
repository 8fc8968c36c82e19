// libFuzzer target: a segment file as the store reads it.
//
// ParseSegment on the input; on success the parsed views are checked against
// the invariants ipc_reader.h promises, the schema is recovered the way a
// store without schema.json recovers it (SchemaFromSegment), the columns are
// matched and validated as Segment::Open does (MatchColumns, ValidateBatch),
// and every key, shape and cell is read through batch_view.h. A recovered
// schema that can be written as schema.json must read back unchanged.
//
// Only CorruptFileError (and InvalidArgumentError from EncodeSchemaJson, for
// leaf names that are not UTF-8) may escape the engine; anything else aborts.
#include <cstddef>
#include <cstdint>
#include <span>

#include "format/ipc_reader.h"
#include "format/schema_json.h"
#include "format/segment_layout.h"
#include "fuzz_util.h"
#include "torchcachex/errors.h"

using namespace torchcachex;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> file(reinterpret_cast<const std::byte*>(data), size);
  format::ParsedSegment parsed;
  try {
    parsed = format::ParseSegment(file);
  } catch (const CorruptFileError&) {
    return 0;
  }
  fuzz::CheckParsedSegment(file, parsed);

  Schema schema;
  try {
    schema = format::SchemaFromSegment(parsed.fields, parsed.metadata);
  } catch (const CorruptFileError&) {
    return 0;
  }
  FUZZ_CHECK(!schema.leaves.empty(), "a recovered schema has leaves");

  // Store::RecoverSchemaFrom persists the recovered schema as schema.json.
  std::string text;
  try {
    text = format::EncodeSchemaJson(schema);
  } catch (const InvalidArgumentError&) {
    text.clear();  // e.g. a column name that is not UTF-8: the store warns and goes on
  }
  if (!text.empty()) {
    Schema reread = format::DecodeSchemaJson(text);  // must not throw
    FUZZ_CHECK(fuzz::SameSchema(schema, reread), "recovered schema survives schema.json");
  }

  if (auto batches = fuzz::SegmentBatches(parsed, schema)) fuzz::WalkBatches(*batches, schema);
  return 0;
}
