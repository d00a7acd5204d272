#pragma once
// Internal: iterating over N operands that share a shape but not strides, one row at a time.
// Dimensions that are contiguous in every operand are merged first, so a contiguous tensor is one
// long row. `f(offsets, n, inner_strides)` gets each operand's element offset of the row start.
#include <tsumugi/core/tensor.h>

#include <algorithm>
#include <array>
#include <cstdint>

#include <omp.h>

namespace tsumugi {

template <size_t N>
struct StridedLayout {
  Shape shape;
  std::array<Strides, N> strides;
};

template <size_t N>
StridedLayout<N> collapse_dims(const Shape& shape, const std::array<Strides, N>& strides) {
  StridedLayout<N> out;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool mergeable = !out.shape.empty();
    for (size_t i = 0; i < N && mergeable; ++i)
      mergeable = out.strides[i].back() == strides[i][d] * shape[d];
    if (mergeable) {
      out.shape.back() *= shape[d];
      for (size_t i = 0; i < N; ++i) out.strides[i].back() = strides[i][d];
    } else {
      out.shape.push_back(shape[d]);
      for (size_t i = 0; i < N; ++i) out.strides[i].push_back(strides[i][d]);
    }
  }
  if (out.shape.empty()) {  // a single element
    out.shape.push_back(1);
    for (size_t i = 0; i < N; ++i) out.strides[i].push_back(0);
  }
  return out;
}

/// Runs f over all rows; rows run in parallel when there is enough work.
template <size_t N, class F>
void for_each_row(const Shape& shape, const std::array<Strides, N>& strides, F&& f) {
  const StridedLayout<N> layout = collapse_dims<N>(shape, strides);
  const int64_t ndim = static_cast<int64_t>(layout.shape.size());
  const int64_t inner = layout.shape.back();
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < ndim; ++d) rows *= layout.shape[d];
  std::array<int64_t, N> inner_strides;
  for (size_t i = 0; i < N; ++i) inner_strides[i] = layout.strides[i].back();
  if (rows == 1 && inner >= 65536) {  // one long row: split it
    constexpr int64_t kChunk = 16384;
    const int64_t pieces = (inner + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
    for (int64_t piece = 0; piece < pieces; ++piece) {
      std::array<int64_t, N> offsets;
      for (size_t i = 0; i < N; ++i) offsets[i] = piece * kChunk * inner_strides[i];
      f(offsets, std::min(kChunk, inner - piece * kChunk), inner_strides);
    }
    return;
  }
  const bool parallel = rows > 1 && rows * inner >= 32768;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t row = 0; row < rows; ++row) {
    std::array<int64_t, N> offsets{};
    int64_t rest = row;
    for (int64_t d = ndim - 2; d >= 0; --d) {
      const int64_t index = rest % layout.shape[d];
      rest /= layout.shape[d];
      for (size_t i = 0; i < N; ++i) offsets[i] += index * layout.strides[i][d];
    }
    f(offsets, inner, inner_strides);
  }
}

}  // namespace tsumugi
