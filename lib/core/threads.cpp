#include <tsumugi/core/threads.h>

#include <cblas.h>
#include <omp.h>

#include "check.h"

namespace tsumugi {

void set_num_threads(int n) {
  TSU_CHECK(n >= 1, ValueError, "[threads] thread count must be at least 1, got {}", n);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace tsumugi
