// Storage and the allocators behind it.
//
// The CPU allocator caches freed blocks by size class: a training step allocates the same sizes
// every iteration, and handing them back to the kernel would cost a page fault per 4 KiB on the
// next step. Size classes are powers of two split into 8 steps (at most 12.5% waste).
#include "storage.h"

#include <tsumugi/core/tensor.h>

#include <sys/resource.h>

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "check.h"

#ifdef TSUMUGI_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace tsumugi {
namespace {

constexpr size_t kAlignment = 64;

size_t size_class(size_t nbytes) {
  if (nbytes <= 4096) return (nbytes + kAlignment - 1) / kAlignment * kAlignment;
  const int high_bit = 63 - std::countl_zero(nbytes);  // 2^high_bit <= nbytes
  const size_t step = size_t{1} << (high_bit - 3);
  return (nbytes + step - 1) / step * step;
}

class CpuCachingAllocator {
 public:
  void* allocate(size_t nbytes) {
    if (nbytes == 0) return nullptr;
    const size_t size = size_class(nbytes);
    {
      std::lock_guard lock(mutex_);
      auto& list = free_[size];
      if (!list.empty()) {
        void* ptr = list.back();
        list.pop_back();
        note_allocated(size);
        return ptr;
      }
    }
    void* ptr = std::aligned_alloc(kAlignment, size);
    if (ptr == nullptr) {
      release_cached();
      ptr = std::aligned_alloc(kAlignment, size);
    }
    TSU_CHECK(ptr != nullptr, Error, "[alloc] out of memory allocating {} bytes on the cpu", size);
    std::lock_guard lock(mutex_);
    stats_.reserved += static_cast<int64_t>(size);
    note_allocated(size);
    return ptr;
  }

  void free(void* ptr, size_t nbytes) {
    if (ptr == nullptr) return;
    const size_t size = size_class(nbytes);
    std::lock_guard lock(mutex_);
    free_[size].push_back(ptr);
    stats_.allocated -= static_cast<int64_t>(size);
  }

  void release_cached() {
    std::lock_guard lock(mutex_);
    for (auto& [size, list] : free_) {
      for (void* ptr : list) std::free(ptr);
      stats_.reserved -= static_cast<int64_t>(size * list.size());
      list.clear();
    }
  }

  MemoryStats stats() {
    std::lock_guard lock(mutex_);
    return stats_;
  }

 private:
  void note_allocated(size_t size) {
    stats_.allocated += static_cast<int64_t>(size);
    stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
  }

  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;
  MemoryStats stats_;
};

CpuCachingAllocator& cpu_allocator() {
  // Never destroyed: tensors in static objects may be freed after it would be.
  static auto* allocator = new CpuCachingAllocator();
  return *allocator;
}


}  // namespace

void* cpu_allocate(size_t nbytes) { return cpu_allocator().allocate(nbytes); }
void cpu_free(void* ptr, size_t nbytes) { cpu_allocator().free(ptr, nbytes); }

#ifndef TSUMUGI_WITH_CUDA
void* cuda_allocate(size_t, int) {
  TSU_FAIL(NotImplementedError, "[alloc] this build of tsumugi has no CUDA support (TSUMUGI_CUDA=OFF)");
}
void cuda_free(void*, size_t, int) {}
MemoryStats cuda_memory_stats(int) { return {}; }
void cuda_empty_cache(int) {}
namespace cuda {
void* pinned_allocate(size_t) {
  TSU_FAIL(NotImplementedError, "[pin_memory] this build of tsumugi has no CUDA support (TSUMUGI_CUDA=OFF)");
}
void pinned_free(void*, size_t) {}
}  // namespace cuda
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes, bool) {
  TSU_CHECK(dst_device.is_cpu() && src_device.is_cpu(), NotImplementedError,
            "[copy] this build of tsumugi has no CUDA support (TSUMUGI_CUDA=OFF)");
  if (nbytes != 0) std::memcpy(dst, src, nbytes);
}
#endif

Storage::Storage(size_t nbytes, Device device, bool pinned) : nbytes_(nbytes), device_(device), pinned_(pinned) {
  if (pinned) {
    TSU_CHECK(device.is_cpu(), ValueError, "[alloc] only host memory can be pinned, not {}", device.str());
    TSU_CHECK(cuda_device_count() > 0, ValueError, "[pin_memory] pinned memory needs a CUDA device");
    data_ = pinned_allocate(nbytes);
  } else if (device.is_cpu()) {
    data_ = cpu_allocate(nbytes);
  } else {
    TSU_CHECK(device.index < cuda_device_count() || !cuda_built(), ValueError,
              "[alloc] device {} does not exist ({} CUDA devices)", device.str(), cuda_device_count());
    data_ = cuda_allocate(nbytes, device.index);
  }
}

Storage::~Storage() {
  if (pinned_) pinned_free(data_, nbytes_);
  else if (device_.is_cpu()) cpu_free(data_, nbytes_);
  else cuda_free(data_, nbytes_, device_.index);
}

MemoryStats memory_stats(Device device) {
  if (device.is_cpu()) return cpu_allocator().stats();
  return cuda_device_count() > 0 ? cuda_memory_stats(device.index) : MemoryStats{};
}

void empty_cache(Device device) {
  if (device.is_cpu()) cpu_allocator().release_cached();
  else if (cuda_device_count() > 0) cuda_empty_cache(device.index);
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace tsumugi
