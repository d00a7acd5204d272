// tsumugi bench gemm: the rate of one large square matrix product through tsumugi's matmul op
// (on a GPU, cuBLASLt), measured by measure_gemm_gflops, the same function that the trainer and
// `tsumugi bench train` take MFU against: an 8192^3 product in the given dtype on a GPU, 2048^3
// f32 on the CPU.
#include <tsumugi/train/trainer.h>
#include <tsumugi/tsumugi.h>

#include <fmt/format.h>

#include <algorithm>

#include "bench_util.h"
#include "commands.h"

namespace tsumugi::cli {
namespace {

struct BenchGemmOptions {
  std::string device = "cpu", dtype = "f32";
  int repeats = 3;
};

void run_bench_gemm(const BenchGemmOptions& o) {
  const Device device = bench_device(o.device);
  const DType dtype = parse_dtype(o.dtype);
  // The first measurement also warms up the GPU's clocks and the library's heuristics.
  double best = 0;
  for (int i = 0; i < o.repeats; ++i) best = std::max(best, measure_gemm_gflops(device, dtype));
  const int64_t n = device.is_cpu() ? 2048 : 8192;
  fmt::print("bench gemm: {} x {} x {} {} on {}: {:.1f} TFLOP/s (best of {} x 5 products)\n", n, n, n,
             dtype_name(dtype), device.str(), best / 1e3, o.repeats);
  fmt::print("RESULT {{\"bench\": \"gemm\", \"impl\": \"tsumugi\", \"device\": \"{}\", \"dtype\": \"{}\", \"n\": {}, "
             "\"tflops\": {:.2f}}}\n",
             device.str(), dtype_name(dtype), n, best / 1e3);
}

}  // namespace

Device bench_device(const std::string& name) {
  const Device device = Device::parse(name);
  if (device.is_cuda() && !cuda_built())
    throw NotImplementedError(
        fmt::format("[bench] --device {}: this tsumugi was built without CUDA (configure with -DTSUMUGI_CUDA=ON)", name));
  if (device.is_cuda() && device.index >= cuda_device_count())
    throw ValueError(fmt::format("[bench] --device {}: no such CUDA device ({} visible: no GPU, no driver, or "
                                 "CUDA_VISIBLE_DEVICES hides it)",
                                 name, cuda_device_count()));
  return device;
}

void add_bench_gemm_command(CLI::App& bench) {
  auto options = std::make_shared<BenchGemmOptions>();
  CLI::App* cmd = bench.add_subcommand("gemm", "Time a large square matrix product (the MFU denominator)");
  cmd->add_option("--device", options->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--dtype", options->dtype, "f32, bf16 or f16")->capture_default_str();
  cmd->add_option("--repeats", options->repeats, "measurements (each the best of 5 products); the best is reported")
      ->capture_default_str();
  cmd->callback([options] { run_bench_gemm(*options); });
}

}  // namespace tsumugi::cli
