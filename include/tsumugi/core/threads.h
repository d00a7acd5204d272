#pragma once
/// The CPU thread pool: one OpenMP pool shared by BLAS and tsumugi's kernels.
namespace tsumugi {

/// Sets the threads used by tsumugi's kernels and by BLAS (n >= 1).
void set_num_threads(int n);
/// Sets the threads BLAS uses, leaving tsumugi's kernels alone. OpenBLAS may sum in an order
/// that depends on its thread count; deterministic runs pin this to one value everywhere.
void set_blas_threads(int n);
/// Threads a parallel kernel uses now.
int num_threads();

}  // namespace tsumugi
