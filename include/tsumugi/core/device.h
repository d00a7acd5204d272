#pragma once
/// Where a tensor's memory lives: the CPU or one CUDA device.
#include <cstdint>
#include <string>
#include <string_view>

namespace tsumugi {

enum class DeviceType : uint8_t { cpu, cuda };

/// A device: `Device::cpu()` or `Device::cuda(n)`; printed and parsed as "cpu" / "cuda:n".
struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
  /// Parses "cpu", "cuda" or "cuda:N"; throws ValueError otherwise.
  static Device parse(std::string_view text);

  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  std::string str() const;
  bool operator==(const Device&) const = default;
};

/// True when this build has CUDA kernels (TSUMUGI_CUDA).
bool cuda_built();
/// Number of usable CUDA devices: 0 without a build, a driver or a GPU (never throws).
int cuda_device_count();
/// Waits until every kernel and copy queued on CUDA device `device` has finished (for timing);
/// does nothing without a CUDA build or a GPU. Throws Error if queued work failed.
void cuda_synchronize(int device = 0);

}  // namespace tsumugi
