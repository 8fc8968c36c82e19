// The mapping between a logical Schema and the columns of a segment table,
// in the original torchcachex layout (see torchcachex/schema.h):
//   key: utf8, then per leaf in order: <leaf>_data: list<T>, <leaf>_shape:
//   list<int64> for tensors, <leaf>_blob: binary for blobs.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "format/arrow_types.h"
#include "torchcachex/schema.h"

namespace torchcachex::format {

inline constexpr const char* kKeyColumn = "key";
// Schema-level metadata key holding our schema.json text in every segment, so
// a cache can be recovered from its segments alone.
inline constexpr const char* kSchemaMetadataKey = "torchcachex.schema";

// The fields of a segment for `schema`: key first, then the leaf columns.
// Tensor data fields carry {"torch_dtype": "torch.<name>"} metadata.
std::vector<Field> SegmentFields(const Schema& schema);

// Schema-level metadata of a segment: original keys (`output_structure`,
// `torch_dtype` for a single tensor, `tensor_keys` for a dict) plus
// kSchemaMetadataKey -> EncodeSchemaJson(schema).
KeyValueMetadata SegmentMetadata(const Schema& schema);

// Rebuilds the schema of a segment from its fields and metadata: from
// kSchemaMetadataKey when present, otherwise inferred from the original
// layout (column names, `torch_dtype` metadata, element types).
// Throws CorruptFileError if the fields are not a cache table.
Schema SchemaFromSegment(const std::vector<Field>& fields, const KeyValueMetadata& metadata);

// Field indices of one leaf's columns in a segment (-1 when not applicable).
struct LeafColumns {
  int data = -1;
  int shape = -1;
  int blob = -1;
};

// Locates the key column and every leaf's columns of `schema` among `fields`
// and checks their types. Returns an error description if a column is
// missing or has the wrong type; the outputs are valid only on success.
std::optional<std::string> MatchColumns(const Schema& schema, const std::vector<Field>& fields,
                                        int* key_column, std::vector<LeafColumns>* leaf_columns);

}  // namespace torchcachex::format
