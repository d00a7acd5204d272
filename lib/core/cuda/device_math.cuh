#pragma once
// Internal, CUDA only: element types on the device, conversions through float, strided indexing,
// and dtype dispatch for kernels. Included by the .cu files beside each op's CPU kernel.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <tsumugi/core/dtype.h>
#include <tsumugi/core/tensor.h>

#include <cstdint>
#include <string>

#include "runtime.h"

// fmt's compile-time format strings do not pass nvcc, so .cu files never include check.h;
// they build messages with std::string and throw through these.
#define TSU_CUDA_REQUIRE(cond, ErrorType, message)   \
  do {                                               \
    if (!(cond)) throw ::tsumugi::ErrorType(message); \
  } while (0)

namespace tsumugi::cuda {

using bf16 = __nv_bfloat16;
using f16 = __half;

/// Loads any element as the float (or double) it holds; compute happens in float.
template <class T>
__device__ __forceinline__ float to_float(T v) {
  if constexpr (std::is_same_v<T, bf16>) return __bfloat162float(v);
  else if constexpr (std::is_same_v<T, f16>) return __half2float(v);
  else return static_cast<float>(v);
}
/// Rounds a float to element type T (round to nearest even for the half types).
template <class T>
__device__ __forceinline__ T from_float(float v) {
  if constexpr (std::is_same_v<T, bf16>) return __float2bfloat16_rn(v);
  else if constexpr (std::is_same_v<T, f16>) return __float2half_rn(v);
  else return static_cast<T>(v);
}

/// Accumulator type: double for double, float for everything else.
template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class A, class T>
__device__ __forceinline__ A load_as(const T* p) {
  if constexpr (std::is_same_v<A, double>) return static_cast<double>(*p);
  else return to_float(*p);
}
template <class T, class A>
__device__ __forceinline__ void store_from(T* p, A v) {
  if constexpr (std::is_same_v<T, double>) *p = static_cast<double>(v);
  else *p = from_float<T>(static_cast<float>(v));
}

/// Shape and strides of up to 8 dimensions, passed to kernels by value.
constexpr int kMaxDims = 8;
struct StridedLayout {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};

  /// Element offset of the i-th element in row-major order of `shape`.
  __device__ __forceinline__ int64_t offset(int64_t i) const {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t s = shape[d];
      off += (i % s) * strides[d];
      i /= s;
    }
    return off;
  }
};

/// The layout of `t` viewed with `shape` (t broadcast to shape: missing or size-1 dims get stride 0).
StridedLayout layout_of(const Tensor& t, const Shape& shape);
inline StridedLayout layout_of(const Tensor& t) { return layout_of(t, t.shape()); }

/// Calls f(T{}) for the CUDA float types f32, bf16, f16 (and f64, for tests against the CPU).
template <class F>
decltype(auto) dispatch_float(DType dtype, const char* op, F&& f) {
  switch (dtype) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::bf16: return f(bf16{});
    case DType::f16: return f(f16{});
    default:
      throw ValueError(std::string("[") + op + "] dtype " + std::string(dtype_name(dtype)) +
                       " is not supported on CUDA (use f32, bf16 or f16)");
  }
}

/// Calls f(T{}) for every dtype, with bf16/f16 as their CUDA types.
template <class F>
decltype(auto) dispatch_any(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::bf16: return f(bf16{});
    case DType::f16: return f(f16{});
    case DType::i32: return f(int32_t{});
    case DType::i64: return f(int64_t{});
    case DType::u16: return f(uint16_t{});
    case DType::u32: return f(uint32_t{});
    case DType::u8: return f(uint8_t{});
    case DType::boolean: return f(bool{});
  }
  throw ValueError("[cuda] invalid dtype");
}

/// Calls f(T{}) for integer index dtypes.
template <class F>
decltype(auto) dispatch_index(DType dtype, const char* op, F&& f) {
  switch (dtype) {
    case DType::i32: return f(int32_t{});
    case DType::i64: return f(int64_t{});
    case DType::u16: return f(uint16_t{});
    case DType::u32: return f(uint32_t{});
    default:
      throw ValueError(std::string("[") + op + "] indices must be an integer dtype (i32, i64, u16, u32), got " +
                       std::string(dtype_name(dtype)));
  }
}

/// Typed device pointer of a tensor (bf16/f16 as their CUDA types).
template <class T>
T* ptr(const Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

/// The stream of the device `t` lives on, with that device made current.
inline cudaStream_t stream_of(const Tensor& t) {
  set_device(t.device().index);
  return stream(t.device().index);
}

}  // namespace tsumugi::cuda
