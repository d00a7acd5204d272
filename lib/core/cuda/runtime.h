#pragma once
// Internal: the CUDA runtime as tsumugi uses it. Only compiled when TSUMUGI_WITH_CUDA is defined.
//
// One stream per device carries every tsumugi launch and copy on that device, so work is ordered
// without events, and memory freed on the stream can be reused on it at once (stream order).
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace tsumugi::cuda {

/// Throws tsumugi::Error naming `what` and the CUDA error when `status` is not cudaSuccess.
void check(cudaError_t status, const char* what, const char* file, int line);

/// The stream every tsumugi kernel and copy on `device` is launched on (created on first use).
cudaStream_t stream(int device);
/// The stream of the current device (cudaGetDevice).
cudaStream_t current_stream();
/// Makes `device` current for this thread.
void set_device(int device);
/// Waits for everything launched on `device`'s stream.
void synchronize(int device);

/// Number of blocks of `threads` threads that cover n elements, capped for grid-stride loops.
inline unsigned blocks_for(int64_t n, int threads, int64_t cap = 65535LL * 16) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks < cap ? blocks : cap);
}

/// Number of streaming multiprocessors of `device`.
int multiprocessor_count(int device);

// Pinned (page-locked) host memory, cached like the CPU allocator. A block freed while an
// asynchronous copy may still read it is reused only after that copy has finished.
void* pinned_allocate(size_t nbytes);
void pinned_free(void* ptr, size_t nbytes);
/// Marks that an asynchronous copy on `device`'s stream reads or writes the pinned block `ptr`.
void pinned_record_use(void* ptr, int device);

}  // namespace tsumugi::cuda

#define TSU_CUDA_CHECK(expr) ::tsumugi::cuda::check((expr), #expr, __FILE__, __LINE__)
/// After a kernel launch: reports a bad launch configuration at the launch site.
#define TSU_CUDA_CHECK_LAUNCH() ::tsumugi::cuda::check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
