// A small JSON value, parser and serializer (RFC 8259), for schema.json and
// segment metadata. Objects keep their insertion order. The parser treats its
// input as untrusted: nesting depth is limited and errors throw JsonError.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace torchcachex::json {

class JsonError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Value;
using Array = std::vector<Value>;
using Object = std::vector<std::pair<std::string, Value>>;  // insertion order

class Value {
 public:
  Value() = default;                       // null
  Value(std::nullptr_t) {}
  Value(bool b) : v_(b) {}
  Value(int64_t i) : v_(static_cast<double>(i)) {}
  Value(int i) : v_(static_cast<double>(i)) {}
  Value(double d) : v_(d) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(Array a) : v_(std::move(a)) {}
  Value(Object o) : v_(std::move(o)) {}

  bool is_null() const { return std::holds_alternative<std::monostate>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_number() const { return std::holds_alternative<double>(v_); }
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  bool is_array() const { return std::holds_alternative<Array>(v_); }
  bool is_object() const { return std::holds_alternative<Object>(v_); }

  // Accessors throw JsonError("expected <type>") on a type mismatch.
  bool as_bool() const;
  double as_number() const;
  const std::string& as_string() const;
  const Array& as_array() const;
  const Object& as_object() const;
  Array& as_array();
  Object& as_object();

  // Object member lookup: nullptr if absent (or if this is not an object).
  const Value* find(std::string_view key) const;
  // Appends or replaces a member (this must be an object or null).
  void set(std::string key, Value value);

 private:
  std::variant<std::monostate, bool, double, std::string, Array, Object> v_;
};

// Parses one JSON document (surrounding whitespace allowed). Throws JsonError
// with the byte offset of the problem. Depth is limited to 256.
Value Parse(std::string_view text);

// Compact serialization; `indent` > 0 pretty-prints with that many spaces.
// Integral numbers are written without a fraction; strings are escaped so
// the output is valid UTF-8 JSON.
std::string Serialize(const Value& value, int indent = 0);

}  // namespace torchcachex::json
