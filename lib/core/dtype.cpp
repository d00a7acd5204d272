#include <tsumugi/core/dtype.h>

#include <bit>
#include <cmath>
#include <string>

#include "check.h"

namespace tsumugi {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f64: case DType::i64: return 8;
    case DType::f32: case DType::i32: case DType::u32: return 4;
    case DType::bf16: case DType::f16: case DType::u16: return 2;
    case DType::u8: case DType::boolean: return 1;
  }
  return 0;
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u16: return "u16";
    case DType::u32: return "u32";
    case DType::u8: return "u8";
    case DType::boolean: return "bool";
  }
  return "?";
}

DType parse_dtype(std::string_view name) {
  struct Alias { std::string_view name; DType dtype; };
  static constexpr Alias aliases[] = {
      {"f32", DType::f32}, {"float32", DType::f32}, {"fp32", DType::f32},
      {"f64", DType::f64}, {"float64", DType::f64}, {"fp64", DType::f64},
      {"bf16", DType::bf16}, {"bfloat16", DType::bf16},
      {"f16", DType::f16}, {"float16", DType::f16}, {"fp16", DType::f16},
      {"i32", DType::i32}, {"int32", DType::i32}, {"i64", DType::i64}, {"int64", DType::i64},
      {"u16", DType::u16}, {"uint16", DType::u16}, {"u32", DType::u32}, {"uint32", DType::u32},
      {"u8", DType::u8}, {"uint8", DType::u8}, {"bool", DType::boolean}};
  for (const Alias& alias : aliases)
    if (alias.name == name) return alias.dtype;
  TSU_FAIL(ValueError, "[dtype] unknown dtype '{}' (expected f32, f64, bf16, f16, i32, i64, u16, u32, u8 or bool)",
           name);
}

bool is_floating(DType dtype) {
  return dtype == DType::f32 || dtype == DType::f64 || dtype == DType::bf16 || dtype == DType::f16;
}

uint16_t float_to_bf16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);  // stay a (quiet) NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>(bits >> 16);
}

float bf16_to_float(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

uint16_t float_to_f16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) {  // inf or NaN
    if (magnitude == 0x7f800000u) return sign | 0x7c00u;
    return static_cast<uint16_t>(sign | 0x7e00u | ((magnitude >> 13) & 0x1ffu));
  }
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;  // 65520 and above round to inf
  if (magnitude < 0x38800000u) {                        // below 2^-14: a subnormal half
    // Scaling by 2^24 is exact; nearbyint rounds to nearest even in the default mode.
    const float scaled = std::bit_cast<float>(magnitude) * 16777216.0f;
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(scaled)));
  }
  magnitude += 0xfffu + ((magnitude >> 13) & 1u);  // round to nearest even at bit 13
  magnitude -= 112u << 23;                          // rebias the exponent from 127 to 15
  return static_cast<uint16_t>(sign | (magnitude >> 13));
}

float f16_to_float(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float value = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -value : value;
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

}  // namespace tsumugi
