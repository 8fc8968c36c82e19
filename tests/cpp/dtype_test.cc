// DType tables: names, sizes and Arrow storage types.

#include "torchcachex/dtype.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace torchcachex {
namespace {

struct Expected {
  DType dtype;
  const char* name;
  size_t size;
  ArrowPrimitive storage;
  size_t per_element;
};

constexpr Expected kAll[] = {
    {DType::kFloat16, "torch.float16", 2, ArrowPrimitive::kFloat16, 1},
    {DType::kBFloat16, "torch.bfloat16", 2, ArrowPrimitive::kUInt16, 1},
    {DType::kFloat32, "torch.float32", 4, ArrowPrimitive::kFloat32, 1},
    {DType::kFloat64, "torch.float64", 8, ArrowPrimitive::kFloat64, 1},
    {DType::kFloat8E4M3FN, "torch.float8_e4m3fn", 1, ArrowPrimitive::kUInt8, 1},
    {DType::kFloat8E5M2, "torch.float8_e5m2", 1, ArrowPrimitive::kUInt8, 1},
    {DType::kFloat8E4M3FNUZ, "torch.float8_e4m3fnuz", 1, ArrowPrimitive::kUInt8, 1},
    {DType::kFloat8E5M2FNUZ, "torch.float8_e5m2fnuz", 1, ArrowPrimitive::kUInt8, 1},
    {DType::kFloat8E8M0FNU, "torch.float8_e8m0fnu", 1, ArrowPrimitive::kUInt8, 1},
    {DType::kInt8, "torch.int8", 1, ArrowPrimitive::kInt8, 1},
    {DType::kInt16, "torch.int16", 2, ArrowPrimitive::kInt16, 1},
    {DType::kInt32, "torch.int32", 4, ArrowPrimitive::kInt32, 1},
    {DType::kInt64, "torch.int64", 8, ArrowPrimitive::kInt64, 1},
    {DType::kUInt8, "torch.uint8", 1, ArrowPrimitive::kUInt8, 1},
    {DType::kUInt16, "torch.uint16", 2, ArrowPrimitive::kUInt16, 1},
    {DType::kUInt32, "torch.uint32", 4, ArrowPrimitive::kUInt32, 1},
    {DType::kUInt64, "torch.uint64", 8, ArrowPrimitive::kUInt64, 1},
    {DType::kBool, "torch.bool", 1, ArrowPrimitive::kUInt8, 1},
    {DType::kComplex32, "torch.complex32", 4, ArrowPrimitive::kFloat16, 2},
    {DType::kComplex64, "torch.complex64", 8, ArrowPrimitive::kFloat32, 2},
    {DType::kComplex128, "torch.complex128", 16, ArrowPrimitive::kFloat64, 2},
};

TEST(DTypeTest, EveryDTypeHasConsistentProperties) {
  std::set<std::string_view> names;
  for (const Expected& e : kAll) {
    SCOPED_TRACE(e.name);
    EXPECT_EQ(TorchName(e.dtype), e.name);
    EXPECT_EQ(ElementSize(e.dtype), e.size);
    EXPECT_EQ(StorageType(e.dtype), e.storage);
    EXPECT_EQ(StorageElementsPerElement(e.dtype), e.per_element);
    // The storage holds exactly the element's bytes.
    EXPECT_EQ(StorageElementsPerElement(e.dtype) * PrimitiveByteWidth(StorageType(e.dtype)),
              ElementSize(e.dtype));
    EXPECT_EQ(DTypeFromTorchName(e.name), e.dtype);
    EXPECT_TRUE(names.insert(TorchName(e.dtype)).second);
  }
  EXPECT_EQ(std::size(kAll), static_cast<size_t>(DType::kComplex128) + 1);
}

TEST(DTypeTest, Aliases) {
  EXPECT_EQ(DTypeFromTorchName("torch.half"), DType::kFloat16);
  EXPECT_EQ(DTypeFromTorchName("torch.float"), DType::kFloat32);
  EXPECT_EQ(DTypeFromTorchName("torch.double"), DType::kFloat64);
  EXPECT_EQ(DTypeFromTorchName("torch.short"), DType::kInt16);
  EXPECT_EQ(DTypeFromTorchName("torch.int"), DType::kInt32);
  EXPECT_EQ(DTypeFromTorchName("torch.long"), DType::kInt64);
  EXPECT_EQ(DTypeFromTorchName("torch.chalf"), DType::kComplex32);
  EXPECT_EQ(DTypeFromTorchName("torch.cfloat"), DType::kComplex64);
  EXPECT_EQ(DTypeFromTorchName("torch.cdouble"), DType::kComplex128);
  // Aliases are accepted but never produced.
  EXPECT_EQ(TorchName(DType::kFloat32), "torch.float32");
}

TEST(DTypeTest, UnknownNames) {
  for (const char* name : {"", "float32", "torch.", "torch.float128", "torch.qint8", "Torch.float32",
                           "torch.float32 ", "torch.float4_e2m1fn_x2"}) {
    EXPECT_FALSE(DTypeFromTorchName(name).has_value()) << name;
  }
}

TEST(DTypeTest, NaturalDTypes) {
  EXPECT_EQ(NaturalDType(ArrowPrimitive::kFloat16), DType::kFloat16);
  EXPECT_EQ(NaturalDType(ArrowPrimitive::kFloat32), DType::kFloat32);
  EXPECT_EQ(NaturalDType(ArrowPrimitive::kFloat64), DType::kFloat64);
  EXPECT_EQ(NaturalDType(ArrowPrimitive::kInt8), DType::kInt8);
  EXPECT_EQ(NaturalDType(ArrowPrimitive::kInt16), DType::kInt16);
  EXPECT_EQ(NaturalDType(ArrowPrimitive::kInt32), DType::kInt32);
  EXPECT_EQ(NaturalDType(ArrowPrimitive::kInt64), DType::kInt64);
  EXPECT_EQ(NaturalDType(ArrowPrimitive::kUInt8), DType::kUInt8);
  EXPECT_EQ(NaturalDType(ArrowPrimitive::kUInt16), DType::kUInt16);
  EXPECT_EQ(NaturalDType(ArrowPrimitive::kUInt32), DType::kUInt32);
  EXPECT_EQ(NaturalDType(ArrowPrimitive::kUInt64), DType::kUInt64);
  EXPECT_EQ(NaturalDType(ArrowPrimitive::kBool), DType::kBool);
  // Natural dtypes of non-bool primitives are stored as themselves.
  for (ArrowPrimitive p : {ArrowPrimitive::kInt8, ArrowPrimitive::kUInt64, ArrowPrimitive::kFloat16,
                           ArrowPrimitive::kFloat64}) {
    EXPECT_EQ(StorageType(NaturalDType(p)), p);
  }
}

TEST(DTypeTest, PrimitiveWidths) {
  EXPECT_EQ(PrimitiveByteWidth(ArrowPrimitive::kInt8), 1u);
  EXPECT_EQ(PrimitiveByteWidth(ArrowPrimitive::kUInt8), 1u);
  EXPECT_EQ(PrimitiveByteWidth(ArrowPrimitive::kInt16), 2u);
  EXPECT_EQ(PrimitiveByteWidth(ArrowPrimitive::kUInt16), 2u);
  EXPECT_EQ(PrimitiveByteWidth(ArrowPrimitive::kFloat16), 2u);
  EXPECT_EQ(PrimitiveByteWidth(ArrowPrimitive::kInt32), 4u);
  EXPECT_EQ(PrimitiveByteWidth(ArrowPrimitive::kUInt32), 4u);
  EXPECT_EQ(PrimitiveByteWidth(ArrowPrimitive::kFloat32), 4u);
  EXPECT_EQ(PrimitiveByteWidth(ArrowPrimitive::kInt64), 8u);
  EXPECT_EQ(PrimitiveByteWidth(ArrowPrimitive::kUInt64), 8u);
  EXPECT_EQ(PrimitiveByteWidth(ArrowPrimitive::kFloat64), 8u);
  EXPECT_EQ(PrimitiveByteWidth(ArrowPrimitive::kBool), 0u);
}

}  // namespace
}  // namespace torchcachex
