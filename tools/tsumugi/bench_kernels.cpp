// tsumugi bench kernels: the fused kernels that dominate a training step besides the GEMMs,
// timed alone on a device: causal attention (forward, forward + backward) and the embedding
// lookup with its deterministic backward. Median of timed repeats after two warm-ups.
#include <tsumugi/tsumugi.h>

#include <fmt/format.h>

#include <chrono>
#include <functional>

#include "bench_util.h"
#include "commands.h"

namespace tsumugi::cli {
namespace {

struct BenchKernelsOptions {
  std::string device = "cuda";
  int repeats = 10;
};

// Median milliseconds of `fn` over `repeats` timed calls, each waited for.
double median_ms(const std::function<void()>& fn, const Device& device, int repeats) {
  auto wait = [&] {
    if (device.is_cuda()) cuda_synchronize(device.index);
  };
  for (int i = 0; i < 2; ++i) fn();
  wait();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    wait();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  return median(times);
}

void bench_attention(const Device& device, int repeats, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t hd,
                     DType dtype) {
  Generator gen(1);
  Tensor q = randn({b, t, hq, hd}, gen).to(dtype).to(device).set_requires_grad(true);
  Tensor k = randn({b, t, hkv, hd}, gen).to(dtype).to(device).set_requires_grad(true);
  Tensor v = randn({b, t, hkv, hd}, gen).to(dtype).to(device).set_requires_grad(true);
  const Tensor g = randn({b, t, hq, hd}, gen).to(dtype).to(device);
  // Causal: half of the (T, T) square, two products of 2 T T hd / 2 each; backward is 2.5 x forward.
  const double flops = 2.0 * b * hq * t * t * hd;
  const double forward = median_ms([&] {
    NoGradGuard no_grad;
    causal_attention(q, k, v);
  }, device, repeats);
  const double both = median_ms([&] {
    q.zero_grad();
    k.zero_grad();
    v.zero_grad();
    causal_attention(q, k, v).backward(g);
  }, device, repeats);
  fmt::print("attention {} B={} T={} Hq={} Hkv={} hd={}: forward {:.3f} ms ({:.1f} TFLOP/s), forward+backward {:.3f} ms "
             "({:.1f} TFLOP/s)\n",
             dtype_name(dtype), b, t, hq, hkv, hd, forward, flops / forward / 1e9, both, 3.5 * flops / both / 1e9);
}

void bench_embedding(const Device& device, int repeats, int64_t n, int64_t vocab, int64_t d, DType dtype,
                     int64_t distinct) {
  Generator gen(2);
  Tensor w = randn({vocab, d}, gen).to(dtype).to(device).set_requires_grad(true);
  const Tensor ids = randint(0, distinct, {n}, gen).to(device);
  const Tensor g = randn({n, d}, gen).to(dtype).to(device);
  const double forward = median_ms([&] {
    NoGradGuard no_grad;
    embedding(w, ids);
  }, device, repeats);
  const double both = median_ms([&] {
    w.zero_grad();
    embedding(w, ids).backward(g);
  }, device, repeats);
  fmt::print("embedding {} tokens={} V={} d={} ({} distinct ids): forward {:.3f} ms, forward+backward {:.3f} ms\n",
             dtype_name(dtype), n, vocab, d, distinct, forward, both);
}

void run_bench_kernels(const BenchKernelsOptions& o) {
  const Device device = bench_device(o.device);
  bench_attention(device, o.repeats, 8, 1024, 12, 12, 64, DType::bf16);  // GPT-2 124M
  bench_attention(device, o.repeats, 4, 2048, 32, 8, 128, DType::bf16);  // Llama 1B-class, GQA
  bench_attention(device, o.repeats, 4, 2048, 32, 8, 128, DType::f32);
  bench_embedding(device, o.repeats, 8192, 32768, 768, DType::bf16, 32768);
  bench_embedding(device, o.repeats, 16384, 128256, 2048, DType::bf16, 128256);
  bench_embedding(device, o.repeats, 16384, 128256, 2048, DType::bf16, 8);  // skewed: long runs of one id
}

}  // namespace

void add_bench_kernels_command(CLI::App& bench) {
  auto options = std::make_shared<BenchKernelsOptions>();
  CLI::App* cmd = bench.add_subcommand("kernels", "Time the fused attention and embedding kernels alone");
  cmd->add_option("--device", options->device, "cuda, cuda:N or cpu")->capture_default_str();
  cmd->add_option("--repeats", options->repeats, "timed calls per measurement (the median is reported)")
      ->capture_default_str();
  cmd->callback([options] { run_bench_kernels(*options); });
}

}  // namespace tsumugi::cli
