// DType tables: element sizes, torch names and Arrow storage types.
//
// Invariant: for every DType d,
//   ElementSize(d) == StorageElementsPerElement(d) * PrimitiveByteWidth(StorageType(d))
// (StorageType never returns kBool, so the width is never 0 here).

#include "torchcachex/dtype.h"

#include <array>

namespace torchcachex {

namespace {

struct DTypeInfo {
  DType dtype;
  std::string_view torch_name;
  ArrowPrimitive storage;
  size_t storage_elements;  // Arrow elements per torch element
};

// Indexed by DType's numeric value; the static_assert below keeps them aligned.
constexpr std::array<DTypeInfo, 21> kDTypes = {{
    {DType::kFloat16, "torch.float16", ArrowPrimitive::kFloat16, 1},
    {DType::kBFloat16, "torch.bfloat16", ArrowPrimitive::kUInt16, 1},
    {DType::kFloat32, "torch.float32", ArrowPrimitive::kFloat32, 1},
    {DType::kFloat64, "torch.float64", ArrowPrimitive::kFloat64, 1},
    {DType::kFloat8E4M3FN, "torch.float8_e4m3fn", ArrowPrimitive::kUInt8, 1},
    {DType::kFloat8E5M2, "torch.float8_e5m2", ArrowPrimitive::kUInt8, 1},
    {DType::kFloat8E4M3FNUZ, "torch.float8_e4m3fnuz", ArrowPrimitive::kUInt8, 1},
    {DType::kFloat8E5M2FNUZ, "torch.float8_e5m2fnuz", ArrowPrimitive::kUInt8, 1},
    {DType::kFloat8E8M0FNU, "torch.float8_e8m0fnu", ArrowPrimitive::kUInt8, 1},
    {DType::kInt8, "torch.int8", ArrowPrimitive::kInt8, 1},
    {DType::kInt16, "torch.int16", ArrowPrimitive::kInt16, 1},
    {DType::kInt32, "torch.int32", ArrowPrimitive::kInt32, 1},
    {DType::kInt64, "torch.int64", ArrowPrimitive::kInt64, 1},
    {DType::kUInt8, "torch.uint8", ArrowPrimitive::kUInt8, 1},
    {DType::kUInt16, "torch.uint16", ArrowPrimitive::kUInt16, 1},
    {DType::kUInt32, "torch.uint32", ArrowPrimitive::kUInt32, 1},
    {DType::kUInt64, "torch.uint64", ArrowPrimitive::kUInt64, 1},
    {DType::kBool, "torch.bool", ArrowPrimitive::kUInt8, 1},
    {DType::kComplex32, "torch.complex32", ArrowPrimitive::kFloat16, 2},
    {DType::kComplex64, "torch.complex64", ArrowPrimitive::kFloat32, 2},
    {DType::kComplex128, "torch.complex128", ArrowPrimitive::kFloat64, 2},
}};

constexpr bool TableIsIndexedByDType() {
  for (size_t i = 0; i < kDTypes.size(); ++i) {
    if (static_cast<size_t>(kDTypes[i].dtype) != i) return false;
  }
  return static_cast<size_t>(DType::kComplex128) + 1 == kDTypes.size();
}
static_assert(TableIsIndexedByDType(), "kDTypes must list every DType in enum order");

// torch's alternative spellings of some dtypes.
struct Alias {
  std::string_view name;
  DType dtype;
};
constexpr std::array<Alias, 9> kAliases = {{
    {"torch.half", DType::kFloat16},
    {"torch.float", DType::kFloat32},
    {"torch.double", DType::kFloat64},
    {"torch.short", DType::kInt16},
    {"torch.int", DType::kInt32},
    {"torch.long", DType::kInt64},
    {"torch.chalf", DType::kComplex32},
    {"torch.cfloat", DType::kComplex64},
    {"torch.cdouble", DType::kComplex128},
}};

const DTypeInfo& Info(DType dtype) {
  size_t i = static_cast<size_t>(dtype);
  // An out-of-range value can only come from a cast of garbage; fall back to
  // float32 rather than read out of bounds.
  return i < kDTypes.size() ? kDTypes[i] : kDTypes[static_cast<size_t>(DType::kFloat32)];
}

}  // namespace

size_t ElementSize(DType dtype) {
  const DTypeInfo& info = Info(dtype);
  return info.storage_elements * PrimitiveByteWidth(info.storage);
}

std::string_view TorchName(DType dtype) { return Info(dtype).torch_name; }

std::optional<DType> DTypeFromTorchName(std::string_view name) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.torch_name == name) return info.dtype;
  }
  for (const Alias& alias : kAliases) {
    if (alias.name == name) return alias.dtype;
  }
  return std::nullopt;
}

ArrowPrimitive StorageType(DType dtype) { return Info(dtype).storage; }

size_t StorageElementsPerElement(DType dtype) { return Info(dtype).storage_elements; }

DType NaturalDType(ArrowPrimitive type) {
  switch (type) {
    case ArrowPrimitive::kInt8: return DType::kInt8;
    case ArrowPrimitive::kInt16: return DType::kInt16;
    case ArrowPrimitive::kInt32: return DType::kInt32;
    case ArrowPrimitive::kInt64: return DType::kInt64;
    case ArrowPrimitive::kUInt8: return DType::kUInt8;
    case ArrowPrimitive::kUInt16: return DType::kUInt16;
    case ArrowPrimitive::kUInt32: return DType::kUInt32;
    case ArrowPrimitive::kUInt64: return DType::kUInt64;
    case ArrowPrimitive::kFloat16: return DType::kFloat16;
    case ArrowPrimitive::kFloat32: return DType::kFloat32;
    case ArrowPrimitive::kFloat64: return DType::kFloat64;
    case ArrowPrimitive::kBool: return DType::kBool;
  }
  return DType::kFloat32;
}

size_t PrimitiveByteWidth(ArrowPrimitive type) {
  switch (type) {
    case ArrowPrimitive::kInt8:
    case ArrowPrimitive::kUInt8: return 1;
    case ArrowPrimitive::kInt16:
    case ArrowPrimitive::kUInt16:
    case ArrowPrimitive::kFloat16: return 2;
    case ArrowPrimitive::kInt32:
    case ArrowPrimitive::kUInt32:
    case ArrowPrimitive::kFloat32: return 4;
    case ArrowPrimitive::kInt64:
    case ArrowPrimitive::kUInt64:
    case ArrowPrimitive::kFloat64: return 8;
    case ArrowPrimitive::kBool: return 0;
  }
  return 0;
}

}  // namespace torchcachex
