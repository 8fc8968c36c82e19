// Arrow IPC segment codec: round trips, the exact layout, files written by
// pyarrow, and the reader's behaviour on corrupt and unsupported input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "format/arrow_fbs.h"
#include "format/arrow_types.h"
#include "format/flatbuffer_builder.h"
#include "format/flatbuffer_reader.h"
#include "format/ipc_reader.h"
#include "format/ipc_writer.h"
#include "torchcachex/errors.h"
#include "util/xxh3.h"

namespace torchcachex::format {
namespace {

namespace fbs = arrow_fbs;

// ---------------------------------------------------------------------------
// Owning test columns and readers of parsed views.

struct OwnedColumn {
  Field field;
  std::vector<int32_t> offsets{0};
  std::vector<std::byte> values;
};

struct OwnedTable {
  int64_t num_rows = 0;
  std::vector<OwnedColumn> columns;
  KeyValueMetadata metadata;

  SegmentTable View() const {
    SegmentTable table;
    table.num_rows = num_rows;
    table.metadata = metadata;
    for (const OwnedColumn& c : columns) table.columns.push_back({c.field, c.offsets, c.values});
    return table;
  }
};

OwnedColumn StringColumn(const std::string& name, const std::vector<std::string>& rows,
                         bool binary = false) {
  OwnedColumn c;
  c.field = {name, binary ? FieldType::Binary() : FieldType::Utf8(), {}};
  for (const std::string& s : rows) {
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    c.values.insert(c.values.end(), p, p + s.size());
    c.offsets.push_back(static_cast<int32_t>(c.values.size()));
  }
  return c;
}

template <typename T>
OwnedColumn ListColumn(const std::string& name, ArrowPrimitive element,
                       const std::vector<std::vector<T>>& rows) {
  OwnedColumn c;
  c.field = {name, FieldType::List(element), {}};
  for (const std::vector<T>& row : rows) {
    const auto* p = reinterpret_cast<const std::byte*>(row.data());
    c.values.insert(c.values.end(), p, p + row.size() * sizeof(T));
    c.offsets.push_back(c.offsets.back() + static_cast<int32_t>(row.size()));
  }
  return c;
}

OwnedColumn BoolListColumn(const std::string& name, const std::vector<std::vector<bool>>& rows) {
  OwnedColumn c;
  c.field = {name, FieldType::List(ArrowPrimitive::kBool), {}};
  size_t bit = 0;
  for (const std::vector<bool>& row : rows) {
    for (bool v : row) {
      if (bit % 8 == 0) c.values.push_back(std::byte{0});
      if (v) c.values.back() |= std::byte{static_cast<uint8_t>(1u << (bit % 8))};
      ++bit;
    }
    c.offsets.push_back(static_cast<int32_t>(bit));
  }
  return c;
}

std::string StringAt(const ColumnView& c, int64_t row) {
  const int64_t begin = c.Offset(row), end = c.Offset(row + 1);
  return std::string(reinterpret_cast<const char*>(c.values) + begin,
                     static_cast<size_t>(end - begin));
}

template <typename T>
std::vector<T> ListAt(const ColumnView& c, int64_t row) {
  const int64_t begin = c.Offset(row), end = c.Offset(row + 1);
  std::vector<T> out(static_cast<size_t>(end - begin));
  if (!out.empty()) std::memcpy(out.data(), c.values + begin * sizeof(T), out.size() * sizeof(T));
  return out;
}

std::vector<bool> BoolListAt(const ColumnView& c, int64_t row) {
  std::vector<bool> out;
  for (int64_t i = c.Offset(row); i < c.Offset(row + 1); ++i) {
    out.push_back(((static_cast<uint8_t>(c.values[i >> 3]) >> (i & 7)) & 1) != 0);
  }
  return out;
}

std::span<const std::byte> AsSpan(const std::vector<std::byte>& v) { return {v.data(), v.size()}; }

// Checks the invariants ParseSegment promises, reading every byte a caller
// may read (so that AddressSanitizer sees any overread).
void CheckViewsInsideFile(const ParsedSegment& parsed, std::span<const std::byte> file) {
  const std::byte* begin = file.data();
  const std::byte* end = file.data() + file.size();
  auto inside = [&](const std::byte* p, int64_t n) {
    return n == 0 || (p >= begin && p <= end && n <= end - p);
  };
  int64_t total = 0;
  uint64_t sink = 0;
  for (const RecordBatchView& batch : parsed.batches) {
    ASSERT_EQ(batch.columns.size(), parsed.fields.size());
    total += batch.num_rows;
    for (size_t i = 0; i < batch.columns.size(); ++i) {
      const ColumnView& c = batch.columns[i];
      const FieldType& type = parsed.fields[i].type;
      const int64_t width = c.large_offsets ? 8 : 4;
      ASSERT_EQ(c.large_offsets, type.large);
      if (batch.num_rows > 0) {
        ASSERT_TRUE(inside(c.offsets, (batch.num_rows + 1) * width));
      }
      int64_t prev = c.Offset(0);
      ASSERT_GE(prev, 0);
      for (int64_t r = 1; r <= batch.num_rows; ++r) {
        ASSERT_GE(c.Offset(r), prev);
        prev = c.Offset(r);
      }
      ASSERT_LE(prev, c.values_length);
      int64_t value_bytes = c.values_length;
      if (type.kind == FieldType::Kind::kList) {
        const int bits = fbs::PrimitiveBits(type.element);
        value_bytes = bits == 1 ? (c.values_length + 7) / 8 : c.values_length * (bits / 8);
      }
      ASSERT_TRUE(inside(c.values, value_bytes));
      for (int64_t b = 0; b < value_bytes; ++b) sink += static_cast<uint8_t>(c.values[b]);
      if (c.validity != nullptr) {
        ASSERT_TRUE(inside(c.validity, (batch.num_rows + 7) / 8));
        for (int64_t r = 0; r < batch.num_rows; ++r) sink += c.IsNull(r);
      }
    }
  }
  ASSERT_EQ(total, parsed.num_rows);
  (void)sink;
}

// Parses an exact-size heap copy of `bytes`, so that AddressSanitizer
// catches any read past the end.
ParsedSegment ParseCopy(std::span<const std::byte> bytes) {
  auto copy = std::make_unique<std::byte[]>(bytes.size());
  if (!bytes.empty()) std::memcpy(copy.get(), bytes.data(), bytes.size());
  const std::span<const std::byte> file(copy.get(), bytes.size());
  ParsedSegment parsed = ParseSegment(file);
  CheckViewsInsideFile(parsed, file);
  // Views would dangle once `copy` is freed: callers only look at metadata.
  for (RecordBatchView& batch : parsed.batches) batch.columns.clear();
  return parsed;
}

std::string ErrorOf(std::span<const std::byte> file) {
  try {
    ParseSegment(file);
  } catch (const CorruptFileError& e) {
    return e.what();
  }
  return "";
}

OwnedTable SampleTable() {
  OwnedTable t;
  t.num_rows = 3;
  t.columns.push_back(StringColumn("key", {"alpha", "", "gamma-ray"}));
  t.columns.push_back(
      ListColumn<float>("data", ArrowPrimitive::kFloat32, {{1.5f, -2.0f}, {}, {3.25f}}));
  t.columns.back().field.metadata = {{"torch_dtype", "torch.float32"}};
  t.columns.push_back(ListColumn<int64_t>("shape", ArrowPrimitive::kInt64, {{2}, {0}, {1}}));
  t.columns.push_back(
      StringColumn("extra_blob", {std::string("\x00\x01", 2), "zz", ""}, /*binary=*/true));
  t.metadata = {{"output_structure", "tensor"}, {"torchcachex.schema", "{\"v\": 1}"}};
  return t;
}

// ---------------------------------------------------------------------------
// Type names.

TEST(IpcCodecTest, TypeToStringMatchesPyarrow) {
  EXPECT_EQ(TypeToString(FieldType::Utf8()), "string");
  EXPECT_EQ(TypeToString(FieldType::Binary()), "binary");
  FieldType large_utf8 = FieldType::Utf8();
  large_utf8.large = true;
  EXPECT_EQ(TypeToString(large_utf8), "large_string");
  FieldType large_binary = FieldType::Binary();
  large_binary.large = true;
  EXPECT_EQ(TypeToString(large_binary), "large_binary");
  EXPECT_EQ(TypeToString(FieldType::List(ArrowPrimitive::kFloat32)), "list<item: float>");
  EXPECT_EQ(TypeToString(FieldType::List(ArrowPrimitive::kInt64)), "list<item: int64>");
  EXPECT_EQ(TypeToString(FieldType::List(ArrowPrimitive::kFloat16)), "list<item: halffloat>");
  EXPECT_EQ(TypeToString(FieldType::List(ArrowPrimitive::kFloat64)), "list<item: double>");
  EXPECT_EQ(TypeToString(FieldType::List(ArrowPrimitive::kBool)), "list<item: bool>");
  EXPECT_EQ(TypeToString(FieldType::List(ArrowPrimitive::kUInt8)), "list<item: uint8>");
  EXPECT_EQ(TypeToString(FieldType::List(ArrowPrimitive::kUInt64)), "list<item: uint64>");
  EXPECT_EQ(TypeToString(FieldType::List(ArrowPrimitive::kInt8)), "list<item: int8>");
  FieldType large_list = FieldType::List(ArrowPrimitive::kFloat32);
  large_list.large = true;
  EXPECT_EQ(TypeToString(large_list), "large_list<item: float>");
}

TEST(IpcCodecTest, FindMetadata) {
  const KeyValueMetadata m = {{"a", "1"}, {"b", "2"}};
  ASSERT_NE(FindMetadata(m, "b"), nullptr);
  EXPECT_EQ(*FindMetadata(m, "b"), "2");
  EXPECT_EQ(FindMetadata(m, "c"), nullptr);
}

// ---------------------------------------------------------------------------
// Round trips.

TEST(IpcCodecTest, RoundTripMultiColumnWithMetadata) {
  const OwnedTable t = SampleTable();
  const std::vector<std::byte> file = EncodeSegment(t.View());
  const ParsedSegment p = ParseSegment(AsSpan(file));
  CheckViewsInsideFile(p, AsSpan(file));

  ASSERT_EQ(p.fields.size(), 4u);
  EXPECT_EQ(p.fields[0].name, "key");
  EXPECT_EQ(p.fields[0].type, FieldType::Utf8());
  EXPECT_EQ(p.fields[1].name, "data");
  EXPECT_EQ(p.fields[1].type, FieldType::List(ArrowPrimitive::kFloat32));
  EXPECT_EQ(p.fields[1].metadata, (KeyValueMetadata{{"torch_dtype", "torch.float32"}}));
  EXPECT_TRUE(p.fields[0].metadata.empty());
  EXPECT_EQ(p.fields[2].type, FieldType::List(ArrowPrimitive::kInt64));
  EXPECT_EQ(p.fields[3].type, FieldType::Binary());
  EXPECT_EQ(p.metadata, t.metadata);

  ASSERT_EQ(p.batches.size(), 1u);
  EXPECT_EQ(p.num_rows, 3);
  const RecordBatchView& b = p.batches[0];
  EXPECT_EQ(b.num_rows, 3);
  EXPECT_EQ(StringAt(b.columns[0], 0), "alpha");
  EXPECT_EQ(StringAt(b.columns[0], 1), "");
  EXPECT_EQ(StringAt(b.columns[0], 2), "gamma-ray");
  EXPECT_EQ(ListAt<float>(b.columns[1], 0), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_TRUE(ListAt<float>(b.columns[1], 1).empty());
  EXPECT_EQ(ListAt<float>(b.columns[1], 2), (std::vector<float>{3.25f}));
  EXPECT_EQ(ListAt<int64_t>(b.columns[2], 0), (std::vector<int64_t>{2}));
  EXPECT_EQ(StringAt(b.columns[3], 0), std::string("\x00\x01", 2));
  EXPECT_EQ(StringAt(b.columns[3], 1), "zz");
  for (const ColumnView& c : b.columns) {
    EXPECT_EQ(c.validity, nullptr);
    EXPECT_FALSE(c.large_offsets);
  }
}

template <typename T>
void ExpectListRoundTrip(ArrowPrimitive element) {
  SCOPED_TRACE(TypeToString(FieldType::List(element)));
  std::vector<std::vector<T>> rows = {{T(1), T(2), T(3)}, {}, {T(100)}, {}, {T(7), T(0)}};
  OwnedTable t;
  t.num_rows = static_cast<int64_t>(rows.size());
  t.columns.push_back(ListColumn<T>("values", element, rows));
  const std::vector<std::byte> file = EncodeSegment(t.View());
  const ParsedSegment p = ParseSegment(AsSpan(file));
  CheckViewsInsideFile(p, AsSpan(file));
  ASSERT_EQ(p.fields.size(), 1u);
  EXPECT_EQ(p.fields[0].type, FieldType::List(element));
  ASSERT_EQ(p.batches.size(), 1u);
  EXPECT_EQ(p.batches[0].columns[0].values_length, 6);
  for (size_t r = 0; r < rows.size(); ++r) {
    EXPECT_EQ(ListAt<T>(p.batches[0].columns[0], static_cast<int64_t>(r)), rows[r]);
  }
  // Values are 8-byte aligned in the file.
  EXPECT_EQ((p.batches[0].columns[0].values - file.data()) % 8, 0);
}

TEST(IpcCodecTest, RoundTripEveryElementType) {
  ExpectListRoundTrip<int8_t>(ArrowPrimitive::kInt8);
  ExpectListRoundTrip<int16_t>(ArrowPrimitive::kInt16);
  ExpectListRoundTrip<int32_t>(ArrowPrimitive::kInt32);
  ExpectListRoundTrip<int64_t>(ArrowPrimitive::kInt64);
  ExpectListRoundTrip<uint8_t>(ArrowPrimitive::kUInt8);
  ExpectListRoundTrip<uint16_t>(ArrowPrimitive::kUInt16);
  ExpectListRoundTrip<uint32_t>(ArrowPrimitive::kUInt32);
  ExpectListRoundTrip<uint64_t>(ArrowPrimitive::kUInt64);
  ExpectListRoundTrip<uint16_t>(ArrowPrimitive::kFloat16);  // raw half bits
  ExpectListRoundTrip<float>(ArrowPrimitive::kFloat32);
  ExpectListRoundTrip<double>(ArrowPrimitive::kFloat64);
}

TEST(IpcCodecTest, RoundTripBitPackedBools) {
  const std::vector<std::vector<bool>> rows = {
      {true, false, true}, {}, {false, false, false, false, false, false, false, false, true},
      {true}};
  OwnedTable t;
  t.num_rows = 4;
  t.columns.push_back(BoolListColumn("flags", rows));
  const std::vector<std::byte> file = EncodeSegment(t.View());
  const ParsedSegment p = ParseSegment(AsSpan(file));
  CheckViewsInsideFile(p, AsSpan(file));
  EXPECT_EQ(p.fields[0].type, FieldType::List(ArrowPrimitive::kBool));
  EXPECT_EQ(p.batches[0].columns[0].values_length, 13);
  for (size_t r = 0; r < rows.size(); ++r) {
    EXPECT_EQ(BoolListAt(p.batches[0].columns[0], static_cast<int64_t>(r)), rows[r]);
  }
}

TEST(IpcCodecTest, RoundTripEmptyTable) {
  OwnedTable t;
  t.num_rows = 0;
  t.columns.push_back(StringColumn("key", {}));
  t.columns.push_back(ListColumn<float>("data", ArrowPrimitive::kFloat32, {}));
  t.metadata = {{"k", "v"}};
  const std::vector<std::byte> file = EncodeSegment(t.View());
  const ParsedSegment p = ParseSegment(AsSpan(file));
  CheckViewsInsideFile(p, AsSpan(file));
  ASSERT_EQ(p.fields.size(), 2u);
  ASSERT_EQ(p.batches.size(), 1u);
  EXPECT_EQ(p.num_rows, 0);
  EXPECT_EQ(p.batches[0].columns[0].Offset(0), 0);
  EXPECT_EQ(p.batches[0].columns[1].values_length, 0);
  EXPECT_EQ(p.metadata, t.metadata);
}

TEST(IpcCodecTest, RoundTripNoColumns) {
  OwnedTable t;
  t.num_rows = 0;
  const std::vector<std::byte> file = EncodeSegment(t.View());
  const ParsedSegment p = ParseSegment(AsSpan(file));
  EXPECT_TRUE(p.fields.empty());
  ASSERT_EQ(p.batches.size(), 1u);
  EXPECT_TRUE(p.batches[0].columns.empty());
}

TEST(IpcCodecTest, RoundTripZeroLengthLists) {
  OwnedTable t;
  t.num_rows = 3;
  t.columns.push_back(StringColumn("key", {"", "", ""}));
  t.columns.push_back(ListColumn<double>("data", ArrowPrimitive::kFloat64, {{}, {}, {}}));
  const std::vector<std::byte> file = EncodeSegment(t.View());
  const ParsedSegment p = ParseSegment(AsSpan(file));
  CheckViewsInsideFile(p, AsSpan(file));
  EXPECT_EQ(p.num_rows, 3);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(StringAt(p.batches[0].columns[0], r), "");
    EXPECT_TRUE(ListAt<double>(p.batches[0].columns[1], r).empty());
  }
}

TEST(IpcCodecTest, RoundTripLargeAndOddMetadata) {
  OwnedTable t = SampleTable();
  std::string big(100000, 'x');
  big[5] = '\0';  // embedded NUL survives
  t.metadata = {{"", ""}, {"big", big}, {"unicode", "\xc3\xa9\xe2\x82\xac"}, {"dup", "1"}};
  t.columns[0].field.metadata = {{"a", "b"}, {"c", ""}};
  const std::vector<std::byte> file = EncodeSegment(t.View());
  const ParsedSegment p = ParseSegment(AsSpan(file));
  EXPECT_EQ(p.metadata, t.metadata);
  EXPECT_EQ(p.fields[0].metadata, t.columns[0].field.metadata);
  EXPECT_EQ(p.fields[1].metadata, t.columns[1].field.metadata);
}

TEST(IpcCodecTest, ManyRowsAndColumns) {
  OwnedTable t;
  t.num_rows = 10000;
  std::vector<std::string> keys;
  std::vector<std::vector<float>> data;
  for (int i = 0; i < t.num_rows; ++i) {
    keys.push_back("key-" + std::to_string(i));
    data.push_back(std::vector<float>(static_cast<size_t>(i % 7), static_cast<float>(i)));
  }
  t.columns.push_back(StringColumn("key", keys));
  for (int c = 0; c < 20; ++c) {
    t.columns.push_back(ListColumn<float>("col" + std::to_string(c), ArrowPrimitive::kFloat32,
                                          data));
  }
  const std::vector<std::byte> file = EncodeSegment(t.View());
  const ParsedSegment p = ParseSegment(AsSpan(file));
  ASSERT_EQ(p.fields.size(), 21u);
  EXPECT_EQ(p.num_rows, 10000);
  for (int r : {0, 1, 6, 7, 9999}) {
    EXPECT_EQ(StringAt(p.batches[0].columns[0], r), keys[static_cast<size_t>(r)]);
    EXPECT_EQ(ListAt<float>(p.batches[0].columns[20], r), data[static_cast<size_t>(r)]);
  }
}

// ---------------------------------------------------------------------------
// The bytes written.

TEST(IpcCodecTest, FileLayout) {
  const OwnedTable t = SampleTable();
  const std::vector<std::byte> file = EncodeSegment(t.View());
  ASSERT_GT(file.size(), 32u);
  EXPECT_EQ(std::memcmp(file.data(), "ARROW1\0\0", 8), 0);
  EXPECT_EQ(std::memcmp(file.data() + file.size() - 6, "ARROW1", 6), 0);
  // The schema message follows the magic: continuation marker, padded length.
  uint32_t marker;
  int32_t length;
  std::memcpy(&marker, file.data() + 8, 4);
  std::memcpy(&length, file.data() + 12, 4);
  EXPECT_EQ(marker, 0xFFFFFFFFu);
  EXPECT_EQ(length % 8, 0);
  // The record batch message starts 8-aligned, right after it.
  const size_t batch = 16 + static_cast<size_t>(length);
  std::memcpy(&marker, file.data() + batch, 4);
  std::memcpy(&length, file.data() + batch + 4, 4);
  EXPECT_EQ(marker, 0xFFFFFFFFu);
  EXPECT_EQ(length % 8, 0);
  // Every body buffer is 8-aligned relative to the file start.
  const ParsedSegment p = ParseSegment(AsSpan(file));
  for (const ColumnView& c : p.batches[0].columns) {
    EXPECT_EQ((c.offsets - file.data()) % 8, 0);
    EXPECT_EQ((c.values - file.data()) % 8, 0);
  }
}

TEST(IpcCodecTest, WriterPassesColumnBuffersThrough) {
  const OwnedTable t = SampleTable();
  std::vector<const std::byte*> pieces;
  uint64_t total = 0;
  std::vector<std::byte> concatenated;
  const uint64_t written = WriteSegment(t.View(), [&](std::span<const std::byte> bytes) {
    pieces.push_back(bytes.data());
    total += bytes.size();
    concatenated.insert(concatenated.end(), bytes.begin(), bytes.end());
  });
  EXPECT_EQ(written, total);
  EXPECT_EQ(concatenated, EncodeSegment(t.View()));
  // Each non-empty column buffer reaches the sink as the caller's own memory.
  for (const OwnedColumn& c : t.columns) {
    EXPECT_NE(std::find(pieces.begin(), pieces.end(),
                        reinterpret_cast<const std::byte*>(c.offsets.data())),
              pieces.end());
    if (!c.values.empty()) {
      EXPECT_NE(std::find(pieces.begin(), pieces.end(), c.values.data()), pieces.end());
    }
  }
}

TEST(IpcCodecTest, FooterChecksumCoversEveryByteBeforeItInMultiMegabyteSegments) {
  // Column buffers of several MB reach the sink in pieces, hashed piece by
  // piece: the recorded checksum must still be that of the whole file.
  OwnedTable t;
  t.num_rows = 300;
  std::vector<std::string> keys;
  std::vector<std::vector<float>> rows;
  for (int i = 0; i < t.num_rows; ++i) {
    keys.push_back("k" + std::to_string(i));
    rows.push_back(std::vector<float>(4096 + static_cast<size_t>(i % 3), static_cast<float>(i)));
  }
  t.columns.push_back(StringColumn("key", keys));
  t.columns.push_back(ListColumn<float>("data", ArrowPrimitive::kFloat32, rows));
  const std::vector<std::byte> file = EncodeSegment(t.View());
  ASSERT_GT(file.size(), size_t{4} << 20);
  const ParsedSegment p = ParseSegment(AsSpan(file));
  const std::string* recorded = FindMetadata(p.footer_metadata, kChecksumMetadataKey);
  ASSERT_NE(recorded, nullptr);
  char expected[17];
  std::snprintf(expected, sizeof expected, "%016llx",
                static_cast<unsigned long long>(Xxh3_64(AsSpan(file).first(p.footer_offset))));
  EXPECT_EQ(*recorded, expected);
  EXPECT_EQ(ListAt<float>(p.batches[0].columns[1], 299), rows[299]);
}

TEST(IpcCodecTest, WriterErrorsPropagateFromSink) {
  const OwnedTable t = SampleTable();
  int calls = 0;
  EXPECT_THROW(WriteSegment(t.View(),
                            [&](std::span<const std::byte>) {
                              if (++calls == 2) throw IOError("disk full");
                            }),
               IOError);
}

TEST(IpcCodecTest, WriterRejectsInconsistentTables) {
  auto expect_invalid = [](OwnedTable t, const char* what) {
    SCOPED_TRACE(what);
    EXPECT_THROW(EncodeSegment(t.View()), InvalidArgumentError);
  };
  {
    OwnedTable t = SampleTable();
    t.num_rows = 4;  // offsets have 4 entries, need 5
    expect_invalid(t, "offsets length");
  }
  {
    OwnedTable t = SampleTable();
    t.columns[0].offsets[0] = 1;
    expect_invalid(t, "offsets[0] != 0");
  }
  {
    OwnedTable t = SampleTable();
    t.columns[0].offsets[2] = 1;  // 5, 1: decreasing
    expect_invalid(t, "non-monotonic");
  }
  {
    OwnedTable t = SampleTable();
    t.columns[1].values.pop_back();  // 3 floats need 12 bytes
    expect_invalid(t, "values length");
  }
  {
    OwnedTable t = SampleTable();
    t.columns[0].values.push_back(std::byte{0});
    expect_invalid(t, "extra values");
  }
  {
    OwnedTable t = SampleTable();
    t.columns[0].field.type.large = true;
    expect_invalid(t, "large type");
  }
  {
    OwnedTable t = SampleTable();
    t.num_rows = -1;
    expect_invalid(t, "negative rows");
  }
}

// ---------------------------------------------------------------------------
// Files written by pyarrow (tests/cpp/data/make_fixtures.py).

std::vector<std::byte> ReadFixture(const std::string& name) {
  const std::filesystem::path path = std::filesystem::path(__FILE__).parent_path() / "data" / name;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "missing fixture " << path;
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  if (!chars.empty()) std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

TEST(IpcCodecTest, ReadsPyarrowTwoBatches) {
  const std::vector<std::byte> file = ReadFixture("pyarrow_two_batches.arrow");
  const ParsedSegment p = ParseSegment(AsSpan(file));
  CheckViewsInsideFile(p, AsSpan(file));
  ASSERT_EQ(p.fields.size(), 3u);
  EXPECT_EQ(p.fields[0].name, "key");
  EXPECT_EQ(TypeToString(p.fields[0].type), "string");
  EXPECT_EQ(TypeToString(p.fields[1].type), "list<item: float>");
  EXPECT_EQ(TypeToString(p.fields[2].type), "list<item: int64>");
  ASSERT_NE(FindMetadata(p.fields[1].metadata, "torch_dtype"), nullptr);
  EXPECT_EQ(*FindMetadata(p.fields[1].metadata, "torch_dtype"), "torch.float32");
  ASSERT_NE(FindMetadata(p.metadata, "output_structure"), nullptr);
  EXPECT_EQ(*FindMetadata(p.metadata, "output_structure"), "tensor");
  ASSERT_EQ(p.batches.size(), 2u);
  EXPECT_EQ(p.num_rows, 5);

  const RecordBatchView& b1 = p.batches[0];
  ASSERT_EQ(b1.num_rows, 3);
  EXPECT_EQ(StringAt(b1.columns[0], 0), "a");
  EXPECT_EQ(StringAt(b1.columns[0], 2), "ccc");
  EXPECT_EQ(ListAt<float>(b1.columns[1], 0), (std::vector<float>{1.0f, 2.0f}));
  EXPECT_EQ(ListAt<float>(b1.columns[1], 1), (std::vector<float>{3.5f}));
  EXPECT_TRUE(ListAt<float>(b1.columns[1], 2).empty());
  EXPECT_EQ(ListAt<int64_t>(b1.columns[2], 2), (std::vector<int64_t>{0}));

  const RecordBatchView& b2 = p.batches[1];
  ASSERT_EQ(b2.num_rows, 2);
  EXPECT_EQ(StringAt(b2.columns[0], 1), "e");
  EXPECT_EQ(ListAt<float>(b2.columns[1], 0), (std::vector<float>{4.0f, 5.0f, 6.0f}));
  EXPECT_EQ(ListAt<float>(b2.columns[1], 1), (std::vector<float>{-7.25f}));
  EXPECT_EQ(ListAt<int64_t>(b2.columns[2], 1), (std::vector<int64_t>{1, 1}));
}

TEST(IpcCodecTest, ReadsPyarrowLargeTypesWithNulls) {
  const std::vector<std::byte> file = ReadFixture("pyarrow_large_nulls.arrow");
  const ParsedSegment p = ParseSegment(AsSpan(file));
  CheckViewsInsideFile(p, AsSpan(file));
  ASSERT_EQ(p.fields.size(), 3u);
  EXPECT_EQ(TypeToString(p.fields[0].type), "large_string");
  EXPECT_EQ(TypeToString(p.fields[1].type), "large_list<item: double>");
  EXPECT_EQ(TypeToString(p.fields[2].type), "large_binary");
  ASSERT_EQ(p.batches.size(), 1u);
  const RecordBatchView& b = p.batches[0];
  ASSERT_EQ(b.num_rows, 4);
  for (const ColumnView& c : b.columns) {
    EXPECT_TRUE(c.large_offsets);
    ASSERT_NE(c.validity, nullptr);
  }
  EXPECT_FALSE(b.columns[0].IsNull(0));
  EXPECT_TRUE(b.columns[0].IsNull(1));
  EXPECT_EQ(StringAt(b.columns[0], 0), "k0");
  EXPECT_EQ(StringAt(b.columns[0], 3), "k3");
  EXPECT_EQ(ListAt<double>(b.columns[1], 0), (std::vector<double>{0.5}));
  EXPECT_TRUE(ListAt<double>(b.columns[1], 1).empty());
  EXPECT_FALSE(b.columns[1].IsNull(1));
  EXPECT_TRUE(b.columns[1].IsNull(2));
  EXPECT_EQ(ListAt<double>(b.columns[1], 3), (std::vector<double>{1.0, 2.0}));
  EXPECT_EQ(StringAt(b.columns[2], 0), std::string("\x00\x01", 2));
  EXPECT_TRUE(b.columns[2].IsNull(1));
  EXPECT_FALSE(b.columns[2].IsNull(2));
  EXPECT_EQ(StringAt(b.columns[2], 3), "xyz");
}

template <typename T>
void ExpectPyarrowList(const ParsedSegment& p, size_t column, const char* type) {
  SCOPED_TRACE(type);
  EXPECT_EQ(TypeToString(p.fields[column].type), std::string("list<item: ") + type + ">");
  const ColumnView& c = p.batches[0].columns[column];
  EXPECT_EQ(ListAt<T>(c, 0), (std::vector<T>{T(1), T(2), T(3)}));
  EXPECT_TRUE(ListAt<T>(c, 1).empty());
  EXPECT_EQ(ListAt<T>(c, 2), (std::vector<T>{T(4), T(5)}));
}

TEST(IpcCodecTest, ReadsPyarrowEveryElementType) {
  const std::vector<std::byte> file = ReadFixture("pyarrow_all_types.arrow");
  const ParsedSegment p = ParseSegment(AsSpan(file));
  CheckViewsInsideFile(p, AsSpan(file));
  ASSERT_EQ(p.fields.size(), 13u);
  ASSERT_EQ(p.batches.size(), 2u);
  EXPECT_EQ(p.batches[1].num_rows, 0);
  EXPECT_EQ(p.num_rows, 3);
  ExpectPyarrowList<int8_t>(p, 0, "int8");
  ExpectPyarrowList<int16_t>(p, 1, "int16");
  ExpectPyarrowList<int32_t>(p, 2, "int32");
  ExpectPyarrowList<int64_t>(p, 3, "int64");
  ExpectPyarrowList<uint8_t>(p, 4, "uint8");
  ExpectPyarrowList<uint16_t>(p, 5, "uint16");
  ExpectPyarrowList<uint32_t>(p, 6, "uint32");
  ExpectPyarrowList<uint64_t>(p, 7, "uint64");
  EXPECT_EQ(TypeToString(p.fields[8].type), "list<item: halffloat>");
  // IEEE half: 1.0 = 0x3C00, 2.0 = 0x4000, 5.0 = 0x4500.
  EXPECT_EQ(ListAt<uint16_t>(p.batches[0].columns[8], 0),
            (std::vector<uint16_t>{0x3C00, 0x4000, 0x4200}));
  EXPECT_EQ(ListAt<uint16_t>(p.batches[0].columns[8], 2), (std::vector<uint16_t>{0x4400, 0x4500}));
  ExpectPyarrowList<float>(p, 9, "float");
  ExpectPyarrowList<double>(p, 10, "double");
  EXPECT_EQ(TypeToString(p.fields[11].type), "list<item: bool>");
  const ColumnView& bools = p.batches[0].columns[11];
  EXPECT_EQ(BoolListAt(bools, 0), (std::vector<bool>{true, false, true}));
  EXPECT_TRUE(BoolListAt(bools, 1).empty());
  std::vector<bool> last(9, false);
  last.push_back(true);
  EXPECT_EQ(BoolListAt(bools, 2), last);
  EXPECT_EQ(TypeToString(p.fields[12].type), "binary");
  EXPECT_EQ(StringAt(p.batches[0].columns[12], 0), "\xff");
  EXPECT_EQ(StringAt(p.batches[0].columns[12], 2), std::string("\0\0", 2));
}

TEST(IpcCodecTest, ReadsPyarrowEmptyFile) {
  const std::vector<std::byte> file = ReadFixture("pyarrow_empty.arrow");
  const ParsedSegment p = ParseSegment(AsSpan(file));
  ASSERT_EQ(p.fields.size(), 2u);
  EXPECT_TRUE(p.batches.empty());
  EXPECT_EQ(p.num_rows, 0);
}

TEST(IpcCodecTest, RejectsPyarrowUnsupportedFeatures) {
  for (const char* name : {"pyarrow_dictionary.arrow", "pyarrow_compressed.arrow",
                           "pyarrow_list_nulls.arrow"}) {
    SCOPED_TRACE(name);
    const std::vector<std::byte> file = ReadFixture(name);
    const std::string error = ErrorOf(AsSpan(file));
    EXPECT_EQ(error.rfind("unsupported: ", 0), 0u) << error;
  }
  const std::vector<std::byte> file = ReadFixture("pyarrow_list_nulls.arrow");
  EXPECT_NE(ErrorOf(AsSpan(file)).find("null elements in list column 'data'"), std::string::npos);
}

// ---------------------------------------------------------------------------
// Hand-built files: a second, independent encoder that can express what our
// writer never writes (nulls, large types, bad nodes and buffers).

struct RawField {
  std::string name;
  uint8_t type = fbs::kTypeUtf8;
  uint8_t child_type = fbs::kTypeNone;  // for lists
  int32_t bit_width = 0;                // child Int
  bool is_signed = true;
  int16_t precision = fbs::kPrecisionSingle;  // child FloatingPoint
  bool dictionary = false;
  bool child_dictionary = false;
  // custom_metadata: this many references to one shared {"k": <value>} entry.
  int shared_metadata_copies = 0;
  size_t shared_metadata_value_size = 0;
};

struct RawBatch {
  int64_t length = 0;
  std::vector<std::pair<int64_t, int64_t>> nodes;  // (length, null_count)
  std::vector<std::vector<std::byte>> buffers;
  std::vector<std::pair<int64_t, int64_t>> buffer_override;  // (offset, length)
  bool compression = false;
};

struct RawOptions {
  int16_t endianness = fbs::kEndiannessLittle;
  int16_t version = fbs::kMetadataV5;
  uint8_t header_type = fbs::kHeaderRecordBatch;
  std::vector<size_t> footer_blocks;  // indices of the batches the footer lists; empty: all
};

template <typename T>
std::vector<std::byte> Raw(std::initializer_list<T> values) {
  std::vector<std::byte> out(values.size() * sizeof(T));
  if (values.size() != 0) std::memcpy(out.data(), std::data(values), out.size());
  return out;
}

using Offset = FlatbufferBuilder::Offset;

Offset RawSchema(FlatbufferBuilder& b, const std::vector<RawField>& fields, int16_t endianness) {
  auto make_field = [&b](const std::string& name, uint8_t type, Offset type_table,
                         Offset children, bool dictionary, Offset metadata = 0) {
    Offset dict = 0;
    if (dictionary) {
      b.StartTable();
      b.AddScalar<int64_t>(0, 0);
      dict = b.EndTable();
    }
    const Offset n = b.CreateString(name);
    b.StartTable();
    b.AddOffset(fbs::field::kName, n);
    b.AddBool(fbs::field::kNullable, true);
    b.AddScalar<uint8_t>(fbs::field::kTypeType, type);
    b.AddOffset(fbs::field::kType, type_table);
    b.AddOffset(fbs::field::kDictionary, dict);
    b.AddOffset(fbs::field::kChildren, children);
    b.AddOffset(fbs::field::kCustomMetadata, metadata);
    return b.EndTable();
  };
  std::vector<Offset> offsets;
  for (const RawField& f : fields) {
    Offset children = 0;
    if (f.type == fbs::kTypeList || f.type == fbs::kTypeLargeList) {
      b.StartTable();
      if (f.child_type == fbs::kTypeInt) {
        b.AddScalar<int32_t>(fbs::int_type::kBitWidth, f.bit_width);
        b.AddBool(fbs::int_type::kIsSigned, f.is_signed);
      } else if (f.child_type == fbs::kTypeFloatingPoint) {
        b.AddScalar<int16_t>(fbs::floating_point::kPrecision, f.precision);
      }
      const Offset child_type = b.EndTable();
      const Offset child = make_field("item", f.child_type, child_type, 0, f.child_dictionary);
      children = b.CreateOffsetVector(std::span<const Offset>(&child, 1));
    }
    Offset metadata = 0;
    if (f.shared_metadata_copies > 0) {
      const Offset k = b.CreateString("k");
      const Offset v = b.CreateString(std::string(f.shared_metadata_value_size, 'v'));
      b.StartTable();
      b.AddOffset(fbs::key_value::kKey, k);
      b.AddOffset(fbs::key_value::kValue, v);
      const Offset kv = b.EndTable();
      metadata = b.CreateOffsetVector(
          std::vector<Offset>(static_cast<size_t>(f.shared_metadata_copies), kv));
    }
    b.StartTable();
    const Offset type_table = b.EndTable();
    offsets.push_back(make_field(f.name, f.type, type_table, children, f.dictionary, metadata));
  }
  const Offset vec = b.CreateOffsetVector(offsets);
  b.StartTable();
  b.AddScalar<int16_t>(fbs::schema::kEndianness, endianness);
  b.AddOffset(fbs::schema::kFields, vec);
  return b.EndTable();
}

void Append(std::vector<std::byte>& out, const void* p, size_t n) {
  out.insert(out.end(), static_cast<const std::byte*>(p), static_cast<const std::byte*>(p) + n);
}

void AppendMessage(std::vector<std::byte>& out, std::span<const std::byte> fb) {
  const uint32_t marker = 0xFFFFFFFFu;
  const int32_t length = static_cast<int32_t>((fb.size() + 7) / 8 * 8);
  Append(out, &marker, 4);
  Append(out, &length, 4);
  Append(out, fb.data(), fb.size());
  out.resize(out.size() + static_cast<size_t>(length) - fb.size());
}

std::vector<std::byte> BuildRawFile(const std::vector<RawField>& fields,
                                    const std::vector<RawBatch>& batches,
                                    const RawOptions& options = {}) {
  std::vector<std::byte> out;
  Append(out, "ARROW1\0\0", 8);
  std::vector<int64_t> blocks;  // offset, metadata length, body length
  for (const RawBatch& batch : batches) {
    std::vector<std::byte> body;
    std::vector<int64_t> descs;
    for (const std::vector<std::byte>& buf : batch.buffers) {
      descs.push_back(static_cast<int64_t>(body.size()));
      descs.push_back(static_cast<int64_t>(buf.size()));
      body.insert(body.end(), buf.begin(), buf.end());
      body.resize((body.size() + 7) / 8 * 8);
    }
    if (!batch.buffer_override.empty()) {
      descs.clear();
      for (auto [o, l] : batch.buffer_override) {
        descs.push_back(o);
        descs.push_back(l);
      }
    }
    std::vector<int64_t> nodes;
    for (auto [l, n] : batch.nodes) {
      nodes.push_back(l);
      nodes.push_back(n);
    }
    FlatbufferBuilder b;
    const Offset buffer_vec = b.CreateStructVector(descs.data(), descs.size() / 2, 16, 8);
    const Offset node_vec = b.CreateStructVector(nodes.data(), nodes.size() / 2, 16, 8);
    Offset compression = 0;
    if (batch.compression) {
      b.StartTable();
      b.AddScalar<int8_t>(0, 0);
      compression = b.EndTable();
    }
    b.StartTable();
    b.AddScalar<int64_t>(fbs::record_batch::kLength, batch.length);
    b.AddOffset(fbs::record_batch::kNodes, node_vec);
    b.AddOffset(fbs::record_batch::kBuffers, buffer_vec);
    b.AddOffset(fbs::record_batch::kCompression, compression);
    const Offset rb = b.EndTable();
    b.StartTable();
    b.AddScalar<int16_t>(fbs::message::kVersion, options.version);
    b.AddScalar<uint8_t>(fbs::message::kHeaderType, options.header_type);
    b.AddOffset(fbs::message::kHeader, rb);
    b.AddScalar<int64_t>(fbs::message::kBodyLength, static_cast<int64_t>(body.size()));
    const size_t start = out.size();
    AppendMessage(out, b.Finish(b.EndTable()));
    blocks.push_back(static_cast<int64_t>(start));
    blocks.push_back(static_cast<int64_t>(out.size() - start));  // metadata length
    blocks.push_back(static_cast<int64_t>(body.size()));
    out.insert(out.end(), body.begin(), body.end());
  }
  FlatbufferBuilder b;
  std::vector<size_t> listed = options.footer_blocks;
  if (listed.empty()) {
    for (size_t i = 0; i < batches.size(); ++i) listed.push_back(i);
  }
  std::vector<std::byte> block_bytes(listed.size() * 24);
  for (size_t i = 0; i < listed.size(); ++i) {
    const size_t j = listed[i];
    const int32_t meta = static_cast<int32_t>(blocks[3 * j + 1]);
    std::memcpy(&block_bytes[24 * i], &blocks[3 * j], 8);
    std::memcpy(&block_bytes[24 * i + 8], &meta, 4);
    std::memcpy(&block_bytes[24 * i + 16], &blocks[3 * j + 2], 8);
  }
  const Offset block_vec = b.CreateStructVector(block_bytes.data(), listed.size(), 24, 8);
  const Offset schema = RawSchema(b, fields, options.endianness);
  b.StartTable();
  b.AddScalar<int16_t>(fbs::footer::kVersion, options.version);
  b.AddOffset(fbs::footer::kSchema, schema);
  b.AddOffset(fbs::footer::kRecordBatches, block_vec);
  const std::span<const std::byte> footer = b.Finish(b.EndTable());
  const int32_t footer_length = static_cast<int32_t>(footer.size());
  Append(out, footer.data(), footer.size());
  Append(out, &footer_length, 4);
  Append(out, "ARROW1", 6);
  return out;
}

// key: utf8 ["a", null, "ccc"] with a validity bitmap.
RawBatch KeyBatchWithNull() {
  RawBatch batch;
  batch.length = 3;
  batch.nodes = {{3, 1}};
  batch.buffers = {Raw<uint8_t>({0b101}), Raw<int32_t>({0, 1, 1, 4}),
                   Raw<char>({'a', 'c', 'c', 'c'})};
  return batch;
}

// data: list<float32> [[1, 2], [], [3]].
RawField FloatListField() {
  RawField f{"data", fbs::kTypeList, fbs::kTypeFloatingPoint};
  f.precision = fbs::kPrecisionSingle;
  return f;
}
RawBatch FloatListBatch() {
  RawBatch batch;
  batch.length = 3;
  batch.nodes = {{3, 0}, {3, 0}};
  batch.buffers = {{}, Raw<int32_t>({0, 2, 2, 3}), {}, Raw<float>({1.f, 2.f, 3.f})};
  return batch;
}

TEST(IpcCodecTest, HandBuiltFileParses) {
  const std::vector<std::byte> file = BuildRawFile({FloatListField()}, {FloatListBatch()});
  const ParsedSegment p = ParseSegment(AsSpan(file));
  CheckViewsInsideFile(p, AsSpan(file));
  EXPECT_EQ(ListAt<float>(p.batches[0].columns[0], 0), (std::vector<float>{1.f, 2.f}));
  EXPECT_EQ(ListAt<float>(p.batches[0].columns[0], 2), (std::vector<float>{3.f}));
}

TEST(IpcCodecTest, NullsInKeyColumnAreExposed) {
  const std::vector<std::byte> file =
      BuildRawFile({{"key", fbs::kTypeUtf8}}, {KeyBatchWithNull(), KeyBatchWithNull()});
  const ParsedSegment p = ParseSegment(AsSpan(file));
  CheckViewsInsideFile(p, AsSpan(file));
  ASSERT_EQ(p.batches.size(), 2u);
  EXPECT_EQ(p.num_rows, 6);
  const ColumnView& key = p.batches[1].columns[0];
  ASSERT_NE(key.validity, nullptr);
  EXPECT_FALSE(key.IsNull(0));
  EXPECT_TRUE(key.IsNull(1));
  EXPECT_FALSE(key.IsNull(2));
  EXPECT_EQ(StringAt(key, 0), "a");
  EXPECT_EQ(StringAt(key, 1), "");
  EXPECT_EQ(StringAt(key, 2), "ccc");
}

TEST(IpcCodecTest, ReadsV4AndEmptyOffsetsOfEmptyArrays) {
  RawBatch batch;
  batch.length = 0;
  batch.nodes = {{0, 0}, {0, 0}};
  batch.buffers = {{}, {}, {}, {}};  // offsets buffer of length 0
  RawOptions options;
  options.version = fbs::kMetadataV4;
  const std::vector<std::byte> file = BuildRawFile({FloatListField()}, {batch}, options);
  const ParsedSegment p = ParseSegment(AsSpan(file));
  EXPECT_EQ(p.batches[0].columns[0].Offset(0), 0);
  EXPECT_EQ(p.batches[0].columns[0].values_length, 0);
}

void ExpectCorrupt(const std::vector<RawField>& fields, const std::vector<RawBatch>& batches,
                   const std::string& message, const RawOptions& options = {}) {
  const std::vector<std::byte> file = BuildRawFile(fields, batches, options);
  const std::string error = ErrorOf(AsSpan(file));
  EXPECT_NE(error.find(message), std::string::npos)
      << "expected \"" << message << "\", got \"" << error << "\"";
}

TEST(IpcCodecTest, RejectsUnsupportedFeatures) {
  RawField dict = {"key", fbs::kTypeUtf8};
  dict.dictionary = true;
  ExpectCorrupt({dict}, {}, "unsupported: dictionary-encoded column 'key'");

  RawField child_dict = FloatListField();
  child_dict.child_dictionary = true;
  ExpectCorrupt({child_dict}, {}, "unsupported: dictionary-encoded list elements");

  RawBatch compressed = FloatListBatch();
  compressed.compression = true;
  ExpectCorrupt({FloatListField()}, {compressed},
                "unsupported: record batch 0 uses body compression");

  RawOptions big_endian;
  big_endian.endianness = 1;
  ExpectCorrupt({FloatListField()}, {}, "unsupported: big-endian", big_endian);

  RawOptions v3;
  v3.version = 2;
  ExpectCorrupt({FloatListField()}, {}, "unsupported: footer metadata version 2", v3);

  ExpectCorrupt({{"s", 13 /* Struct_ */}}, {}, "unsupported: column 's' has Arrow type Struct_");
  ExpectCorrupt({{"t", 24 /* Utf8View */}}, {}, "Arrow type Utf8View");
  RawField nested = {"n", fbs::kTypeList, fbs::kTypeList};
  ExpectCorrupt({nested}, {}, "unsupported: list column 'n' has element type List");
  RawField decimal = {"d", fbs::kTypeList, 7};
  ExpectCorrupt({decimal}, {}, "element type Decimal");

  RawBatch child_nulls = FloatListBatch();
  child_nulls.nodes[1].second = 1;
  child_nulls.buffers[2] = Raw<uint8_t>({0b110});
  ExpectCorrupt({FloatListField()}, {child_nulls},
                "unsupported: null elements in list column 'data'");
}

TEST(IpcCodecTest, RejectsInconsistentBatches) {
  const std::vector<RawField> key = {{"key", fbs::kTypeUtf8}};
  const std::vector<RawField> list = {FloatListField()};
  {
    RawBatch b = KeyBatchWithNull();
    b.buffers[1] = Raw<int32_t>({0, 3, 1, 4});
    ExpectCorrupt(key, {b}, "offsets decrease at row 1");
  }
  {
    RawBatch b = KeyBatchWithNull();
    b.buffers[1] = Raw<int32_t>({0, 1, 1, 5});
    ExpectCorrupt(key, {b}, "last offset 5 is past the end of the 4 values");
  }
  {
    RawBatch b = KeyBatchWithNull();
    b.buffers[1] = Raw<int32_t>({-1, 1, 1, 4});
    ExpectCorrupt(key, {b}, "negative first offset");
  }
  {
    RawBatch b = KeyBatchWithNull();
    b.buffers[1] = Raw<int32_t>({0, 1, 1});
    ExpectCorrupt(key, {b}, "offsets buffer too short");
  }
  {
    RawBatch b = KeyBatchWithNull();
    b.buffers[0] = {};
    ExpectCorrupt(key, {b}, "validity bitmap too short");
  }
  {
    RawBatch b = KeyBatchWithNull();
    b.nodes[0] = {2, 0};
    ExpectCorrupt(key, {b}, "length 2 differs from the batch's 3");
  }
  {
    RawBatch b = KeyBatchWithNull();
    b.nodes[0] = {3, 4};
    ExpectCorrupt(key, {b}, "bad field node");
  }
  {
    RawBatch b = KeyBatchWithNull();
    b.nodes.push_back({3, 0});
    ExpectCorrupt(key, {b}, "has 2 field nodes, the schema needs 1");
  }
  {
    RawBatch b = KeyBatchWithNull();
    b.buffers.pop_back();
    ExpectCorrupt(key, {b}, "has 2 buffers, the schema needs 3");
  }
  {
    RawBatch b = KeyBatchWithNull();
    b.buffer_override = {{0, 1}, {8, 16}, {24, 100}};
    ExpectCorrupt(key, {b}, "buffer 2 (offset 24, length 100) is outside the 32-byte body");
  }
  {
    RawBatch b = KeyBatchWithNull();
    b.buffer_override = {{0, 1}, {8, 16}, {-8, 4}};
    ExpectCorrupt(key, {b}, "buffer 2 (offset -8");
  }
  {
    RawBatch b = KeyBatchWithNull();
    b.buffer_override = {{0, 16}, {0, 16}, {0, 16}};  // aliased buffers
    ExpectCorrupt(key, {b}, "buffers overlap");
  }
  {
    RawBatch b = FloatListBatch();
    b.buffers[1] = Raw<int32_t>({0, 2, 2, 4});
    ExpectCorrupt(list, {b}, "last offset 4 is past the end of the 3 values");
  }
  {
    RawBatch b = FloatListBatch();
    b.nodes[1] = {4, 0};  // 4 floats need 16 bytes, 12 present
    b.buffers[1] = Raw<int32_t>({0, 2, 2, 4});
    ExpectCorrupt(list, {b}, "values buffer too short for 4 list elements");
  }
  {
    RawBatch b = FloatListBatch();
    b.length = -1;
    ExpectCorrupt(list, {b}, "negative length");
  }
  {
    RawOptions options;
    options.header_type = fbs::kHeaderSchema;
    ExpectCorrupt(list, {FloatListBatch()}, "does not point at a record batch message", options);
  }
  {
    RawField bad_int = {"i", fbs::kTypeList, fbs::kTypeInt};
    bad_int.bit_width = 12;
    ExpectCorrupt({bad_int}, {}, "bad Int bitWidth");
    RawField bad_float = FloatListField();
    bad_float.precision = 3;
    ExpectCorrupt({bad_float}, {}, "bad FloatingPoint precision");
  }
}

// Shared flatbuffer objects let a small footer describe huge metadata or
// many batches; the reader bounds what it materializes and the work it does.
TEST(IpcCodecTest, RejectsAmplifyingSharedObjects) {
  RawField f = {"key", fbs::kTypeUtf8};
  f.shared_metadata_copies = 2000;
  f.shared_metadata_value_size = 100000;  // 200 MB if materialized
  ExpectCorrupt({f}, {}, "footer metadata expands");
  f.shared_metadata_copies = 3;  // honest amounts of sharing are fine
  const std::vector<std::byte> ok = BuildRawFile({f}, {});
  EXPECT_EQ(ParseSegment(AsSpan(ok)).fields[0].metadata.size(), 3u);

  RawOptions repeated;
  repeated.footer_blocks = {0, 0};
  ExpectCorrupt({FloatListField()}, {FloatListBatch()}, "record batch blocks overlap", repeated);
  repeated.footer_blocks = {0};
  const std::vector<std::byte> single =
      BuildRawFile({FloatListField()}, {FloatListBatch()}, repeated);
  EXPECT_EQ(ParseSegment(AsSpan(single)).num_rows, 3);
}

TEST(IpcCodecTest, RejectsBadFraming) {
  const OwnedTable t = SampleTable();
  const std::vector<std::byte> good = EncodeSegment(t.View());
  EXPECT_NE(ErrorOf({}).find("not an Arrow IPC file"), std::string::npos);
  {
    std::vector<std::byte> f = good;
    f[0] = std::byte{'X'};
    EXPECT_NE(ErrorOf(AsSpan(f)).find("no leading ARROW1 magic"), std::string::npos);
  }
  {
    std::vector<std::byte> f = good;
    f.back() = std::byte{'X'};
    EXPECT_NE(ErrorOf(AsSpan(f)).find("no trailing ARROW1 magic"), std::string::npos);
  }
  for (int32_t bad : {0, -5, 1 << 30}) {
    std::vector<std::byte> f = good;
    std::memcpy(f.data() + f.size() - 10, &bad, 4);
    EXPECT_NE(ErrorOf(AsSpan(f)).find("bad footer length"), std::string::npos);
  }
  {
    // The footer's block points far past the end of the data.
    std::vector<std::byte> f = BuildRawFile({FloatListField()}, {FloatListBatch()});
    ASSERT_NO_THROW(ParseSegment(AsSpan(f)));
    int32_t footer_length;
    std::memcpy(&footer_length, f.data() + f.size() - 10, 4);
    const std::span<const std::byte> footer(
        f.data() + f.size() - 10 - static_cast<size_t>(footer_length),
        static_cast<size_t>(footer_length));
    const fb::StructVector blocks = fb::Table::Root(footer, "Footer")
                                        .GetStructVector(fbs::footer::kRecordBatches, 24, "b");
    ASSERT_EQ(blocks.size(), 1u);
    const int64_t far = 1 << 20;
    std::memcpy(f.data() + (blocks.at(0) - f.data()), &far, 8);
    EXPECT_NE(ErrorOf(AsSpan(f)).find("is outside the file"), std::string::npos);
  }
}

// ---------------------------------------------------------------------------
// Corruption: truncation and random damage never crash.

TEST(IpcCodecTest, TruncationAtEveryOffsetThrows) {
  const OwnedTable t = SampleTable();
  const std::vector<std::byte> file = EncodeSegment(t.View());
  for (size_t n = 0; n < file.size(); ++n) {
    SCOPED_TRACE(n);
    EXPECT_THROW(ParseCopy(std::span<const std::byte>(file.data(), n)), CorruptFileError);
  }
  EXPECT_NO_THROW(ParseCopy(AsSpan(file)));
}

TEST(IpcCodecTest, TruncatedPyarrowFilesThrow) {
  for (const char* name : {"pyarrow_two_batches.arrow", "pyarrow_large_nulls.arrow"}) {
    const std::vector<std::byte> file = ReadFixture(name);
    for (size_t n = 0; n < file.size(); ++n) {
      EXPECT_THROW(ParseCopy(std::span<const std::byte>(file.data(), n)), CorruptFileError)
          << name << " truncated to " << n;
    }
  }
}

// Removing `count` bytes anywhere keeps the trailer: the footer then points
// at the wrong places. Such files must parse (unlikely) or throw.
TEST(IpcCodecTest, CutOutBytesNeverCrash) {
  const OwnedTable t = SampleTable();
  const std::vector<std::byte> file = EncodeSegment(t.View());
  for (size_t count : {1, 4, 8}) {
    for (size_t at = 0; at + count <= file.size(); ++at) {
      std::vector<std::byte> cut(file.begin(), file.begin() + static_cast<ptrdiff_t>(at));
      cut.insert(cut.end(), file.begin() + static_cast<ptrdiff_t>(at + count), file.end());
      try {
        ParseCopy(AsSpan(cut));
      } catch (const CorruptFileError&) {
      }
    }
  }
}

void FlipBytes(const std::vector<std::byte>& original, uint32_t seed, int iterations,
               int* parsed, int* rejected) {
  std::mt19937 rng(seed);
  for (int iter = 0; iter < iterations; ++iter) {
    std::vector<std::byte> damaged = original;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) {
      const size_t at = rng() % damaged.size();
      damaged[at] = rng() % 2 == 0 ? static_cast<std::byte>(rng())
                                   : damaged[at] ^ static_cast<std::byte>(1u << (rng() % 8));
    }
    try {
      ParseCopy(AsSpan(damaged));
      ++*parsed;
    } catch (const CorruptFileError&) {
      ++*rejected;
    }
  }
}

TEST(IpcCodecTest, RandomByteFlipsParseOrThrow) {
  const OwnedTable t = SampleTable();
  const std::vector<std::byte> file = EncodeSegment(t.View());
  int parsed = 0, rejected = 0;
  for (uint32_t seed = 1; seed <= 5; ++seed) FlipBytes(file, seed, 1000, &parsed, &rejected);
  EXPECT_EQ(parsed + rejected, 5000);
  EXPECT_GT(parsed, 0);    // body damage is invisible to the parser
  EXPECT_GT(rejected, 0);  // metadata damage is not
}

TEST(IpcCodecTest, RandomByteFlipsOfPyarrowFilesParseOrThrow) {
  for (const char* name : {"pyarrow_two_batches.arrow", "pyarrow_large_nulls.arrow",
                           "pyarrow_all_types.arrow"}) {
    const std::vector<std::byte> file = ReadFixture(name);
    int parsed = 0, rejected = 0;
    FlipBytes(file, 42, 2000, &parsed, &rejected);
    EXPECT_EQ(parsed + rejected, 2000) << name;
  }
}

TEST(IpcCodecTest, RandomByteFlipsOfHandBuiltFilesParseOrThrow) {
  const std::vector<std::byte> file = BuildRawFile(
      {{"key", fbs::kTypeUtf8}, FloatListField()},
      {[] {
         RawBatch b = KeyBatchWithNull();
         RawBatch l = FloatListBatch();
         b.nodes.insert(b.nodes.end(), l.nodes.begin(), l.nodes.end());
         b.buffers.insert(b.buffers.end(), l.buffers.begin(), l.buffers.end());
         return b;
       }()});
  ASSERT_NO_THROW(ParseCopy(AsSpan(file)));
  int parsed = 0, rejected = 0;
  FlipBytes(file, 7, 3000, &parsed, &rejected);
  EXPECT_EQ(parsed + rejected, 3000);
}

}  // namespace
}  // namespace torchcachex::format
