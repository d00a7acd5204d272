#pragma once
// Internal: calling a templated kernel for a runtime dtype, and converting between element types.
#include <tsumugi/core/dtype.h>

#include <cstdint>
#include <type_traits>

#include "check.h"

namespace tsumugi {

/// Storage types of the half-precision dtypes (bits only; arithmetic goes through float).
struct bf16_t { uint16_t bits; };
struct f16_t { uint16_t bits; };

/// Widens any element to double (floats) or int64 (integers).
template <class T>
inline auto widen(T value) {
  if constexpr (std::is_same_v<T, bf16_t>) return static_cast<double>(bf16_to_float(value.bits));
  else if constexpr (std::is_same_v<T, f16_t>) return static_cast<double>(f16_to_float(value.bits));
  else if constexpr (std::is_floating_point_v<T>) return static_cast<double>(value);
  else return static_cast<int64_t>(value);
}

/// Converts a widened value to element type T (round to nearest even for the half types).
template <class T, class W>
inline T narrow_to(W value) {
  if constexpr (std::is_same_v<T, bf16_t>) return bf16_t{float_to_bf16(static_cast<float>(value))};
  else if constexpr (std::is_same_v<T, f16_t>) return f16_t{float_to_f16(static_cast<float>(value))};
  else if constexpr (std::is_same_v<T, bool>) return value != 0;
  else return static_cast<T>(value);
}

template <class To, class From>
inline To convert(From value) {
  if constexpr (std::is_same_v<To, From>) return value;
  else return narrow_to<To>(widen(value));
}

/// Calls f(T{}) with T the storage type of `dtype`.
template <class F>
decltype(auto) dispatch_any(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::bf16: return f(bf16_t{});
    case DType::f16: return f(f16_t{});
    case DType::i32: return f(int32_t{});
    case DType::i64: return f(int64_t{});
    case DType::u16: return f(uint16_t{});
    case DType::u32: return f(uint32_t{});
    case DType::u8: return f(uint8_t{});
    case DType::boolean: return f(bool{});
  }
  TSU_FAIL(ValueError, "[dispatch] invalid dtype");
}

/// Calls f(T{}) for the CPU compute types f32 and f64; other dtypes are an error naming `op`.
template <class F>
decltype(auto) dispatch_float(DType dtype, const char* op, F&& f) {
  switch (dtype) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    default:
      TSU_FAIL(ValueError, "[{}] dtype {} is not supported on the cpu (use f32 or f64)", op, dtype_name(dtype));
  }
}

/// Calls f(T{}) for integer index dtypes (i32, i64, u16, u32).
template <class F>
decltype(auto) dispatch_index(DType dtype, const char* op, F&& f) {
  switch (dtype) {
    case DType::i32: return f(int32_t{});
    case DType::i64: return f(int64_t{});
    case DType::u16: return f(uint16_t{});
    case DType::u32: return f(uint32_t{});
    default:
      TSU_FAIL(ValueError, "[{}] indices must be an integer dtype (i32, i64, u16, u32), got {}", op,
               dtype_name(dtype));
  }
}

}  // namespace tsumugi
