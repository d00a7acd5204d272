// Fused softmax + cross-entropy on CUDA. CPU reference: cross_entropy_forward and
// cross_entropy_backward in loss.cpp.
//
// Forward: one block per row finds the row's maximum and sum of exponentials in one pass (online
// softmax) and writes its log-sum-exp and loss; no probability tensor exists. One more block
// averages the row losses in a fixed order, in double, on the device: nothing waits for the GPU.
// Backward: one block per row recomputes softmax from the logits and the saved log-sum-exp and
// writes the logit gradient in the logits' dtype.
#include "../cuda/device_math.cuh"
#include "loss_cuda.h"
#include "row_kernels.cuh"

namespace tsumugi::cuda {
namespace {

constexpr int kRowThreads = 1024;
constexpr int kMeanThreads = 1024;

// lse[r] and row_loss[r] (0 for an ignored row, NaN for a target outside the vocabulary).
template <class T, class I, int N>
__global__ void cross_entropy_rows_kernel(const T* logits, const I* targets, int64_t vocab, int64_t ignore_index,
                                          double z_loss, acc_t<T>* lse, double* row_loss) {
  using A = acc_t<T>;
  __shared__ A shared[64];
  const T* x = logits + blockIdx.x * vocab;
  const int64_t packs = vocab / N;
  MaxSum<A> ms;
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const Pack<T, N> v = reinterpret_cast<const Pack<T, N>*>(x)[p];
#pragma unroll
    for (int j = 0; j < N; ++j) ms.add(load_as<A>(&v.v[j]));
  }
  ms = block_max_sum(ms, shared);
  if (threadIdx.x != 0) return;
  const A l = ms.m + log_of(ms.s);
  lse[blockIdx.x] = l;
  const int64_t t = static_cast<int64_t>(targets[blockIdx.x]);
  double loss = 0.0;
  if (t != ignore_index) {
    loss = (t < 0 || t >= vocab) ? NAN
                                 : static_cast<double>(l - load_as<A>(x + t)) +
                                       z_loss * static_cast<double>(l) * static_cast<double>(l);
  }
  row_loss[blockIdx.x] = loss;
}

// loss = sum(row_loss) / count over the rows not ignored, count as a double; one block.
template <class I, class L>
__global__ void cross_entropy_mean_kernel(const double* row_loss, const I* targets, int64_t rows, int64_t ignore_index,
                                          L* loss, double* count) {
  __shared__ double shared[32];
  double total = 0.0, n = 0.0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    total += row_loss[r];
    if (static_cast<int64_t>(targets[r]) != ignore_index) n += 1.0;
  }
  total = block_sum(total, shared);
  n = block_sum(n, shared);
  if (threadIdx.x == 0) {
    *loss = static_cast<L>(n > 0.0 ? total / n : 0.0);  // every row ignored: loss 0 (as on the CPU)
    *count = n;
  }
}

template <class T, class I, int N>
__global__ void cross_entropy_backward_kernel(const T* logits, const I* targets, const acc_t<T>* lse,
                                              const acc_t<T>* g, const double* count, int64_t vocab,
                                              int64_t ignore_index, double z_loss, T* grad) {
  using A = acc_t<T>;
  const int64_t offset = blockIdx.x * vocab;
  const int64_t packs = vocab / N;
  const int64_t t = static_cast<int64_t>(targets[blockIdx.x]);
  Pack<T, N> out;
  if (t == ignore_index) {
#pragma unroll
    for (int j = 0; j < N; ++j) out.v[j] = from_float<T>(0.0f);
    for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) reinterpret_cast<Pack<T, N>*>(grad + offset)[p] = out;
    return;
  }
  const A scale = static_cast<A>(*count > 0.0 ? static_cast<double>(*g) / *count : 0.0);
  const A l = lse[blockIdx.x];
  const A factor = scale * (A(1) + static_cast<A>(2 * z_loss) * l);
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const Pack<T, N> v = reinterpret_cast<const Pack<T, N>*>(logits + offset)[p];
#pragma unroll
    for (int j = 0; j < N; ++j) {
      A d = factor * exp_of(load_as<A>(&v.v[j]) - l);
      if (p * N + j == t) d -= scale;
      store_from(&out.v[j], d);
    }
    reinterpret_cast<Pack<T, N>*>(grad + offset)[p] = out;
  }
}


}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index, double z_loss,
                           const Tensor& lse, const Tensor& loss, const Tensor& count) {
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  cudaStream_t stream = stream_of(logits);
  const Tensor row_loss = empty({rows}, {.dtype = DType::f64, .device = logits.device()});
  dispatch_index(targets.dtype(), "cross_entropy", [&](auto index_tag) {
    using I = decltype(index_tag);
    dispatch_float(logits.dtype(), "cross_entropy", [&](auto tag) {
      using T = decltype(tag);
      using A = acc_t<T>;
      if (rows > 0) {
        with_pack<T>(vocab, {logits.data_ptr()}, [&](auto pack) {
          constexpr int N = decltype(pack)::value;
          cross_entropy_rows_kernel<T, I, N><<<rows, row_threads(vocab / N, kRowThreads), 0, stream>>>(
              ptr<const T>(logits), ptr<const I>(targets), vocab, ignore_index, z_loss, ptr<A>(lse),
              ptr<double>(row_loss));
          TSU_CUDA_CHECK_LAUNCH();
        });
      }
      cross_entropy_mean_kernel<I, A><<<1, kMeanThreads, 0, stream>>>(
          ptr<const double>(row_loss), ptr<const I>(targets), rows, ignore_index, ptr<A>(loss), ptr<double>(count));
      TSU_CUDA_CHECK_LAUNCH();
    });
  });
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, const Tensor& g,
                            const Tensor& count, int64_t ignore_index, double z_loss, const Tensor& grad) {
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  if (rows == 0 || vocab == 0) return;
  cudaStream_t stream = stream_of(logits);
  dispatch_index(targets.dtype(), "cross_entropy", [&](auto index_tag) {
    using I = decltype(index_tag);
    dispatch_float(logits.dtype(), "cross_entropy", [&](auto tag) {
      using T = decltype(tag);
      using A = acc_t<T>;
      with_pack<T>(vocab, {logits.data_ptr(), grad.data_ptr()}, [&](auto pack) {
        constexpr int N = decltype(pack)::value;
        cross_entropy_backward_kernel<T, I, N><<<rows, row_threads(vocab / N, kRowThreads), 0, stream>>>(
            ptr<const T>(logits), ptr<const I>(targets), ptr<const A>(lse), ptr<const A>(g), ptr<const double>(count),
            vocab, ignore_index, z_loss, ptr<T>(grad));
        TSU_CUDA_CHECK_LAUNCH();
      });
    });
  });
}

}  // namespace tsumugi::cuda
