// Copies with dtype conversion over any strides, and fills: the CUDA side of Tensor::copy_,
// contiguous(), to(dtype) and fill_. CPU reference: copy_cpu and Tensor::fill_ in tensor.cpp.
#include "device_math.cuh"
#include "kernels.h"

namespace tsumugi::cuda {

StridedLayout layout_of(const Tensor& t, const Shape& shape) {
  const int ndim = static_cast<int>(shape.size());
  TSU_CUDA_REQUIRE(ndim <= kMaxDims, ValueError,
                   "[cuda] tensors of more than " + std::to_string(kMaxDims) + " dimensions are not supported");
  StridedLayout layout;
  layout.ndim = ndim;
  const int offset = ndim - static_cast<int>(t.dim());
  for (int d = 0; d < ndim; ++d) {
    layout.shape[d] = shape[d];
    const int td = d - offset;
    layout.strides[d] = (td < 0 || t.shape()[td] == 1) ? 0 : t.strides()[td];
  }
  return layout;
}

namespace {

template <class A, class T>
__device__ __forceinline__ A load_any(const T* p) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) return static_cast<A>(to_float(*p));
  else return static_cast<A>(*p);
}
template <class T, class A>
__device__ __forceinline__ T store_any(A v) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) return from_float<T>(static_cast<float>(v));
  else if constexpr (std::is_same_v<T, bool>) return v != A(0);
  else return static_cast<T>(v);
}

// Through double keeps i64 up to 2^53 and every float exactly; integers go through int64.
template <class D, class S>
__device__ __forceinline__ D convert_element(S v) {
  if constexpr (std::is_same_v<D, S>) return v;
  else if constexpr (std::is_integral_v<S> && std::is_integral_v<D>) return static_cast<D>(static_cast<int64_t>(v));
  else if constexpr (std::is_floating_point_v<D> || std::is_same_v<D, bf16> || std::is_same_v<D, f16>)
    return store_any<D>(load_any<double>(&v));
  else return store_any<D>(static_cast<int64_t>(load_any<double>(&v)));
}

template <class D, class S>
__global__ void copy_kernel(D* dst, StridedLayout dl, const S* src, StridedLayout sl, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[dl.offset(i)] = convert_element<D>(src[sl.offset(i)]);
}

template <class D, class S>
__global__ void copy_contiguous_kernel(D* dst, const S* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = convert_element<D>(src[i]);
}

template <class T>
__global__ void fill_kernel(T* dst, StridedLayout dl, T value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[dl.offset(i)] = value;
}

template <class T>
T host_value(double v) {
  if constexpr (std::is_same_v<T, bf16>) return __float2bfloat16_rn(static_cast<float>(v));
  else if constexpr (std::is_same_v<T, f16>) return __float2half_rn(static_cast<float>(v));
  else if constexpr (std::is_same_v<T, bool>) return v != 0;
  else return static_cast<T>(v);
}

}  // namespace

void copy_strided(const Tensor& dst, const Tensor& src) {
  TSU_CUDA_REQUIRE(dst.device().is_cuda() && src.device() == dst.device(), ValueError,
                   "[copy_] both tensors must be on the same CUDA device (" + dst.device().str() + " and " +
                       src.device().str() + ")");
  const int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t s = stream_of(dst);
  const bool flat = dst.is_contiguous() && src.is_contiguous() && src.numel() == n;
  const StridedLayout dl = layout_of(dst);
  const StridedLayout sl = layout_of(src, dst.shape());
  dispatch_any(dst.dtype(), [&](auto dtag) {
    using D = decltype(dtag);
    dispatch_any(src.dtype(), [&](auto stag) {
      using S = decltype(stag);
      if (flat && std::is_same_v<D, S>) {
        TSU_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), dst.nbytes(), cudaMemcpyDeviceToDevice, s));
      } else if (flat) {
        copy_contiguous_kernel<<<blocks_for(n, 256), 256, 0, s>>>(ptr<D>(dst), ptr<const S>(src), n);
        TSU_CUDA_CHECK_LAUNCH();
      } else {
        copy_kernel<<<blocks_for(n, 256), 256, 0, s>>>(ptr<D>(dst), dl, ptr<const S>(src), sl, n);
        TSU_CUDA_CHECK_LAUNCH();
      }
    });
  });
}

void fill(const Tensor& dst, double value) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t s = stream_of(dst);
  const StridedLayout dl = layout_of(dst);
  dispatch_any(dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    fill_kernel<<<blocks_for(n, 256), 256, 0, s>>>(ptr<T>(dst), dl, host_value<T>(value), n);
    TSU_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tsumugi::cuda
