// The CUDA caching allocator, pinned host buffers and the per-device streams.
//
// cudaMalloc and cudaFree synchronise the device and cost tens of microseconds, and a training
// step allocates thousands of activations of the same few sizes; so freed blocks are kept in free
// lists keyed by (stream, size class) and handed out again. Reuse on the same stream needs no
// synchronisation: work queued before the free finishes before work queued after the reuse.
#include <fmt/format.h>

#include <tsumugi/core/tensor.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "../check.h"
#include "../storage.h"
#include "runtime.h"

namespace tsumugi {
namespace cuda {

void check(cudaError_t status, const char* what, const char* file, int line) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // clear a sticky-free error so that later calls can report their own
  const char* base = file;
  for (const char* p = file; *p; ++p)
    if (*p == '/') base = p + 1;
  TSU_FAIL(Error, "[cuda] {} failed: {} ({}:{})", what, cudaGetErrorString(status), base, line);
}

namespace {
constexpr int kMaxDevices = 64;

struct DeviceState {
  std::once_flag once;
  cudaStream_t stream = nullptr;
  int multiprocessors = 0;
};
DeviceState& device_state(int device) {
  static DeviceState states[kMaxDevices];
  TSU_CHECK(device >= 0 && device < kMaxDevices, ValueError, "[cuda] device index {} out of range", device);
  DeviceState& state = states[device];
  std::call_once(state.once, [&] {
    int previous = 0;
    TSU_CUDA_CHECK(cudaGetDevice(&previous));
    TSU_CUDA_CHECK(cudaSetDevice(device));
    TSU_CUDA_CHECK(cudaStreamCreateWithFlags(&state.stream, cudaStreamNonBlocking));
    TSU_CUDA_CHECK(cudaDeviceGetAttribute(&state.multiprocessors, cudaDevAttrMultiProcessorCount, device));
    TSU_CUDA_CHECK(cudaSetDevice(previous));
  });
  return state;
}
}  // namespace

cudaStream_t stream(int device) { return device_state(device).stream; }
cudaStream_t current_stream() {
  int device = 0;
  TSU_CUDA_CHECK(cudaGetDevice(&device));
  return stream(device);
}
void set_device(int device) { TSU_CUDA_CHECK(cudaSetDevice(device)); }
void synchronize(int device) { TSU_CUDA_CHECK(cudaStreamSynchronize(stream(device))); }
int multiprocessor_count(int device) { return device_state(device).multiprocessors; }

namespace {

// Small blocks round to 512 bytes; larger ones to an eighth of their power of two, so that at
// most 12.5% is wasted and a handful of classes cover a model's activations.
size_t device_size_class(size_t nbytes) {
  if (nbytes <= (size_t{1} << 20)) return (nbytes + 511) / 512 * 512;
  const int high_bit = 63 - std::countl_zero(nbytes);
  const size_t step = size_t{1} << (high_bit - 3);
  return (nbytes + step - 1) / step * step;
}

class DeviceCachingAllocator {
 public:
  void* allocate(size_t nbytes, int device) {
    if (nbytes == 0) return nullptr;
    const size_t size = device_size_class(nbytes);
    cudaStream_t s = stream(device);
    std::lock_guard lock(mutex_);
    auto& list = free_[{s, size}];
    void* ptr = nullptr;
    if (!list.empty()) {
      ptr = list.back();
      list.pop_back();
    } else {
      set_device(device);
      cudaError_t status = cudaMalloc(&ptr, size);
      if (status == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        release_cached_locked(device);  // fragmentation across size classes: give it all back, retry
        status = cudaMalloc(&ptr, size);
      }
      if (status != cudaSuccess) {
        cudaGetLastError();
        const Stats& st = stats_[device];
        TSU_FAIL(Error, "[cuda] out of memory on cuda:{} allocating {:.1f} MiB ({:.1f} MiB in use by tensors, "
                 "{:.1f} MiB reserved): {}", device, size / 1048576.0, st.allocated / 1048576.0,
                 st.reserved / 1048576.0, cudaGetErrorString(status));
      }
      stats_[device].reserved += static_cast<int64_t>(size);
      owner_[ptr] = Block{size, s, device};
    }
    Stats& st = stats_[device];
    st.allocated += static_cast<int64_t>(size);
    st.peak = std::max(st.peak, st.allocated);
    return ptr;
  }

  void free(void* ptr) {
    if (ptr == nullptr) return;
    std::lock_guard lock(mutex_);
    const Block& block = owner_.at(ptr);
    stats_[block.device].allocated -= static_cast<int64_t>(block.size);
    free_[{block.stream, block.size}].push_back(ptr);
  }

  MemoryStats stats(int device) {
    std::lock_guard lock(mutex_);
    const Stats& st = stats_[device];
    return {st.allocated, st.reserved, st.peak};
  }

  void release_cached(int device) {
    std::lock_guard lock(mutex_);
    release_cached_locked(device);
  }

 private:
  struct Block {
    size_t size;
    cudaStream_t stream;
    int device;
  };
  struct Stats {
    int64_t allocated = 0, reserved = 0, peak = 0;
  };

  void release_cached_locked(int device) {
    set_device(device);
    TSU_CUDA_CHECK(cudaDeviceSynchronize());
    for (auto& [key, list] : free_) {
      for (auto it = list.begin(); it != list.end();) {
        const Block block = owner_.at(*it);
        if (block.device != device) {
          ++it;
          continue;
        }
        cudaFree(*it);
        stats_[device].reserved -= static_cast<int64_t>(block.size);
        owner_.erase(*it);
        it = list.erase(it);
      }
    }
  }

  std::mutex mutex_;
  std::map<std::pair<cudaStream_t, size_t>, std::vector<void*>> free_;
  std::unordered_map<void*, Block> owner_;
  std::unordered_map<int, Stats> stats_;
};

DeviceCachingAllocator& device_allocator() {
  static auto* allocator = new DeviceCachingAllocator();  // never destroyed: storages outlive statics
  return *allocator;
}

// Pinned host memory. Each block remembers the last asynchronous copy that used it (an event);
// a freed block is handed out again only once that event has completed.
class PinnedAllocator {
 public:
  void* allocate(size_t nbytes) {
    if (nbytes == 0) return nullptr;
    const size_t size = device_size_class(nbytes);
    std::lock_guard lock(mutex_);
    auto& list = free_[size];
    for (auto it = list.begin(); it != list.end(); ++it) {
      Block& block = blocks_.at(*it);
      if (block.event != nullptr && cudaEventQuery(block.event) == cudaErrorNotReady) continue;
      cudaGetLastError();
      void* ptr = *it;
      list.erase(it);
      return ptr;
    }
    void* ptr = nullptr;
    TSU_CUDA_CHECK(cudaHostAlloc(&ptr, size, cudaHostAllocDefault));
    blocks_[ptr] = Block{size, nullptr};
    return ptr;
  }
  void free(void* ptr) {
    if (ptr == nullptr) return;
    std::lock_guard lock(mutex_);
    free_[blocks_.at(ptr).size].push_back(ptr);
  }
  void record_use(void* ptr, int device) {
    std::lock_guard lock(mutex_);
    auto it = blocks_.find(ptr);
    if (it == blocks_.end()) return;  // not a pinned block of ours (an offset view, say): nothing to guard
    if (it->second.event == nullptr) TSU_CUDA_CHECK(cudaEventCreateWithFlags(&it->second.event, cudaEventDisableTiming));
    TSU_CUDA_CHECK(cudaEventRecord(it->second.event, stream(device)));
  }

 private:
  struct Block {
    size_t size;
    cudaEvent_t event;
  };
  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;
  std::unordered_map<void*, Block> blocks_;
};

PinnedAllocator& pinned_allocator() {
  static auto* allocator = new PinnedAllocator();
  return *allocator;
}

}  // namespace

void* pinned_allocate(size_t nbytes) { return pinned_allocator().allocate(nbytes); }
void pinned_free(void* ptr, size_t) { pinned_allocator().free(ptr); }
void pinned_record_use(void* ptr, int device) { pinned_allocator().record_use(ptr, device); }

}  // namespace cuda

void* cuda_allocate(size_t nbytes, int device) { return cuda::device_allocator().allocate(nbytes, device); }
void cuda_free(void* ptr, size_t, int) { cuda::device_allocator().free(ptr); }
MemoryStats cuda_memory_stats(int device) { return cuda::device_allocator().stats(device); }
void cuda_empty_cache(int device) { cuda::device_allocator().release_cached(device); }

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes, bool non_blocking) {
  if (nbytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  const int device = dst_device.is_cuda() ? dst_device.index : src_device.index;
  cudaStream_t s = cuda::stream(device);
  cuda::set_device(device);
  TSU_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, s));
  if (non_blocking) {
    // The caller promised pinned host memory; keep its block from reuse until the copy is done.
    cuda::pinned_record_use(const_cast<void*>(dst_device.is_cpu() ? dst : src), device);
  } else {
    TSU_CUDA_CHECK(cudaStreamSynchronize(s));
  }
}

}  // namespace tsumugi
