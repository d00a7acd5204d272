#pragma once
/// Element types and the conversions between them.
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tsumugi {

/// Element type of a tensor. f64 exists for gradient checks and reference computations.
enum class DType : uint8_t { f32, f64, bf16, f16, i32, i64, u16, u32, u8, boolean };

/// Bytes per element.
size_t dtype_size(DType dtype);
/// Short name as printed and stored: "f32", "bf16", "bool", ...
std::string_view dtype_name(DType dtype);
/// Parses a short name ("f32", "bfloat16" and "float32" are accepted too); throws ValueError.
DType parse_dtype(std::string_view name);
/// True for f32, f64, bf16 and f16.
bool is_floating(DType dtype);

/// bfloat16 bits from a float, rounding to nearest even (NaN stays NaN).
uint16_t float_to_bf16(float value);
/// The float exactly represented by bfloat16 bits.
float bf16_to_float(uint16_t bits);
/// IEEE half bits from a float, rounding to nearest even, with subnormals and overflow to inf.
uint16_t float_to_f16(float value);
/// The float exactly represented by IEEE half bits.
float f16_to_float(uint16_t bits);

/// The DType of a C++ element type: dtype_of<float> == DType::f32.
template <class T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<uint16_t>() { return DType::u16; }
template <> constexpr DType dtype_of<uint32_t>() { return DType::u32; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }
template <> constexpr DType dtype_of<bool>() { return DType::boolean; }

}  // namespace tsumugi
