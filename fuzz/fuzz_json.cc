// libFuzzer target: the JSON parser.
//
// json::Parse on the input (only JsonError may escape); on success the value
// serializes (compact and pretty), both serializations parse back to an equal
// value, and serialization is a fixed point.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_util.h"
#include "util/json.h"

using namespace torchcachex;

namespace {

// Deep equality (numbers compared as doubles, -0 == 0 as JSON has one zero
// only up to sign; Serialize keeps the sign, so the bits must match too).
bool Equal(const json::Value& a, const json::Value& b) {
  if (a.is_null()) return b.is_null();
  if (a.is_bool()) return b.is_bool() && a.as_bool() == b.as_bool();
  if (a.is_number()) {
    return b.is_number() && a.as_number() == b.as_number() &&
           std::signbit(a.as_number()) == std::signbit(b.as_number());
  }
  if (a.is_string()) return b.is_string() && a.as_string() == b.as_string();
  if (a.is_array()) {
    if (!b.is_array() || a.as_array().size() != b.as_array().size()) return false;
    for (size_t i = 0; i < a.as_array().size(); ++i) {
      if (!Equal(a.as_array()[i], b.as_array()[i])) return false;
    }
    return true;
  }
  if (!b.is_object() || a.as_object().size() != b.as_object().size()) return false;
  for (size_t i = 0; i < a.as_object().size(); ++i) {
    const auto& [ka, va] = a.as_object()[i];
    const auto& [kb, vb] = b.as_object()[i];
    if (ka != kb || !Equal(va, vb)) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  json::Value value;
  try {
    value = json::Parse(text);
  } catch (const json::JsonError&) {
    return 0;
  }
  for (int indent : {0, 2}) {
    const std::string out = json::Serialize(value, indent);  // must not throw
    const json::Value reread = json::Parse(out);              // must not throw
    FUZZ_CHECK(Equal(value, reread), "round trip: " + out);
    FUZZ_CHECK(json::Serialize(reread, indent) == out, "serialization is a fixed point");
  }
  return 0;
}
