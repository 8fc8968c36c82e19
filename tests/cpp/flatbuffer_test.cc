// FlatbufferBuilder output read back through the bounds-checked reader, and
// the reader's behaviour on malformed buffers.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "format/flatbuffer_builder.h"
#include "format/flatbuffer_reader.h"
#include "torchcachex/errors.h"

namespace torchcachex::format {
namespace {

using Offset = FlatbufferBuilder::Offset;

// Root table slots: 0 int8, 1 int16, 2 int32, 3 int64, 4 bool, 5 double,
// 6 string, 7 child table, 8 vector of tables, 9 vector of 16-byte structs,
// 10 (never set).
std::vector<std::byte> BuildSample() {
  FlatbufferBuilder b(16);  // small: forces the buffer to grow
  const Offset child_name = b.CreateString("child");
  b.StartTable();
  b.AddOffset(0, child_name);
  b.AddScalar<int32_t>(1, 77);
  const Offset child = b.EndTable();

  std::vector<Offset> elements;
  for (int i = 0; i < 3; ++i) {
    const Offset name = b.CreateString(std::string(static_cast<size_t>(i), 'x'));
    b.StartTable();
    b.AddScalar<int64_t>(0, 1000 + i);
    b.AddOffset(1, name);
    elements.push_back(b.EndTable());
  }
  const Offset tables = b.CreateOffsetVector(elements);
  const int64_t structs[4] = {1, -2, 3, -4};
  const Offset struct_vector = b.CreateStructVector(structs, 2, 16, 8);
  const Offset text = b.CreateString("hello, flatbuffers");

  b.StartTable();
  b.AddScalar<int8_t>(0, -5);
  b.AddScalar<int16_t>(1, 300);
  b.AddScalar<int32_t>(2, -70000);
  b.AddScalar<int64_t>(3, int64_t{1} << 40);
  b.AddBool(4, true);
  b.AddScalar<double>(5, 2.5);
  b.AddOffset(6, text);
  b.AddOffset(7, child);
  b.AddOffset(8, tables);
  b.AddOffset(9, struct_vector);
  b.AddOffset(10, 0);  // skipped
  const std::span<const std::byte> out = b.Finish(b.EndTable());
  return {out.begin(), out.end()};
}

// Reads every field of the sample into a (wrapping) checksum; throws
// CorruptFileError on a bad buffer.
uint64_t WalkSample(std::span<const std::byte> buf) {
  const fb::Table root = fb::Table::Root(buf, "Root");
  uint64_t sum = 0;
  auto add = [&sum](auto v) { sum += static_cast<uint64_t>(v); };
  add(root.Scalar<int8_t>(0, 0, "a"));
  add(root.Scalar<int16_t>(1, 0, "b"));
  add(root.Scalar<int32_t>(2, 0, "c"));
  add(root.Scalar<int64_t>(3, 0, "d"));
  add(root.Bool(4, false, "e"));
  add(root.Scalar<double>(5, 0, "f") != 0);
  for (char c : root.GetString(6, "g")) add(c);
  const fb::Table child = root.GetTable(7, "h");
  if (child.present()) {
    add(child.GetString(0, "h.name").size());
    add(child.Scalar<int32_t>(1, 0, "h.value"));
  }
  const fb::TableVector tables = root.GetTableVector(8, "i");
  for (uint32_t i = 0; i < tables.size(); ++i) {
    const fb::Table t = tables.at(i);
    add(t.Scalar<int64_t>(0, 0, "i.value"));
    add(t.GetString(1, "i.s").size());
  }
  const fb::StructVector structs = root.GetStructVector(9, 16, "j");
  for (uint32_t i = 0; i < structs.size(); ++i) add(fb::Load<int64_t>(structs.at(i)));
  return sum;
}

TEST(FlatbufferTest, RoundTrip) {
  const std::vector<std::byte> buf = BuildSample();
  EXPECT_EQ(buf.size() % 8, 0u);
  const fb::Table root = fb::Table::Root(buf, "Root");
  EXPECT_EQ(root.Scalar<int8_t>(0, 0, "a"), -5);
  EXPECT_EQ(root.Scalar<int16_t>(1, 0, "b"), 300);
  EXPECT_EQ(root.Scalar<int32_t>(2, 0, "c"), -70000);
  EXPECT_EQ(root.Scalar<int64_t>(3, 0, "d"), int64_t{1} << 40);
  EXPECT_TRUE(root.Bool(4, false, "e"));
  EXPECT_EQ(root.Scalar<double>(5, 0, "f"), 2.5);
  EXPECT_EQ(root.GetString(6, "g"), "hello, flatbuffers");
  EXPECT_FALSE(root.Has(10));
  EXPECT_FALSE(root.Has(11));
  EXPECT_EQ(root.Scalar<int32_t>(10, 42, "unset"), 42);
  EXPECT_EQ(root.GetString(10, "unset", "fallback"), "fallback");
  EXPECT_FALSE(root.GetTable(10, "unset").present());
  EXPECT_EQ(root.GetTableVector(10, "unset").size(), 0u);

  const fb::Table child = root.GetTable(7, "h");
  ASSERT_TRUE(child.present());
  EXPECT_EQ(child.GetString(0, "h.name"), "child");
  EXPECT_EQ(child.Scalar<int32_t>(1, 0, "h.value"), 77);

  const fb::TableVector tables = root.GetTableVector(8, "i");
  ASSERT_EQ(tables.size(), 3u);
  for (uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(tables.at(i).Scalar<int64_t>(0, 0, "i.value"), 1000 + i);
    EXPECT_EQ(tables.at(i).GetString(1, "i.s"), std::string(i, 'x'));
  }

  const fb::StructVector structs = root.GetStructVector(9, 16, "j");
  ASSERT_EQ(structs.size(), 2u);
  // Struct elements are 8-byte aligned within the buffer.
  EXPECT_EQ((structs.at(0) - buf.data()) % 8, 0);
  EXPECT_EQ(fb::Load<int64_t>(structs.at(0)), 1);
  EXPECT_EQ(fb::Load<int64_t>(structs.at(1) + 8), -4);
}

TEST(FlatbufferTest, Int64FieldsAreAligned) {
  FlatbufferBuilder b;
  const Offset s = b.CreateString("abc");  // leaves the buffer unaligned
  b.StartTable();
  b.AddScalar<int8_t>(0, 1);
  b.AddScalar<int64_t>(1, 5);
  b.AddOffset(2, s);
  const std::span<const std::byte> buf = b.Finish(b.EndTable());
  // Locate field 1 through the vtable and check its absolute alignment.
  const uint32_t table = fb::Load<uint32_t>(buf.data());
  const int32_t soffset = fb::Load<int32_t>(buf.data() + table);
  const uint16_t voffset = fb::Load<uint16_t>(buf.data() + table - soffset + 4 + 2);
  EXPECT_EQ((table + voffset) % 8, 0u);
  EXPECT_EQ(fb::Table::Root(buf, "Root").Scalar<int64_t>(1, 0, "x"), 5);
}

std::vector<std::byte> Bytes(std::initializer_list<uint8_t> bytes) {
  std::vector<std::byte> out;
  for (uint8_t b : bytes) out.push_back(std::byte{b});
  return out;
}

TEST(FlatbufferTest, RejectsMalformedBuffers) {
  // Too short for a root offset.
  EXPECT_THROW(fb::Table::Root(Bytes({1, 0}), "R"), CorruptFileError);
  // Root offset past the end.
  EXPECT_THROW(fb::Table::Root(Bytes({200, 0, 0, 0, 0, 0, 0, 0}), "R"), CorruptFileError);
  // vtable before the buffer start (soffset larger than the table position).
  EXPECT_THROW(fb::Table::Root(Bytes({4, 0, 0, 0, 100, 0, 0, 0}), "R"), CorruptFileError);
  // vtable past the end (negative soffset).
  EXPECT_THROW(fb::Table::Root(Bytes({4, 0, 0, 0, 0xF0, 0xFF, 0xFF, 0xFF}), "R"),
               CorruptFileError);
  // vtable: size 4, table size 200 (past the end).
  EXPECT_THROW(fb::Table::Root(Bytes({8, 0, 0, 0, 4, 0, 200, 0, 4, 0, 0, 0}), "R"),
               CorruptFileError);
  // vtable size odd.
  EXPECT_THROW(fb::Table::Root(Bytes({8, 0, 0, 0, 5, 0, 8, 0, 4, 0, 0, 0, 0, 0, 0, 0}), "R"),
               CorruptFileError);

  // A valid table whose field 0 (a uoffset) points at a string with a huge
  // length, then past the end.
  // layout: [0] root=8 | [4] vtable: 6, 8, 4 | [10] pad | ... see below
  std::vector<std::byte> buf = Bytes({
      12, 0, 0, 0,              // root uoffset -> table at 12
      0, 0,                     // padding
      6, 0, 8, 0, 4, 0,         // vtable at 6: size 6, table size 8, slot 0 at +4
      6, 0, 0, 0,               // table at 12: soffset 6 -> vtable at 6
      4, 0, 0, 0,               // slot 0 at 16: uoffset 4 -> string at 20
      0xFF, 0xFF, 0, 0,         // string length 65535
      'a', 'b', 0, 0});
  const fb::Table root = fb::Table::Root(buf, "R");
  EXPECT_THROW(root.GetString(0, "R.s"), CorruptFileError);
  EXPECT_THROW(root.GetTableVector(0, "R.v"), CorruptFileError);
  EXPECT_THROW(root.GetStructVector(0, 16, "R.v"), CorruptFileError);
  buf[20] = std::byte{2};
  buf[21] = std::byte{0};
  EXPECT_EQ(fb::Table::Root(buf, "R").GetString(0, "R.s"), "ab");
  // uoffset pointing past the end.
  buf[16] = std::byte{100};
  EXPECT_THROW(fb::Table::Root(buf, "R").GetString(0, "R.s"), CorruptFileError);
  // A field whose bytes extend past the table's inline size.
  buf[16] = std::byte{4};
  EXPECT_THROW(fb::Table::Root(buf, "R").Scalar<int64_t>(0, 0, "R.x"), CorruptFileError);
  try {
    fb::Table::Root(buf, "R").Scalar<int64_t>(0, 0, "R.x");
  } catch (const CorruptFileError& e) {
    EXPECT_NE(std::string(e.what()).find("R.x"), std::string::npos) << e.what();
  }
}

TEST(FlatbufferTest, MutatedBuffersNeverReadOutOfBounds) {
  const std::vector<std::byte> original = BuildSample();
  const uint64_t expected = WalkSample(original);
  std::mt19937 rng(1234);
  int parsed = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    // An exact-size heap copy, so AddressSanitizer catches any overread.
    const size_t size = iter % 10 == 0 ? rng() % original.size() : original.size();
    auto copy = std::make_unique<std::byte[]>(size);
    std::memcpy(copy.get(), original.data(), size);
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips && size > 0; ++f) {
      copy[rng() % size] = static_cast<std::byte>(rng());
    }
    try {
      WalkSample({copy.get(), size});
      ++parsed;
    } catch (const CorruptFileError&) {
    }
  }
  EXPECT_GT(parsed, 0);
  EXPECT_EQ(WalkSample(original), expected);
}

TEST(FlatbufferTest, RandomBuffers) {
  std::mt19937 rng(99);
  for (int iter = 0; iter < 20000; ++iter) {
    const size_t size = rng() % 64;
    auto buf = std::make_unique<std::byte[]>(size);
    for (size_t i = 0; i < size; ++i) buf[i] = static_cast<std::byte>(rng() % 16);
    try {
      WalkSample({buf.get(), size});
    } catch (const CorruptFileError&) {
    }
  }
}

}  // namespace
}  // namespace torchcachex::format
