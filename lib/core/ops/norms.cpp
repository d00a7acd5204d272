// Softmax, log-softmax, LayerNorm and RMSNorm (alone or fused with the residual add): row-wise
// kernels over the last dimension, on the CPU here and on CUDA in norms.cu.
//
// Parameter gradients (sums over rows) are computed per column block, each block looping over
// the rows in order, so they do not depend on the thread count.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>

#include <cmath>
#include <limits>

#include "../autograd_graph.h"
#include "../elementwise.h"
#include "../vmath.h"

#ifdef TSUMUGI_WITH_CUDA
#include "norms_cuda.h"
#endif

namespace tsumugi {
namespace {

constexpr int64_t kColumnBlock = 256;

// Moves `dim` last so that rows are contiguous; returns the permutation to undo it (empty if none).
Tensor rows_last(const Tensor& x, int64_t dim, std::vector<int64_t>& undo) {
  undo.clear();
  if (dim == x.dim() - 1) return x.contiguous();
  std::vector<int64_t> order;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d != dim) order.push_back(d);
  order.push_back(dim);
  undo.assign(order.size(), 0);
  for (size_t i = 0; i < order.size(); ++i) undo[order[i]] = static_cast<int64_t>(i);
  return x.permute(order).contiguous();
}

Tensor restore(const Tensor& y, const std::vector<int64_t>& undo) {
  return undo.empty() ? y : y.permute(undo).contiguous();
}

template <class T, bool Log>
void softmax_rows(const T* x, T* y, int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows * n > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; ++i) m = xr[i] > m ? xr[i] : m;
    T total = 0;
#pragma omp simd reduction(+ : total)
    for (int64_t i = 0; i < n; ++i) {
      const T e = vmath::exp(xr[i] - m);
      total += e;
      if constexpr (!Log) yr[i] = e;
    }
    if constexpr (Log) {
      const T lse = m + std::log(total);
      for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] - lse;
    } else {
      const T inv = T(1) / total;
      for (int64_t i = 0; i < n; ++i) yr[i] *= inv;
    }
  }
}

template <bool Log>
Tensor softmax_impl(const Tensor& x, int64_t dim, const char* name) {
  dim = wrap_dim(dim, x.dim(), name);
  std::vector<int64_t> undo;
  const Tensor xr = rows_last(x.detach(), dim, undo);
  Tensor yr = empty_like(xr);
  const int64_t n = xr.dim() == 0 ? 1 : xr.size(-1);
  const bool on_cuda = x.device().is_cuda();
#ifdef TSUMUGI_WITH_CUDA
  if (on_cuda) cuda::softmax_forward(xr, yr, Log);
#endif
  if (!on_cuda) {
    dispatch_float(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      softmax_rows<T, Log>(xr.data<T>(), yr.data<T>(), xr.numel() / std::max<int64_t>(n, 1), n);
    });
  }
  Tensor out = restore(yr, undo);
  if (needs_grad({&x})) {
    record(name, {x}, out, [yd = out.detach(), dim](const Tensor& g) {
#ifdef TSUMUGI_WITH_CUDA
      if (yd.device().is_cuda()) {  // one fused kernel, rows along `dim`
        std::vector<int64_t> undo_rows;
        const Tensor yr = rows_last(yd, dim, undo_rows);
        const Tensor gr = rows_last(g.to(yd.dtype()), dim, undo_rows);
        Tensor dx = empty_like(yr);
        cuda::softmax_backward(gr, yr, dx, Log);
        return std::vector<Tensor>{restore(dx, undo_rows)};
      }
#endif
      if constexpr (Log) return std::vector<Tensor>{g - exp(yd) * sum(g, {dim}, true)};
      else return std::vector<Tensor>{yd * (g - sum(g * yd, {dim}, true))};
    });
  }
  return out;
}

void check_norm_args(const Tensor& x, const Tensor& weight, const Tensor& bias, const char* op) {
  TSU_CHECK(x.dim() >= 1, ValueError, "[{}] input must have at least one dimension", op);
  const int64_t d = x.size(-1);
  TSU_CHECK(weight.dim() == 1 && weight.size(0) == d, ValueError, "[{}] weight {} does not match input {}", op,
            shape_str(weight.shape()), shape_str(x.shape()));
  TSU_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == d), ValueError,
            "[{}] bias {} does not match input {}", op, shape_str(bias.shape()), shape_str(x.shape()));
  TSU_CHECK(weight.dtype() == x.dtype() && (!bias.defined() || bias.dtype() == x.dtype()), ValueError,
            "[{}] dtypes differ", op);
  TSU_CHECK(weight.device() == x.device(), ValueError, "[{}] weight is on {} but input is on {}", op,
            weight.device().str(), x.device().str());
  TSU_CHECK(!bias.defined() || bias.device() == x.device(), ValueError, "[{}] bias is on {} but input is on {}", op,
            bias.defined() ? bias.device().str() : "", x.device().str());
}

// Normalised rows: layer norm when Centered (mean and variance), RMS norm otherwise.
// With a residual (res != nullptr), the row normalised is s = x + res, written to s_out first.
// Writes y, and the per-row mean (LayerNorm only) and reciprocal standard deviation.
template <class T, bool Centered>
void norm_forward(const T* x, const T* res, const T* w, const T* b, T* s_out, T* y, T* mean_out, T* rstd_out,
                  int64_t rows, int64_t d, double eps) {
#pragma omp parallel for schedule(static) if (rows * d > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    if (res != nullptr) {
      T* sr = s_out + r * d;
      const T* rr = res + r * d;
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) sr[i] = xr[i] + rr[i];
      xr = sr;
    }
    T* yr = y + r * d;
    T mu = 0;
    if constexpr (Centered) {
      T s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t i = 0; i < d; ++i) s += xr[i];
      mu = s / static_cast<T>(d);
    }
    T ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < d; ++i) ss += (xr[i] - mu) * (xr[i] - mu);
    const T rstd = T(1) / std::sqrt(ss / static_cast<T>(d) + static_cast<T>(eps));
    for (int64_t i = 0; i < d; ++i) {
      const T v = (xr[i] - mu) * rstd * w[i];
      if constexpr (Centered) yr[i] = v + b[i];
      else yr[i] = v;
    }
    if constexpr (Centered) mean_out[r] = mu;
    rstd_out[r] = rstd;
  }
}

// dx for each row (plus ds, the gradient that reached the residual sum directly, when given);
// dweight (and dbias) by column blocks.
template <class T, bool Centered>
void norm_backward(const T* g, const T* ds, const T* x, const T* w, const T* mean, const T* rstd, T* dx, T* dw, T* db,
                   int64_t rows, int64_t d) {
#pragma omp parallel for schedule(static) if (rows * d > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* gr = g + r * d;
    const T* xr = x + r * d;
    T* dxr = dx + r * d;
    const T mu = Centered ? mean[r] : T(0);
    const T s = rstd[r];
    T sum_dxhat = 0, sum_dxhat_xhat = 0;
#pragma omp simd reduction(+ : sum_dxhat, sum_dxhat_xhat)
    for (int64_t i = 0; i < d; ++i) {
      const T dxhat = gr[i] * w[i];
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * (xr[i] - mu) * s;
    }
    const T mean_dxhat = Centered ? sum_dxhat / static_cast<T>(d) : T(0);
    const T mean_dxhat_xhat = sum_dxhat_xhat / static_cast<T>(d);
    for (int64_t i = 0; i < d; ++i) {
      const T xhat = (xr[i] - mu) * s;
      dxr[i] = s * (gr[i] * w[i] - mean_dxhat - xhat * mean_dxhat_xhat);
    }
    if (ds != nullptr) {
      const T* dsr = ds + r * d;
      for (int64_t i = 0; i < d; ++i) dxr[i] += dsr[i];
    }
  }
  const int64_t blocks = (d + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (rows * d > kParallelGrain)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t c0 = block * kColumnBlock;
    const int64_t width = std::min(kColumnBlock, d - c0);
    T acc_w[kColumnBlock] = {};
    T acc_b[kColumnBlock] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const T* gr = g + r * d + c0;
      const T* xr = x + r * d + c0;
      const T mu = Centered ? mean[r] : T(0);
      const T s = rstd[r];
#pragma omp simd
      for (int64_t i = 0; i < width; ++i) {
        acc_w[i] += gr[i] * (xr[i] - mu) * s;
        if constexpr (Centered) acc_b[i] += gr[i];
      }
    }
    for (int64_t i = 0; i < width; ++i) {
      dw[c0 + i] = acc_w[i];
      if constexpr (Centered) db[c0 + i] = acc_b[i];
    }
  }
}

// The op: norm(x), or with a residual, (s = x + residual, norm(s)). Returns (s, y); s is
// undefined without a residual.
template <bool Centered>
std::pair<Tensor, Tensor> norm_op(const char* name, const Tensor& x, const Tensor& residual, const Tensor& weight,
                                  const Tensor& bias, double eps) {
  check_norm_args(x, weight, bias, name);
  const bool fused_add = residual.defined();
  if (fused_add) {
    TSU_CHECK(residual.shape() == x.shape(), ValueError, "[{}] residual {} does not match input {}", name,
              shape_str(residual.shape()), shape_str(x.shape()));
    TSU_CHECK(residual.dtype() == x.dtype(), ValueError, "[{}] dtypes differ: input {} and residual {}", name,
              dtype_name(x.dtype()), dtype_name(residual.dtype()));
    TSU_CHECK(residual.device() == x.device(), ValueError, "[{}] residual is on {} but input is on {}", name,
              residual.device().str(), x.device().str());
  }
  const Tensor xc = x.detach().contiguous();
  const Tensor rc = fused_add ? residual.detach().contiguous() : Tensor();
  const Tensor wc = weight.detach().contiguous();
  const Tensor bc = bias.defined() ? bias.detach().contiguous() : Tensor();
  const int64_t d = x.size(-1), rows = x.numel() / std::max<int64_t>(d, 1);
  const TensorOptions options{.dtype = x.dtype(), .device = x.device()};
  // Row statistics: f32 or f64 as the input on the CPU; f32 for the half types on CUDA.
  const TensorOptions stat_options{.dtype = x.dtype() == DType::f64 ? DType::f64 : DType::f32, .device = x.device()};
  Tensor s = fused_add ? empty(xc.shape(), options) : Tensor();
  Tensor y = empty(xc.shape(), options);
  Tensor mean = Centered ? empty({rows}, stat_options) : Tensor();
  Tensor rstd = empty({rows}, stat_options);
  const bool on_cuda = x.device().is_cuda();
#ifdef TSUMUGI_WITH_CUDA
  if (on_cuda) cuda::norm_forward(xc, rc, wc, bc, s, y, mean, rstd, Centered, eps);
#endif
  if (!on_cuda) {
    dispatch_float(x.dtype(), name, [&](auto tag) {
      using T = decltype(tag);
      norm_forward<T, Centered>(xc.data<T>(), fused_add ? rc.data<T>() : nullptr, wc.data<T>(),
                                Centered ? bc.data<T>() : nullptr, fused_add ? s.data<T>() : nullptr, y.data<T>(),
                                Centered ? mean.data<T>() : nullptr, rstd.data<T>(), rows, d, eps);
    });
  }
  const std::vector<Tensor> inputs =
      fused_add ? std::vector<Tensor>{x, residual, weight, bias} : std::vector<Tensor>{x, weight, bias};
  if (needs_grad(inputs)) {
    // The normalised input, detached: saving s itself would make a cycle through its own node.
    const Tensor xn = fused_add ? s.detach() : xc;
    std::vector<Tensor*> outputs = fused_add ? std::vector<Tensor*>{&s, &y} : std::vector<Tensor*>{&y};
    record(name, inputs, outputs, [name, xn, wc, mean, rstd, fused_add, rows, d](const std::vector<Tensor>& grads) {
      const Tensor& gy = grads.back();
      const Tensor gs = fused_add && grads[0].defined() ? grads[0].to(xn.dtype()).contiguous() : Tensor();
      Tensor dx, dw, db;
      if (gy.defined()) {
        const Tensor g = gy.to(xn.dtype()).contiguous();
        dx = empty_like(xn);
        dw = empty_like(wc);
        db = Centered ? empty_like(wc) : Tensor();
        const bool on_cuda = xn.device().is_cuda();
#ifdef TSUMUGI_WITH_CUDA
        if (on_cuda) cuda::norm_backward(g, gs, xn, wc, mean, rstd, dx, dw, db, Centered);
#endif
        if (!on_cuda) {
          dispatch_float(g.dtype(), name, [&](auto tag) {
            using T = decltype(tag);
            norm_backward<T, Centered>(g.data<T>(), gs.defined() ? gs.data<T>() : nullptr, xn.data<T>(), wc.data<T>(),
                                       Centered ? mean.data<T>() : nullptr, rstd.data<T>(), dx.data<T>(),
                                       dw.data<T>(), Centered ? db.data<T>() : nullptr, rows, d);
          });
        }
      } else {
        dx = gs;  // only s received a gradient: the norm contributes nothing
      }
      if (fused_add) return std::vector<Tensor>{dx, dx, dw, db};
      return std::vector<Tensor>{dx, dw, db};
    });
  }
  return {s, y};
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl<false>(x, dim, "softmax"); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl<true>(x, dim, "log_softmax"); }

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  TSU_CHECK(bias.defined(), ValueError, "[layer_norm] bias is required");
  return norm_op<true>("layer_norm", x, Tensor(), weight, bias, eps).second;
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  return norm_op<false>("rms_norm", x, Tensor(), weight, Tensor(), eps).second;
}

std::pair<Tensor, Tensor> add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor& weight,
                                         const Tensor& bias, double eps) {
  TSU_CHECK(bias.defined(), ValueError, "[add_layer_norm] bias is required");
  TSU_CHECK(residual.defined(), ValueError, "[add_layer_norm] residual is required");
  return norm_op<true>("add_layer_norm", x, residual, weight, bias, eps);
}

std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& weight, double eps) {
  TSU_CHECK(residual.defined(), ValueError, "[add_rms_norm] residual is required");
  return norm_op<false>("add_rms_norm", x, residual, weight, Tensor(), eps);
}

}  // namespace tsumugi
