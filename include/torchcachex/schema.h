// The logical schema of a cache: the named leaves of one sample's output.
//
// A module output (tensor, dict, tuple, nesting...) is flattened by the front
// end into named leaves. Each leaf becomes columns of the segment table,
// following the original torchcachex layout:
//   tensor leaf "name": `name_data: list<T>`, `name_shape: list<int64>`
//   blob leaf "name":   `name_blob: binary`
//   the unnamed leaf "" (single-tensor output): `data`, `shape`; (single blob): `blob`
#pragma once

#include <string>
#include <vector>

#include "torchcachex/dtype.h"

namespace torchcachex {

enum class LeafKind : uint8_t {
  kTensor,  // per-sample tensor: bytes + shape
  kBlob,    // per-sample opaque bytes (JSON text or a pickle, decided by the front end)
};

struct LeafSpec {
  std::string name;
  LeafKind kind = LeafKind::kTensor;
  DType dtype = DType::kFloat32;  // meaningful for tensor leaves only

  std::string DataColumn() const { return name.empty() ? "data" : name + "_data"; }
  std::string ShapeColumn() const { return name.empty() ? "shape" : name + "_shape"; }
  std::string BlobColumn() const { return name.empty() ? "blob" : name + "_blob"; }

  bool operator==(const LeafSpec& other) const {
    return name == other.name && kind == other.kind &&
           (kind == LeafKind::kBlob || dtype == other.dtype);
  }
};

struct Schema {
  std::vector<LeafSpec> leaves;
  // "tensor", "dict", "tuple", "list" or "blob", as in the original layout.
  std::string output_structure;
  // JSON text owned by the front end that rebuilds nested outputs from the
  // leaves; empty for caches written by the original implementation.
  std::string structure;

  // Empty when `other` stores the same leaves (names, kinds, dtypes) in the
  // same order; otherwise a sentence describing the first difference.
  std::string DescribeDifference(const Schema& other) const;
};

}  // namespace torchcachex
