#pragma once
// Internal: a block of device memory owned by one or more tensors.
#include <tsumugi/core/device.h>
#include <tsumugi/core/tensor.h>

#include <cstddef>

namespace tsumugi {

/// Memory from the caching allocator of its device; returned there when destroyed.
class Storage {
 public:
  /// `pinned`: page-locked host memory (device must be the CPU), for asynchronous copies.
  Storage(size_t nbytes, Device device, bool pinned = false);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  bool pinned() const { return pinned_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  bool pinned_ = false;
};

// CPU caching allocator (64-byte aligned; reuses freed blocks of the same size class).
void* cpu_allocate(size_t nbytes);
void cpu_free(void* ptr, size_t nbytes);

// CUDA memory; these throw NotImplementedError in a build without CUDA.
void* cuda_allocate(size_t nbytes, int device);
void cuda_free(void* ptr, size_t nbytes, int device);
MemoryStats cuda_memory_stats(int device);
void cuda_empty_cache(int device);
/// Page-locked host memory (cached; see cuda/allocator.cpp).
namespace cuda {
void* pinned_allocate(size_t nbytes);
void pinned_free(void* ptr, size_t nbytes);
}  // namespace cuda
using cuda::pinned_allocate;
using cuda::pinned_free;
/// Copies between any two devices on the device's tsumugi stream. Waits for the copy unless
/// `non_blocking`, which the caller may ask for only when the host side is pinned memory.
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes,
                bool non_blocking = false);

}  // namespace tsumugi
