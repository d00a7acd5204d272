// Fused softmax + cross-entropy: never materialises the probabilities in the forward pass; the
// backward writes (softmax - one_hot) / count directly from the logits and the saved log-sum-exp.
// CPU kernels here, CUDA kernels in loss.cu.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>

#include <cmath>
#include <limits>

#include "../autograd_graph.h"
#include "../elementwise.h"
#include "../vmath.h"

#ifdef TSUMUGI_WITH_CUDA
#include "loss_cuda.h"
#endif

namespace tsumugi {
namespace {

template <class T, class I>
void cross_entropy_forward(const T* logits, const I* targets, int64_t rows, int64_t vocab, int64_t ignore_index,
                           double z_loss, T* lse, double* row_loss) {
#pragma omp parallel for schedule(static) if (rows * vocab > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = logits + r * vocab;
    T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < vocab; ++j) m = x[j] > m ? x[j] : m;
    T total = 0;
#pragma omp simd reduction(+ : total)
    for (int64_t j = 0; j < vocab; ++j) total += vmath::exp(x[j] - m);
    const T l = m + std::log(total);
    lse[r] = l;
    const int64_t t = static_cast<int64_t>(targets[r]);
    row_loss[r] = t == ignore_index ? 0.0 : static_cast<double>(l - x[t]) + z_loss * static_cast<double>(l) * l;
  }
}

template <class T, class I>
void cross_entropy_backward(const T* logits, const I* targets, const T* lse, int64_t rows, int64_t vocab,
                            int64_t ignore_index, double z_loss, T scale, T* grad) {
#pragma omp parallel for schedule(static) if (rows * vocab > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = logits + r * vocab;
    T* g = grad + r * vocab;
    const int64_t t = static_cast<int64_t>(targets[r]);
    if (t == ignore_index) {
      for (int64_t j = 0; j < vocab; ++j) g[j] = 0;
      continue;
    }
    const T l = lse[r];
    const T factor = scale * (T(1) + static_cast<T>(2 * z_loss) * l);
#pragma omp simd
    for (int64_t j = 0; j < vocab; ++j) g[j] = factor * vmath::exp(x[j] - l);
    g[t] -= scale;
  }
}

#ifdef TSUMUGI_WITH_CUDA
// The CUDA op: the loss, its count and each row's log-sum-exp stay on the device, so nothing
// waits for the GPU. The loss is f32 for bf16/f16 logits (f64 for f64).
Tensor cross_entropy_cuda(const Tensor& logits_in, const Tensor& targets_in, const Tensor& logits,
                          const Tensor& targets, int64_t ignore_index, double z_loss) {
  const TensorOptions stat{.dtype = logits.dtype() == DType::f64 ? DType::f64 : DType::f32,
                           .device = logits.device()};
  Tensor lse = empty({logits.size(0)}, stat);
  Tensor loss = empty({}, stat);
  Tensor count = empty({}, {.dtype = DType::f64, .device = logits.device()});
  cuda::cross_entropy_forward(logits, targets, ignore_index, z_loss, lse, loss, count);
  if (needs_grad({&logits_in})) {
    record("cross_entropy", {logits_in, targets_in}, loss,
           [logits, targets, lse, count, ignore_index, z_loss](const Tensor& g) {
             Tensor grad = empty_like(logits);
             cuda::cross_entropy_backward(logits, targets, lse, g.to(lse.dtype()).contiguous(), count, ignore_index,
                                          z_loss, grad);
             return std::vector<Tensor>{grad, Tensor()};
           });
  }
  return loss;
}
#endif

}  // namespace

Tensor cross_entropy(const Tensor& logits_in, const Tensor& targets_in, int64_t ignore_index, double z_loss) {
  TSU_CHECK(logits_in.dim() == 2, ValueError, "[cross_entropy] logits must be (N, V), got {}",
            shape_str(logits_in.shape()));
  TSU_CHECK(targets_in.dim() == 1 && targets_in.size(0) == logits_in.size(0), ValueError,
            "[cross_entropy] targets {} do not match logits {}", shape_str(targets_in.shape()),
            shape_str(logits_in.shape()));
  TSU_CHECK(targets_in.device() == logits_in.device(), ValueError,
            "[cross_entropy] targets are on {} but logits are on {}", targets_in.device().str(),
            logits_in.device().str());
  const Tensor logits = logits_in.detach().contiguous();
  const Tensor targets = targets_in.detach().contiguous();
#ifdef TSUMUGI_WITH_CUDA
  if (logits.device().is_cuda())
    return cross_entropy_cuda(logits_in, targets_in, logits, targets, ignore_index, z_loss);
#endif
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  Tensor lse = empty({rows}, {.dtype = logits.dtype()});
  std::vector<double> row_loss(static_cast<size_t>(rows));
  int64_t count = 0;
  dispatch_index(targets.dtype(), "cross_entropy", [&](auto index_tag) {
    using I = decltype(index_tag);
    const I* t = targets.data<I>();
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t target = static_cast<int64_t>(t[r]);
      if (target == ignore_index) continue;
      TSU_CHECK(target >= 0 && target < vocab, IndexError,
                "[cross_entropy] target {} at row {} is outside the vocabulary of {}", target, r, vocab);
      ++count;
    }
    dispatch_float(logits.dtype(), "cross_entropy", [&](auto tag) {
      using T = decltype(tag);
      cross_entropy_forward<T, I>(logits.data<T>(), t, rows, vocab, ignore_index, z_loss, lse.data<T>(),
                                  row_loss.data());
    });
  });
  double total = 0;
  for (double l : row_loss) total += l;  // in row order: deterministic
  // A batch whose targets are all ignored has loss 0 and gradient 0.
  const double mean = count > 0 ? total / static_cast<double>(count) : 0.0;
  Tensor loss = full({}, mean, {.dtype = logits.dtype()});
  if (needs_grad({&logits_in})) {
    record("cross_entropy", {logits_in, targets_in}, loss,
           [logits, targets, lse, ignore_index, z_loss, count](const Tensor& g) {
             Tensor grad = empty_like(logits);
             const double scale = count > 0 ? g.item<double>() / static_cast<double>(count) : 0.0;
             dispatch_index(targets.dtype(), "cross_entropy", [&](auto index_tag) {
               using I = decltype(index_tag);
               dispatch_float(logits.dtype(), "cross_entropy", [&](auto tag) {
                 using T = decltype(tag);
                 cross_entropy_backward<T, I>(logits.data<T>(), targets.data<I>(), lse.data<T>(), logits.size(0),
                                              logits.size(1), ignore_index, z_loss, static_cast<T>(scale),
                                              grad.data<T>());
               });
             });
             return std::vector<Tensor>{grad, Tensor()};
           });
  }
  return loss;
}

}  // namespace tsumugi
