#pragma once
// Internal: CUDA kernels of the tensor itself (copies, fills, dtype conversion, random numbers).
// Declared without CUDA types, so that .cpp files can call them; defined in the .cu files beside.
// Every launcher runs on the tensor device's tsumugi stream.
#include <tsumugi/core/tensor.h>

#include <cstdint>

namespace tsumugi::cuda {

/// dst[i] = convert(src[i]) for any dtypes and strides; src is broadcast to dst's shape.
void copy_strided(const Tensor& dst, const Tensor& src);
/// Every element of dst (any strides) set to `value` converted to its dtype.
void fill(const Tensor& dst, double value);

}  // namespace tsumugi::cuda
