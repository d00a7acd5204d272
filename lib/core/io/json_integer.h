#pragma once
// Internal: an integer read from a JSON file (trainer.json, manifest.json). nlohmann's get<T>()
// converts whatever number it holds: a float out of T's range (1e300, written by someone else)
// is undefined behaviour, -1 wraps to 2^64 - 1 and 3.7 becomes 3. Here only an integer number
// that T can hold is accepted; anything else is an IOError naming `what`.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <string_view>
#include <utility>

#include "../check.h"

namespace tsumugi {

template <class T>
T json_integer(const nlohmann::json& value, std::string_view what) {
  static_assert(std::is_integral_v<T>);
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (std::in_range<T>(u)) return static_cast<T>(u);
  } else if (value.is_number_integer()) {
    const int64_t i = value.get<int64_t>();
    if (std::in_range<T>(i)) return static_cast<T>(i);
  }
  TSU_FAIL(IOError, "{} is {}, not an integer in [{}, {}]", what, value.dump(), std::numeric_limits<T>::min(),
           std::numeric_limits<T>::max());
}

}  // namespace tsumugi
