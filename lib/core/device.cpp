#include <tsumugi/core/device.h>

#include <charconv>

#include "check.h"

#ifdef TSUMUGI_WITH_CUDA
#include <cuda_runtime_api.h>

#include "cuda/runtime.h"
#endif

namespace tsumugi {

Device Device::parse(std::string_view text) {
  if (text == "cpu") return cpu();
  if (text == "cuda") return cuda(0);
  if (text.starts_with("cuda:")) {
    int index = -1;
    const std::string_view digits = text.substr(5);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (ec == std::errc() && end == digits.data() + digits.size() && index >= 0) return cuda(index);
  }
  TSU_FAIL(ValueError, "[device] cannot parse '{}' (expected cpu, cuda or cuda:N)", text);
}

std::string Device::str() const { return is_cpu() ? "cpu" : fmt::format("cuda:{}", index); }

bool cuda_built() {
#ifdef TSUMUGI_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef TSUMUGI_WITH_CUDA
  int count = 0;
  // Without a driver this returns an error rather than 0: that also means "no GPU".
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
#else
  return 0;
#endif
}

void cuda_synchronize(int device) {
#ifdef TSUMUGI_WITH_CUDA
  if (cuda_device_count() == 0) return;
  cuda::set_device(device);
  // The whole device, not only tsumugi's stream: also work that a library queued elsewhere.
  TSU_CUDA_CHECK(cudaDeviceSynchronize());
#else
  (void)device;
#endif
}

}  // namespace tsumugi
