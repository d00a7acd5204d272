#pragma once
// Internal: a block of device memory owned by one or more tensors.
#include <tsumugi/core/device.h>

#include <cstddef>

namespace tsumugi {

/// Memory from the caching allocator of its device; returned there when destroyed.
class Storage {
 public:
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
};

// CPU caching allocator (64-byte aligned; reuses freed blocks of the same size class).
void* cpu_allocate(size_t nbytes);
void cpu_free(void* ptr, size_t nbytes);

// CUDA memory; these throw NotImplementedError in a build without CUDA.
void* cuda_allocate(size_t nbytes, int device);
void cuda_free(void* ptr, size_t nbytes, int device);
/// Copies between any two devices (host <-> device, device <-> device, host <-> host).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);

}  // namespace tsumugi
