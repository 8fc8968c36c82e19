// JSON (RFC 8259) values, parser and serializer.
//
// Parser invariants (its input is untrusted):
//   - every read is bounds-checked against the input; errors throw JsonError
//     naming the byte offset;
//   - nesting deeper than kMaxDepth arrays/objects is rejected before it can
//     exhaust the stack;
//   - strings are valid UTF-8 after parsing: raw bytes must be well-formed
//     UTF-8 (no overlongs, no surrogates, <= U+10FFFF), control characters
//     must be escaped, \u escapes must form valid code points (surrogates
//     only as high+low pairs);
//   - numbers follow the JSON grammar exactly and must be finite doubles;
//   - object member names are unique (duplicates are ambiguous across
//     parsers, so they are rejected rather than silently resolved).
// Serializer invariants: the output parses back to an equal value; numbers
// are written locale-independently in the shortest form that round-trips.

#include "util/json.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>

namespace torchcachex::json {

// ---- Value ----

bool Value::as_bool() const {
  if (!is_bool()) throw JsonError("expected bool");
  return std::get<bool>(v_);
}

double Value::as_number() const {
  if (!is_number()) throw JsonError("expected number");
  return std::get<double>(v_);
}

const std::string& Value::as_string() const {
  if (!is_string()) throw JsonError("expected string");
  return std::get<std::string>(v_);
}

const Array& Value::as_array() const {
  if (!is_array()) throw JsonError("expected array");
  return std::get<Array>(v_);
}

const Object& Value::as_object() const {
  if (!is_object()) throw JsonError("expected object");
  return std::get<Object>(v_);
}

Array& Value::as_array() {
  if (!is_array()) throw JsonError("expected array");
  return std::get<Array>(v_);
}

Object& Value::as_object() {
  if (!is_object()) throw JsonError("expected object");
  return std::get<Object>(v_);
}

const Value* Value::find(std::string_view key) const {
  if (!is_object()) return nullptr;
  for (const auto& [name, value] : std::get<Object>(v_)) {
    if (name == key) return &value;
  }
  return nullptr;
}

void Value::set(std::string key, Value value) {
  if (is_null()) v_ = Object();
  Object& members = as_object();
  for (auto& [name, existing] : members) {
    if (name == key) {
      existing = std::move(value);
      return;
    }
  }
  members.emplace_back(std::move(key), std::move(value));
}

// ---- UTF-8 ----

namespace {

constexpr int kMaxDepth = 256;

// Length of the well-formed UTF-8 sequence starting at s[i] (1..4), or 0 if
// the bytes there are not well-formed (RFC 3629, Table 3-7 of Unicode).
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b0 = byte(i);
  if (b0 < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // no overlongs
    if (b0 == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    return 0;
  }
  if (s.size() - i < len) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return len;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// ---- Parser ----

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Value ParseDocument() {
    SkipWhitespace();
    Value value = ParseValue(0);
    SkipWhitespace();
    if (pos_ != text_.size()) Fail("unexpected data after the JSON value");
    return value;
  }

 private:
  [[noreturn]] void Fail(const std::string& what) const {
    throw JsonError("invalid JSON at byte " + std::to_string(pos_) + ": " + what);
  }

  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return text_[pos_]; }  // requires !AtEnd()

  void SkipWhitespace() {
    while (!AtEnd()) {
      char c = Peek();
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  void Expect(char c) {
    if (AtEnd()) Fail(std::string("expected '") + c + "' but the text ended");
    if (Peek() != c) Fail(std::string("expected '") + c + "'");
    ++pos_;
  }

  void ExpectLiteral(std::string_view literal) {
    if (text_.substr(pos_, literal.size()) != literal) Fail("invalid literal");
    pos_ += literal.size();
  }

  Value ParseValue(int depth) {
    if (AtEnd()) Fail("unexpected end of text, expected a value");
    switch (Peek()) {
      case '{': return ParseObject(depth + 1);
      case '[': return ParseArray(depth + 1);
      case '"': return Value(ParseString());
      case 't': ExpectLiteral("true"); return Value(true);
      case 'f': ExpectLiteral("false"); return Value(false);
      case 'n': ExpectLiteral("null"); return Value();
      default:
        if (Peek() == '-' || (Peek() >= '0' && Peek() <= '9')) return Value(ParseNumber());
        Fail("unexpected character, expected a value");
    }
  }

  Value ParseObject(int depth) {
    if (depth > kMaxDepth) Fail("nesting deeper than " + std::to_string(kMaxDepth));
    Expect('{');
    Object members;
    SkipWhitespace();
    if (!AtEnd() && Peek() == '}') {
      ++pos_;
      return Value(std::move(members));
    }
    while (true) {
      SkipWhitespace();
      if (AtEnd() || Peek() != '"') Fail("expected a member name");
      std::string name = ParseString();
      SkipWhitespace();
      Expect(':');
      SkipWhitespace();
      Value value = ParseValue(depth);
      members.emplace_back(std::move(name), std::move(value));
      SkipWhitespace();
      if (AtEnd()) Fail("unterminated object");
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      Expect('}');
      break;
    }
    CheckUniqueNames(members);
    return Value(std::move(members));
  }

  // O(n log n), so a huge object cannot make the check quadratic.
  void CheckUniqueNames(const Object& members) {
    if (members.size() < 2) return;
    std::vector<std::string_view> names;
    names.reserve(members.size());
    for (const auto& member : members) names.push_back(member.first);
    std::sort(names.begin(), names.end());
    auto dup = std::adjacent_find(names.begin(), names.end());
    if (dup != names.end()) {
      throw JsonError("invalid JSON: duplicate member name \"" + std::string(*dup) +
                      "\" in the object ending at byte " + std::to_string(pos_));
    }
  }

  Value ParseArray(int depth) {
    if (depth > kMaxDepth) Fail("nesting deeper than " + std::to_string(kMaxDepth));
    Expect('[');
    Array items;
    SkipWhitespace();
    if (!AtEnd() && Peek() == ']') {
      ++pos_;
      return Value(std::move(items));
    }
    while (true) {
      SkipWhitespace();
      items.push_back(ParseValue(depth));
      SkipWhitespace();
      if (AtEnd()) Fail("unterminated array");
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      Expect(']');
      break;
    }
    return Value(std::move(items));
  }

  uint32_t ParseHex4() {
    if (text_.size() - pos_ < 4) Fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = text_[pos_];
      uint32_t digit;
      if (c >= '0' && c <= '9') {
        digit = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        digit = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        digit = c - 'A' + 10;
      } else {
        Fail("invalid hex digit in \\u escape");
      }
      v = (v << 4) | digit;
      ++pos_;
    }
    return v;
  }

  // At '"'; returns the decoded string and leaves pos_ after the closing quote.
  std::string ParseString() {
    Expect('"');
    std::string out;
    while (true) {
      if (AtEnd()) Fail("unterminated string");
      unsigned char c = static_cast<unsigned char>(Peek());
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) Fail("unescaped control character in string");
      if (c == '\\') {
        ++pos_;
        if (AtEnd()) Fail("unterminated escape");
        char e = Peek();
        ++pos_;
        switch (e) {
          case '"': out.push_back('"'); break;
          case '\\': out.push_back('\\'); break;
          case '/': out.push_back('/'); break;
          case 'b': out.push_back('\b'); break;
          case 'f': out.push_back('\f'); break;
          case 'n': out.push_back('\n'); break;
          case 'r': out.push_back('\r'); break;
          case 't': out.push_back('\t'); break;
          case 'u': {
            uint32_t cp = ParseHex4();
            if (cp >= 0xDC00 && cp <= 0xDFFF) Fail("unpaired low surrogate in \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (text_.substr(pos_, 2) != "\\u") Fail("unpaired high surrogate in \\u escape");
              pos_ += 2;
              uint32_t low = ParseHex4();
              if (low < 0xDC00 || low > 0xDFFF) Fail("invalid low surrogate in \\u escape");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            AppendUtf8(cp, &out);
            break;
          }
          default:
            --pos_;
            Fail("invalid escape");
        }
        continue;
      }
      size_t len = Utf8SequenceLength(text_, pos_);
      if (len == 0) Fail("invalid UTF-8 in string");
      out.append(text_.substr(pos_, len));
      pos_ += len;
    }
  }

  // number = [ minus ] int [ frac ] [ exp ]
  double ParseNumber() {
    size_t start = pos_;
    auto digits = [&]() {
      size_t begin = pos_;
      while (!AtEnd() && Peek() >= '0' && Peek() <= '9') ++pos_;
      return pos_ - begin;
    };
    if (Peek() == '-') ++pos_;
    if (AtEnd()) Fail("truncated number");
    if (Peek() == '0') {
      ++pos_;
    } else if (digits() == 0) {
      Fail("invalid number");
    }
    if (!AtEnd() && Peek() == '.') {
      ++pos_;
      if (digits() == 0) Fail("expected digits after the decimal point");
    }
    if (!AtEnd() && (Peek() == 'e' || Peek() == 'E')) {
      ++pos_;
      if (!AtEnd() && (Peek() == '+' || Peek() == '-')) ++pos_;
      if (digits() == 0) Fail("expected digits in the exponent");
    }
    double value = 0;
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    auto [ptr, ec] = std::from_chars(first, last, value);
    if (ec == std::errc::result_out_of_range) {
      // Underflow to zero is harmless; overflow has no JSON representation.
      if (DecimalMagnitude(std::string_view(first, last - first)) <= 0) {
        return *first == '-' ? -0.0 : 0.0;
      }
      pos_ = start;
      Fail("number out of range");
    }
    if (ec != std::errc() || ptr != last || !std::isfinite(value)) {
      pos_ = start;
      Fail("invalid number");
    }
    return value;
  }

  // Roughly log10(|number|) for a grammatical number; only its sign matters
  // (it tells an overflow from an underflow), so the exponent saturates.
  static long DecimalMagnitude(std::string_view number) {
    size_t e = number.find_first_of("eE");
    std::string_view mantissa = number.substr(0, e);
    long magnitude = 0;
    size_t point = mantissa.find('.');
    std::string_view integer = mantissa.substr(0, point);
    size_t first = integer.find_first_of("123456789");
    if (first != std::string_view::npos) {
      magnitude = static_cast<long>(integer.size() - first);
    } else if (point != std::string_view::npos) {
      std::string_view fraction = mantissa.substr(point + 1);
      size_t nonzero = fraction.find_first_of("123456789");
      magnitude = -static_cast<long>(nonzero == std::string_view::npos ? fraction.size() : nonzero);
    }
    if (e != std::string_view::npos) {
      long exponent = 0;
      bool negative = false;
      for (char c : number.substr(e + 1)) {
        if (c == '-') negative = true;
        if (c >= '0' && c <= '9') exponent = std::min(exponent * 10 + (c - '0'), 1000000L);
      }
      magnitude += negative ? -exponent : exponent;
    }
    return magnitude;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

// ---- Serializer ----

void WriteString(const std::string& s, std::string* out) {
  static const char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      size_t len = Utf8SequenceLength(s, i);
      if (len == 0) throw JsonError("cannot serialize a string that is not valid UTF-8");
      out->append(s, i, len);
      i += len;
      continue;
    }
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\b': out->append("\\b"); break;
      case '\f': out->append("\\f"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (c < 0x20) {
          out->append("\\u00");
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 0xF]);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out->push_back('"');
}

void WriteNumber(double d, std::string* out) {
  if (!std::isfinite(d)) throw JsonError("cannot serialize NaN or infinity");
  char buf[64];
  std::to_chars_result r;
  constexpr double kMaxExactInteger = 9007199254740992.0;  // 2^53
  if (d == std::trunc(d) && std::fabs(d) <= kMaxExactInteger) {
    if (d == 0 && std::signbit(d)) {
      out->append("-0");
      return;
    }
    r = std::to_chars(buf, buf + sizeof(buf), static_cast<int64_t>(d));
  } else {
    // Shortest representation that parses back to the same double
    // (locale-independent, unlike printf's %.17g).
    r = std::to_chars(buf, buf + sizeof(buf), d);
  }
  out->append(buf, r.ptr);
}

class Writer {
 public:
  Writer(int indent, std::string* out) : indent_(indent), out_(out) {}

  void Write(const Value& value, int depth) {
    if (value.is_null()) {
      out_->append("null");
    } else if (value.is_bool()) {
      out_->append(value.as_bool() ? "true" : "false");
    } else if (value.is_number()) {
      WriteNumber(value.as_number(), out_);
    } else if (value.is_string()) {
      WriteString(value.as_string(), out_);
    } else if (value.is_array()) {
      const Array& items = value.as_array();
      if (items.empty()) {
        out_->append("[]");
        return;
      }
      out_->push_back('[');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out_->push_back(',');
        NewLine(depth + 1);
        Write(items[i], depth + 1);
      }
      NewLine(depth);
      out_->push_back(']');
    } else {
      const Object& members = value.as_object();
      if (members.empty()) {
        out_->append("{}");
        return;
      }
      out_->push_back('{');
      for (size_t i = 0; i < members.size(); ++i) {
        if (i > 0) out_->push_back(',');
        NewLine(depth + 1);
        WriteString(members[i].first, out_);
        out_->append(indent_ > 0 ? ": " : ":");
        Write(members[i].second, depth + 1);
      }
      NewLine(depth);
      out_->push_back('}');
    }
  }

 private:
  void NewLine(int depth) {
    if (indent_ <= 0) return;
    out_->push_back('\n');
    out_->append(static_cast<size_t>(depth) * indent_, ' ');
  }

  int indent_;
  std::string* out_;
};

}  // namespace

Value Parse(std::string_view text) { return Parser(text).ParseDocument(); }

std::string Serialize(const Value& value, int indent) {
  std::string out;
  Writer(indent, &out).Write(value, 0);
  return out;
}

}  // namespace torchcachex::json
