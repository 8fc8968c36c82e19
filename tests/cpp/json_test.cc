// JSON parser and serializer: round trips, number formatting, escapes, and
// rejection of malformed or hostile input.

#include "util/json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

namespace torchcachex::json {
namespace {

std::string RoundTrip(std::string_view text, int indent = 0) {
  return Serialize(Parse(text), indent);
}

void ExpectParseError(std::string_view text) {
  EXPECT_THROW(Parse(text), JsonError) << "input: " << text;
}

TEST(JsonTest, ParsesScalars) {
  EXPECT_TRUE(Parse("null").is_null());
  EXPECT_TRUE(Parse("true").as_bool());
  EXPECT_FALSE(Parse("false").as_bool());
  EXPECT_EQ(Parse("42").as_number(), 42.0);
  EXPECT_EQ(Parse("-0.5e2").as_number(), -50.0);
  EXPECT_EQ(Parse("1E+2").as_number(), 100.0);
  EXPECT_EQ(Parse("\"hi\"").as_string(), "hi");
  EXPECT_EQ(Parse(" \t\r\n 7 \n").as_number(), 7.0);
}

TEST(JsonTest, ParsesContainersInOrder) {
  Value v = Parse(R"({"z": [1, 2, {"a": null}], "a": "x", "m": {}})");
  ASSERT_TRUE(v.is_object());
  const Object& o = v.as_object();
  ASSERT_EQ(o.size(), 3u);
  EXPECT_EQ(o[0].first, "z");
  EXPECT_EQ(o[1].first, "a");
  EXPECT_EQ(o[2].first, "m");
  EXPECT_EQ(v.find("z")->as_array().size(), 3u);
  EXPECT_TRUE(v.find("z")->as_array()[2].find("a")->is_null());
  EXPECT_EQ(v.find("missing"), nullptr);
  EXPECT_EQ(Parse("[]").as_array().size(), 0u);
  EXPECT_TRUE(Parse("{}").as_object().empty());
}

TEST(JsonTest, AccessorsThrowOnTypeMismatch) {
  Value v = Parse("[1]");
  EXPECT_THROW(v.as_object(), JsonError);
  EXPECT_THROW(v.as_string(), JsonError);
  EXPECT_THROW(Parse("1").as_bool(), JsonError);
  EXPECT_THROW(Parse("true").as_number(), JsonError);
  EXPECT_EQ(v.find("x"), nullptr);
  EXPECT_THROW(v.set("x", 1), JsonError);
}

TEST(JsonTest, SetAppendsOrReplaces) {
  Value v;  // null becomes an object
  v.set("a", 1);
  v.set("b", "two");
  v.set("a", true);
  EXPECT_EQ(Serialize(v), R"({"a":true,"b":"two"})");
}

TEST(JsonTest, CompactRoundTrip) {
  const std::string text =
      R"({"fields":[{"name":"key","type":"string"}],"n":-3,"f":0.1,"b":[true,false,null],"s":"a\"b\\c"})";
  EXPECT_EQ(RoundTrip(text), text);
}

TEST(JsonTest, PrettyPrint) {
  Value v = Parse(R"({"a": [1, {"b": []}], "c": {}})");
  EXPECT_EQ(Serialize(v, 2),
            "{\n"
            "  \"a\": [\n"
            "    1,\n"
            "    {\n"
            "      \"b\": []\n"
            "    }\n"
            "  ],\n"
            "  \"c\": {}\n"
            "}");
  EXPECT_EQ(Serialize(Parse(Serialize(v, 4))), Serialize(v));
}

TEST(JsonTest, IntegralNumbersHaveNoFraction) {
  EXPECT_EQ(Serialize(Value(3.0)), "3");
  EXPECT_EQ(Serialize(Value(int64_t{-123456789})), "-123456789");
  EXPECT_EQ(Serialize(Value(9007199254740992.0)), "9007199254740992");
  EXPECT_EQ(Serialize(Value(-9007199254740992.0)), "-9007199254740992");
  EXPECT_EQ(Serialize(Value(0.0)), "0");
  EXPECT_EQ(Serialize(Value(-0.0)), "-0");
  EXPECT_TRUE(std::signbit(Parse(Serialize(Value(-0.0))).as_number()));
}

TEST(JsonTest, NumbersRoundTripExactly) {
  const double values[] = {0.1,
                           1.0 / 3.0,
                           -2.5e-300,
                           1e300,
                           1.7976931348623157e308,
                           4.9406564584124654e-324,
                           2.2250738585072014e-308,
                           9007199254740993.0 * 4,
                           123456.789,
                           -1e-7};
  for (double d : values) {
    std::string text = Serialize(Value(d));
    EXPECT_EQ(Parse(text).as_number(), d) << text;
  }
  EXPECT_EQ(Serialize(Value(0.1)), "0.1");
}

TEST(JsonTest, NonFiniteNumbersCannotBeSerialized) {
  EXPECT_THROW(Serialize(Value(std::numeric_limits<double>::quiet_NaN())), JsonError);
  EXPECT_THROW(Serialize(Value(std::numeric_limits<double>::infinity())), JsonError);
  Array a{Value(1), Value(-std::numeric_limits<double>::infinity())};
  EXPECT_THROW(Serialize(Value(a)), JsonError);
}

TEST(JsonTest, NumberRange) {
  ExpectParseError("1e400");
  ExpectParseError("-1e309");
  EXPECT_EQ(Parse("1e-400").as_number(), 0.0);
  EXPECT_TRUE(std::signbit(Parse("-1e-400").as_number()));
  EXPECT_EQ(Parse("0e999999999999").as_number(), 0.0);
  EXPECT_EQ(Parse("0." + std::string(500, '0') + "1").as_number(), 0.0);
  ExpectParseError("1" + std::string(400, '0'));
}

TEST(JsonTest, RejectsMalformedNumbers) {
  for (const char* text : {"01", "-", "+1", ".5", "1.", "1.e5", "1e", "1e+", "0x10", "- 1", "1..2",
                           "NaN", "Infinity", "-Infinity", "--1", "1e5.5"}) {
    ExpectParseError(text);
  }
}

TEST(JsonTest, StringEscapes) {
  EXPECT_EQ(Parse(R"("\"\\\/\b\f\n\r\t")").as_string(), "\"\\/\b\f\n\r\t");
  EXPECT_EQ(Parse(R"("\u0041\u00e9\u20AC")").as_string(), "A\xC3\xA9\xE2\x82\xAC");
  EXPECT_EQ(Parse(R"("\u0000")").as_string(), std::string(1, '\0'));
  // Surrogate pair: U+1F642.
  EXPECT_EQ(Parse(R"("\ud83d\ude42")").as_string(), "\xF0\x9F\x99\x82");
}

TEST(JsonTest, RejectsBadEscapes) {
  for (const char* text : {R"("\x")", R"("\u12")", R"("\u12G4")", R"("\ud83d")", R"("\ud83dx")",
                           R"("\ud83d\u0041")", R"("\ude42")", R"("\ud83d\n")", R"("\U0041")",
                           R"("\)", R"("\u)"}) {
    ExpectParseError(text);
  }
}

TEST(JsonTest, RawUtf8IsKeptAndValidated) {
  const std::string text = "\"h\xC3\xA9llo \xF0\x9F\x99\x82\"";
  EXPECT_EQ(Parse(text).as_string(), "h\xC3\xA9llo \xF0\x9F\x99\x82");
  EXPECT_EQ(RoundTrip(text), text);  // non-ASCII is written as is
  for (const char* bad : {"\"\x80\"", "\"\xC3\"", "\"\xC0\xAF\"", "\"\xE0\x80\xAF\"",
                          "\"\xED\xA0\x80\"", "\"\xF4\x90\x80\x80\"", "\"\xFF\"", "\"\xF0\x9F\x99\""}) {
    ExpectParseError(bad);
  }
}

TEST(JsonTest, ControlCharactersAreEscaped) {
  std::string raw = "a\x01" "b\x1f\n\"\\/";
  raw.push_back('\0');
  std::string text = Serialize(Value(raw));
  EXPECT_EQ(text, "\"a\\u0001b\\u001f\\n\\\"\\\\/\\u0000\"");
  EXPECT_EQ(Parse(text).as_string(), raw);
  ExpectParseError("\"a\x01\"");
  ExpectParseError("\"line\nbreak\"");
  ExpectParseError("\"tab\there\"");
}

TEST(JsonTest, InvalidUtf8CannotBeSerialized) {
  EXPECT_THROW(Serialize(Value(std::string("\xFF"))), JsonError);
  Value v;
  v.set(std::string("\xC3"), 1);
  EXPECT_THROW(Serialize(v), JsonError);
}

TEST(JsonTest, RejectsTruncatedDocuments) {
  const std::string text = R"({"a": [1, 2.5, "x\u00e9", true, null, {"b": false}]})";
  ASSERT_NO_THROW(Parse(text));
  for (size_t n = 0; n < text.size(); ++n) {
    ExpectParseError(text.substr(0, n));
  }
}

TEST(JsonTest, RejectsStructuralErrors) {
  for (const char* text : {"", "   ", "[1,]", "[,1]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "{'a':1}",
                           "[1 2]", "{\"a\":1 \"b\":2}", "tru", "nul", "True", "[1]]", "{}}",
                           "1 2", "\"a\" x", "[1]garbage", "\xEF\xBB\xBF{}", "{\"a\"}", "{1:2}"}) {
    ExpectParseError(text);
  }
}

TEST(JsonTest, RejectsDuplicateMemberNames) {
  ExpectParseError(R"({"a": 1, "b": 2, "a": 3})");
  EXPECT_NO_THROW(Parse(R"({"a": {"a": 1}, "b": [{"a": 2}]})"));
}

TEST(JsonTest, DepthLimit) {
  auto nested = [](int depth, char open, char close) {
    return std::string(depth, open) + std::string(depth, close);
  };
  EXPECT_NO_THROW(Parse(nested(256, '[', ']')));
  ExpectParseError(nested(257, '[', ']'));
  std::string objects;
  for (int i = 0; i < 300; ++i) objects += "{\"a\":";
  objects += "1" + std::string(300, '}');
  ExpectParseError(objects);
  // Far beyond the limit: must fail cleanly, not overflow the stack.
  ExpectParseError(std::string(1000000, '['));
}

TEST(JsonTest, ErrorNamesTheOffset) {
  try {
    Parse("[1, 2, x]");
    FAIL() << "expected JsonError";
  } catch (const JsonError& e) {
    EXPECT_NE(std::string(e.what()).find("byte 7"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace torchcachex::json
