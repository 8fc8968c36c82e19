// schema.json: the cache's schema, readable by the original torchcachex.
//
// {
//   "fields": [{"name": "key", "type": "string"}, {"name": "data", "type": "list<item: float>"}, ...],
//   "metadata": {"torch_dtype": "torch.float32"},        // string -> string
//   "output_structure": "tensor",                         // tensor|dict|tuple|list|blob
//   "torchcachex": {"format_version": 1,
//                   "leaves": [{"name": "", "kind": "tensor", "dtype": "torch.float32"}],
//                   "structure": <JSON value owned by the Python front end, or null>}
// }
// Files written by the original implementation lack "torchcachex"; their
// leaves are inferred from "fields" and "metadata" (as SchemaFromSegment does).
#pragma once

#include <string>
#include <string_view>

#include "torchcachex/schema.h"

namespace torchcachex::format {

// Serializes `schema` (pretty-printed, trailing newline).
std::string EncodeSchemaJson(const Schema& schema);

// Parses schema.json text. Throws CorruptFileError with the reason if the
// text is not valid JSON or does not describe a cache schema.
Schema DecodeSchemaJson(std::string_view text);

}  // namespace torchcachex::format
