// libFuzzer target: schema.json text.
//
// DecodeSchemaJson on the input; on success EncodeSchemaJson must succeed and
// decode back to the same schema (leaves, output_structure, structure), and
// encoding is a fixed point (encode(decode(encode(s))) == encode(s)).
// Decoding may only throw CorruptFileError.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "format/schema_json.h"
#include "fuzz_util.h"
#include "torchcachex/errors.h"

using namespace torchcachex;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  Schema schema;
  try {
    schema = format::DecodeSchemaJson(text);
  } catch (const CorruptFileError&) {
    return 0;
  }
  FUZZ_CHECK(!schema.leaves.empty(), "a decoded schema has leaves");
  const std::string encoded = format::EncodeSchemaJson(schema);  // must not throw
  const Schema reread = format::DecodeSchemaJson(encoded);       // must not throw
  FUZZ_CHECK(fuzz::SameSchema(schema, reread), "schema.json round trip: " + encoded);
  FUZZ_CHECK(format::EncodeSchemaJson(reread) == encoded, "encoding is a fixed point");
  return 0;
}
