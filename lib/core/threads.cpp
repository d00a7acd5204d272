#include <tsumugi/core/threads.h>

#include <omp.h>

#include <atomic>

#include "check.h"

namespace tsumugi {

void set_num_threads(int n) {
  TSU_CHECK(n >= 1, ValueError, "[threads] thread count must be at least 1, got {}", n);
  omp_set_num_threads(n);
}

namespace {
std::atomic<int> blas_threads{0};  // 0: BLAS uses the kernels' thread count
}  // namespace

void set_blas_threads(int n) {
  TSU_CHECK(n >= 1, ValueError, "[threads] BLAS thread count must be at least 1, got {}", n);
  blas_threads = n;
}

int pinned_blas_threads() { return blas_threads; }

int num_threads() { return omp_get_max_threads(); }

}  // namespace tsumugi
