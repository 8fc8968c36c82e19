// Element types of cached tensors, named after torch dtypes.
//
// The core never includes torch headers: a tensor crosses the boundary as
// (DType, shape, bytes). Each DType has a fixed element size and an Arrow
// storage type of the same width; dtypes Arrow lacks are stored under that
// storage type and named in field metadata (`torch_dtype`) so the round trip
// is bit-exact.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace torchcachex {

enum class DType : uint8_t {
  kFloat16,
  kBFloat16,
  kFloat32,
  kFloat64,
  kFloat8E4M3FN,
  kFloat8E5M2,
  kFloat8E4M3FNUZ,
  kFloat8E5M2FNUZ,
  kFloat8E8M0FNU,
  kInt8,
  kInt16,
  kInt32,
  kInt64,
  kUInt8,
  kUInt16,
  kUInt32,
  kUInt64,
  kBool,
  kComplex32,
  kComplex64,
  kComplex128,
};

// Primitive element types of Arrow list values as stored in segments.
// kBool is Arrow's bit-packed boolean (read-only: we write torch.bool as kUInt8).
enum class ArrowPrimitive : uint8_t {
  kInt8,
  kInt16,
  kInt32,
  kInt64,
  kUInt8,
  kUInt16,
  kUInt32,
  kUInt64,
  kFloat16,
  kFloat32,
  kFloat64,
  kBool,
};

// Bytes per element of `dtype` (complex counts both parts).
size_t ElementSize(DType dtype);

// The torch name, e.g. "torch.float32".
std::string_view TorchName(DType dtype);

// Inverse of TorchName; nullopt for names we do not know.
std::optional<DType> DTypeFromTorchName(std::string_view name);

// The Arrow element type a DType is stored as. Complex dtypes are stored as
// pairs of their real type (so a complex64 row of n elements is 2n floats).
ArrowPrimitive StorageType(DType dtype);

// Number of Arrow elements that hold one element of `dtype` (2 for complex).
size_t StorageElementsPerElement(DType dtype);

// The natural DType for an Arrow element type (used for caches whose metadata
// does not name a torch dtype). kBool maps to kBool.
DType NaturalDType(ArrowPrimitive type);

// Size in bytes of one Arrow element (kBool: 0, it is bit-packed).
size_t PrimitiveByteWidth(ArrowPrimitive type);

}  // namespace torchcachex
