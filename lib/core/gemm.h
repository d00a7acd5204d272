#pragma once
// Internal: matrix multiplication through CBLAS.
#include <tsumugi/core/tensor.h>

#include <cstdint>

namespace tsumugi {

/// C = alpha * A B + beta * C for 2-D views. A (M, K) and B (K, N) may be row- or column-major
/// (a transposed view becomes a BLAS transpose flag, not a copy); C (M, N) must be row-major.
void gemm(const Tensor& a, const Tensor& b, const Tensor& c, double alpha = 1.0, double beta = 0.0);

/// Raw row-major CBLAS call for float or double.
template <class T>
void gemm_raw(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
              const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

/// The BLAS thread count set by set_blas_threads, or 0 when BLAS follows the kernels' count.
int pinned_blas_threads();

}  // namespace tsumugi
