// Matrix products: matmul (batched, broadcasting), linear and linear_gelu; through CBLAS on the
// CPU and cuBLASLt on CUDA (matmul.cu).
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>

#include <cblas.h>
#include <omp.h>

#include <atomic>

#include "../autograd_graph.h"
#include "../dispatch.h"
#include "../elementwise.h"
#include "../gemm.h"

#ifdef TSUMUGI_WITH_CUDA
#include "matmul_cuda.h"
#endif

namespace tsumugi {

namespace {

// The OpenMP build of OpenBLAS runs on omp_get_max_threads() threads (one inside a parallel
// region), so a pinned BLAS thread count is applied around each call.
template <class F>
void with_blas_threads(F&& call) {
  const int pinned = pinned_blas_threads();
  if (pinned == 0 || omp_in_parallel()) {
    call();
    return;
  }
  const int kernels = omp_get_max_threads();
  omp_set_num_threads(pinned);
  call();
  omp_set_num_threads(kernels);
}

}  // namespace

template <>
void gemm_raw<float>(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                     int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  with_blas_threads([&] {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
                static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
  });
}

template <>
void gemm_raw<double>(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                      int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  with_blas_threads([&] {
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
                static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
  });
}

namespace {

// How BLAS should read a 2-D view: transposed or not, and its leading dimension.
struct BlasOperand {
  bool transposed = false;
  int64_t ld = 1;
};

// Reads the last two dimensions of t.
bool blas_layout(const Tensor& t, BlasOperand& op) {
  const int64_t rows = t.size(-2), cols = t.size(-1);
  const int64_t s0 = t.stride(-2), s1 = t.stride(-1);
  if ((s1 == 1 || cols <= 1) && (rows <= 1 || s0 >= std::max<int64_t>(cols, 1))) {
    op = {false, rows <= 1 ? std::max<int64_t>(cols, 1) : s0};
    return true;
  }
  if ((s0 == 1 || rows <= 1) && (cols <= 1 || s1 >= std::max<int64_t>(rows, 1))) {
    op = {true, cols <= 1 ? std::max<int64_t>(rows, 1) : s1};
    return true;
  }
  return false;
}

}  // namespace

void gemm(const Tensor& a_in, const Tensor& b_in, const Tensor& c, double alpha, double beta) {
  Tensor a = a_in, b = b_in;
  BlasOperand oa, ob, oc;
  if (!blas_layout(a, oa)) {
    a = a.contiguous();
    blas_layout(a, oa);
  }
  if (!blas_layout(b, ob)) {
    b = b.contiguous();
    blas_layout(b, ob);
  }
  TSU_CHECK(blas_layout(c, oc) && !oc.transposed, ValueError, "[gemm] output must be row-major");
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  if (m == 0 || n == 0) return;
  dispatch_float(a.dtype(), "matmul", [&](auto tag) {
    using T = decltype(tag);
    gemm_raw<T>(oa.transposed, ob.transposed, m, n, k, static_cast<T>(alpha), a.data<T>(), oa.ld, b.data<T>(), ob.ld,
                static_cast<T>(beta), c.data<T>(), oc.ld);
  });
}

namespace {

void check_matmul_args(const Tensor& a, const Tensor& b, const char* op, const char* a_name, const char* b_name) {
  TSU_CHECK(a.dtype() == b.dtype(), ValueError, "[{}] dtypes differ: {} and {}", op, dtype_name(a.dtype()),
            dtype_name(b.dtype()));
  TSU_CHECK(a.device() == b.device(), ValueError, "[{}] {} is on {} but {} is on {}", op, b_name, b.device().str(),
            a_name, a.device().str());
}

#ifdef TSUMUGI_WITH_CUDA
// The view itself when BLAS can read its last two dimensions (row- or column-major), else a copy.
Tensor blas_ready(const Tensor& t) {
  BlasOperand op;
  return blas_layout(t, op) ? t : t.contiguous();
}

// The one stride that steps through the leading `dims` dimensions of t in row-major order, or -1
// when they do not form one arithmetic progression (e.g. a broadcast dimension outside a real one).
int64_t batch_stride(const Tensor& t, size_t dims) {
  int64_t stride = 0, expected = -1;
  for (size_t i = dims; i-- > 0;) {
    const int64_t size = t.size(static_cast<int64_t>(i));
    if (size == 1) continue;
    if (expected < 0) stride = t.stride(static_cast<int64_t>(i));
    else if (t.stride(static_cast<int64_t>(i)) != expected) return -1;
    expected = (expected < 0 ? stride : expected) * size;
  }
  return stride;
}

// out (batch..., M, N) = a (batch..., M, K) x b (batch..., K, N) on CUDA; a and b already expanded.
void cuda_batched_matmul(Tensor a, Tensor b, const Tensor& out, size_t batch_dims, int64_t batches) {
  a = blas_ready(a);
  b = blas_ready(b);
  int64_t sa = batch_stride(a, batch_dims), sb = batch_stride(b, batch_dims);
  if (sa < 0) {
    a = a.contiguous();
    sa = a.size(-2) * a.size(-1);
  }
  if (sb < 0) {
    b = b.contiguous();
    sb = b.size(-2) * b.size(-1);
  }
  cuda::gemm(a, sa, b, sb, out, batches);
}
#endif

// (..., M, K) x (..., K, N) for tensors of at least 2 dimensions, no autograd.
Tensor matmul_kernel(const Tensor& a, const Tensor& b) {
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  TSU_CHECK(b.size(-2) == k, ValueError, "[matmul] inner dimensions differ: {} x {}", shape_str(a.shape()),
            shape_str(b.shape()));
  const bool on_cuda = a.device().is_cuda();
  const TensorOptions options{.dtype = a.dtype(), .device = a.device()};
  if (a.dim() == 2 && b.dim() == 2) {
    Tensor out = empty({m, n}, options);
#ifdef TSUMUGI_WITH_CUDA
    if (on_cuda) cuda_batched_matmul(a, b, out, 0, 1);
#endif
    if (!on_cuda) gemm(a, b, out);
    return out;
  }
  if (b.dim() == 2) {  // fold the batch of a into its rows: one large GEMM
    Shape out_shape = a.shape();
    out_shape.back() = n;
    Tensor out = empty(out_shape, options);
#ifdef TSUMUGI_WITH_CUDA
    if (on_cuda) cuda_batched_matmul(a.reshape({-1, k}), b, out.view({-1, n}), 0, 1);
#endif
    if (!on_cuda) gemm(a.reshape({-1, k}), b, out.view({-1, n}));
    return out;
  }
  const Shape batch_a(a.shape().begin(), a.shape().end() - 2);
  const Shape batch_b(b.shape().begin(), b.shape().end() - 2);
  const Shape batch = broadcast_shapes(batch_a, batch_b, "matmul");
  Shape shape_a = batch, shape_b = batch, out_shape = batch;
  shape_a.insert(shape_a.end(), {m, k});
  shape_b.insert(shape_b.end(), {k, n});
  out_shape.insert(out_shape.end(), {m, n});
  const Tensor ea = a.expand(shape_a), eb = b.expand(shape_b);
  Tensor out = empty(out_shape, options);
  const int64_t batches = shape_numel(batch);
#ifdef TSUMUGI_WITH_CUDA
  if (on_cuda) {
    if (batches > 0) cuda_batched_matmul(ea, eb, out, batch.size(), batches);
    return out;
  }
#endif
  const bool small = m * n * k < (int64_t{1} << 21);  // small products run in parallel, large ones use threaded BLAS
#pragma omp parallel for schedule(static) if (small && batches > 1)
  for (int64_t i = 0; i < batches; ++i) {
    Tensor ai = ea, bi = eb, oi = out;
    int64_t rest = i;
    for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
      const int64_t index = rest % batch[d];
      rest /= batch[d];
      ai = ai.select(d, index);
      bi = bi.select(d, index);
      oi = oi.select(d, index);
    }
    gemm(ai, bi, oi);
  }
  return out;
}

// Checks linear's arguments; returns the output shape (..., out).
Shape linear_shape(const Tensor& x, const Tensor& w, const Tensor& b, const char* op) {
  check_matmul_args(x, w, op, "input", "weight");
  TSU_CHECK(w.dim() == 2 && x.dim() >= 1 && x.size(-1) == w.size(1), ValueError,
            "[{}] input {} does not match weight {} (out, in)", op, shape_str(x.shape()), shape_str(w.shape()));
  TSU_CHECK(!b.defined() || (b.dim() == 1 && b.size(0) == w.size(0)), ValueError,
            "[{}] bias {} does not match weight {}", op, b.defined() ? shape_str(b.shape()) : "",
            shape_str(w.shape()));
  TSU_CHECK(!b.defined() || b.device() == x.device(), ValueError, "[{}] bias is on {} but input is on {}", op,
            b.defined() ? b.device().str() : "", x.device().str());
  Shape out_shape = x.shape();
  out_shape.back() = w.size(0);
  return out_shape;
}

// Gradients of x (..., in), w (out, in) and b (out) from g, the gradient of x w^T + b.
std::vector<Tensor> linear_backward(const Tensor& g, const Tensor& xd, const Tensor& wd, bool gx, bool gw, bool gb) {
  const Tensor g2 = g.reshape({-1, g.size(-1)});
  Tensor dx, dw, db;
  if (gx) dx = matmul(g2, wd).view(xd.shape());
  if (gw) {
    const Tensor x2 = xd.reshape({-1, xd.size(-1)});
    // Give the gradient the weight's own memory layout (GPT-2 stores some weights transposed).
    dw = wd.stride(0) == 1 && wd.stride(1) != 1 ? matmul(x2.t(), g2).t() : matmul(g2.t(), x2);
  }
  if (gb) db = sum(g2, {0});
  return {dx, dw, db};
}

std::atomic<bool> tf32_allowed{false};

}  // namespace

void set_allow_tf32(bool allow) { tf32_allowed = allow; }
bool allow_tf32() { return tf32_allowed; }

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_matmul_args(a, b, "matmul", "a", "b");
  TSU_CHECK(a.dim() >= 1 && b.dim() >= 1, ValueError, "[matmul] scalars cannot be multiplied: {} x {}",
            shape_str(a.shape()), shape_str(b.shape()));
  if (a.dim() == 1) return matmul(a.unsqueeze(0), b).squeeze(-2);
  if (b.dim() == 1) return matmul(a, b.unsqueeze(-1)).squeeze(-1);
  Tensor out;
  {
    NoGradGuard no_grad;
    out = matmul_kernel(a.detach(), b.detach());
  }
  if (needs_grad({&a, &b})) {
    record("matmul", {a, b}, out, [ad = a.detach(), bd = b.detach(), ga = a.requires_grad(),
                                   gb = b.requires_grad()](const Tensor& g) {
      Tensor da, db;
      if (ga) da = sum_to(matmul(g, bd.transpose(-1, -2)), ad.shape());
      if (gb) {
        if (bd.dim() == 2) db = matmul(ad.reshape({-1, ad.size(-1)}).t(), g.reshape({-1, g.size(-1)}));
        else db = sum_to(matmul(ad.transpose(-1, -2), g), bd.shape());
      }
      return std::vector<Tensor>{da, db};
    });
  }
  return out;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  const Shape out_shape = linear_shape(x, w, b, "linear");
  const int64_t in = w.size(1), out_features = w.size(0);
  Tensor out = empty(out_shape, {.dtype = x.dtype(), .device = x.device()});
  {
    NoGradGuard no_grad;
    const Tensor x2 = x.detach().reshape({-1, in});
    Tensor out2 = out.view({-1, out_features});
    const bool on_cuda = x.device().is_cuda();
#ifdef TSUMUGI_WITH_CUDA
    if (on_cuda) {  // the bias is added in the GEMM's epilogue
      const Tensor bias = b.defined() ? b.detach().to(x.dtype()).contiguous() : Tensor();
      cuda::gemm(blas_ready(x2), 0, blas_ready(w.detach().t()), 0, out2, 1, bias);
    }
#endif
    if (!on_cuda) {
      if (b.defined()) out2.copy_(b.detach());  // broadcast the bias into every row, then accumulate
      gemm(x2, w.detach().t(), out2, 1.0, b.defined() ? 1.0 : 0.0);
    }
  }
  if (needs_grad({&x, &w, &b})) {
    record("linear", {x, w, b}, out, [xd = x.detach(), wd = w.detach(), gx = x.requires_grad(),
                                      gw = w.requires_grad(), gb = b.defined() && b.requires_grad()](const Tensor& g) {
      return linear_backward(g, xd, wd, gx, gw, gb);
    });
  }
  return out;
}

Tensor linear_gelu(const Tensor& x, const Tensor& w, const Tensor& b) {
  const Shape out_shape = linear_shape(x, w, b, "linear_gelu");
  if (!x.device().is_cuda()) return gelu(linear(x, w, b));
  Tensor out;
#ifdef TSUMUGI_WITH_CUDA
  // One GEMM whose epilogue adds the bias, keeps the pre-activation for backward and applies GELU.
  const int64_t in = w.size(1), out_features = w.size(0);
  const TensorOptions options{.dtype = x.dtype(), .device = x.device()};
  out = empty(out_shape, options);
  Tensor pre = empty(out_shape, options);  // x w^T + b
  {
    NoGradGuard no_grad;
    const Tensor bias = b.defined() ? b.detach().to(x.dtype()).contiguous() : Tensor();
    cuda::gemm(blas_ready(x.detach().reshape({-1, in})), 0, blas_ready(w.detach().t()), 0,
               out.view({-1, out_features}), 1, bias, pre.view({-1, out_features}));
  }
  if (needs_grad({&x, &w, &b})) {
    record("linear_gelu", {x, w, b}, out, [xd = x.detach(), wd = w.detach(), pre, gx = x.requires_grad(),
                                           gw = w.requires_grad(),
                                           gb = b.defined() && b.requires_grad()](const Tensor& g) {
      Tensor dpre = empty_like(pre);
      cuda::gelu_backward(g.to(pre.dtype()).contiguous(), pre, dpre);
      return linear_backward(dpre, xd, wd, gx, gw, gb);
    });
  }
#endif
  return out;
}

}  // namespace tsumugi
