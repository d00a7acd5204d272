// Fused causal self-attention with grouped-query heads, on the CPU.
//
// Forward, per (batch, head, block of kQueryBlock queries): S = Q K^T * scale over the keys the
// block can see, a masked row softmax, O = P V. Only one (kQueryBlock, S) score matrix per thread
// exists at a time; the row log-sum-exp L is saved. Backward recomputes P from Q, K and L
// (as FlashAttention does) per (batch, kv-head), looping over its query heads and blocks in order,
// so dK and dV are accumulated in a fixed order whatever the thread count.
// On CUDA the same algorithm runs in attention.cu (f32) and attention_mma*.cu (bf16, f16 on tensor
// cores); there the log-sum-exp is kept in f32.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../autograd_graph.h"
#include "../elementwise.h"
#include "../gemm.h"
#include "../vmath.h"
#ifdef TSUMUGI_WITH_CUDA
#include "attention_cuda.h"
#endif

namespace tsumugi {
namespace {

constexpr int64_t kQueryBlock = 64;

// Pointers and strides (in elements) of one (B, T, H, hd) operand whose last dimension is unit-stride.
template <class T>
struct HeadView {
  T* data;
  int64_t batch_stride, row_stride, head_stride;
  T* at(int64_t b, int64_t t, int64_t h) const { return data + b * batch_stride + t * row_stride + h * head_stride; }
};

template <class T>
HeadView<T> head_view(const Tensor& t) {
  return {static_cast<T*>(t.data_ptr()), t.stride(0), t.stride(1), t.stride(2)};
}

struct AttentionShape {
  int64_t batch, queries, keys, q_heads, kv_heads, head_dim;
  int64_t group() const { return q_heads / kv_heads; }
  int64_t blocks() const { return (queries + kQueryBlock - 1) / kQueryBlock; }
  // Keys visible to query t: 0 .. t + (keys - queries).
  int64_t visible(int64_t t) const { return t + (keys - queries) + 1; }
};

// Softmax of each score row over its visible keys; zeroes the masked tail. Returns log-sum-exp.
template <class T>
void masked_softmax_rows(T* scores, int64_t rows, int64_t ld, int64_t first_query, const AttentionShape& s, T* lse) {
  for (int64_t r = 0; r < rows; ++r) {
    T* row = scores + r * ld;
    const int64_t n = s.visible(first_query + r);
    T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < n; ++j) m = row[j] > m ? row[j] : m;
    T total = 0;
#pragma omp simd reduction(+ : total)
    for (int64_t j = 0; j < n; ++j) {
      row[j] = vmath::exp(row[j] - m);
      total += row[j];
    }
    const T inv = T(1) / total;
    for (int64_t j = 0; j < n; ++j) row[j] *= inv;
    for (int64_t j = n; j < ld; ++j) row[j] = 0;
    lse[r] = m + std::log(total);
  }
}

template <class T>
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse,
                       const AttentionShape& s, T scale) {
  const HeadView<T> Q = head_view<T>(q), K = head_view<T>(k), V = head_view<T>(v), O = head_view<T>(out);
  T* L = lse.data<T>();  // (B, Hq, T)
  const int64_t tasks = s.batch * s.q_heads * s.blocks();
#pragma omp parallel
  {
    std::vector<T> scores(static_cast<size_t>(kQueryBlock * s.keys));
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t block = task % s.blocks(), h = (task / s.blocks()) % s.q_heads, b = task / (s.blocks() * s.q_heads);
      const int64_t g = h / s.group();
      const int64_t t0 = block * kQueryBlock, rows = std::min(kQueryBlock, s.queries - t0);
      const int64_t kend = s.visible(t0 + rows - 1);
      gemm_raw<T>(false, true, rows, kend, s.head_dim, scale, Q.at(b, t0, h), Q.row_stride, K.at(b, 0, g), K.row_stride,
                  T(0), scores.data(), kend);
      masked_softmax_rows<T>(scores.data(), rows, kend, t0, s, L + (b * s.q_heads + h) * s.queries + t0);
      gemm_raw<T>(false, false, rows, s.head_dim, kend, T(1), scores.data(), kend, V.at(b, 0, g), V.row_stride, T(0),
                  O.at(b, t0, h), O.row_stride);
    }
  }
}

template <class T>
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& grad, Tensor& dq, Tensor& dk, Tensor& dv, const AttentionShape& s, T scale) {
  const HeadView<T> Q = head_view<T>(q), K = head_view<T>(k), V = head_view<T>(v), O = head_view<T>(out);
  const HeadView<T> dO = head_view<T>(grad), dQ = head_view<T>(dq), dK = head_view<T>(dk), dV = head_view<T>(dv);
  const T* L = lse.data<T>();
  const int64_t tasks = s.batch * s.kv_heads;
#pragma omp parallel
  {
    std::vector<T> p(static_cast<size_t>(kQueryBlock * s.keys));
    std::vector<T> dp(p.size());
    std::vector<T> delta(static_cast<size_t>(kQueryBlock));
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t b = task / s.kv_heads, g = task % s.kv_heads;
      for (int64_t h = g * s.group(); h < (g + 1) * s.group(); ++h) {
        for (int64_t block = 0; block < s.blocks(); ++block) {
          const int64_t t0 = block * kQueryBlock, rows = std::min(kQueryBlock, s.queries - t0);
          const int64_t kend = s.visible(t0 + rows - 1);
          const T* lse_rows = L + (b * s.q_heads + h) * s.queries + t0;
          // P = exp(Q K^T * scale - L), zero where masked.
          gemm_raw<T>(false, true, rows, kend, s.head_dim, scale, Q.at(b, t0, h), Q.row_stride, K.at(b, 0, g),
                      K.row_stride, T(0), p.data(), kend);
          for (int64_t r = 0; r < rows; ++r) {
            T* row = p.data() + r * kend;
            const int64_t n = s.visible(t0 + r);
            const T lse_r = lse_rows[r];
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) row[j] = vmath::exp(row[j] - lse_r);
            for (int64_t j = n; j < kend; ++j) row[j] = 0;
            const T* o_row = O.at(b, t0 + r, h);
            const T* do_row = dO.at(b, t0 + r, h);
            T d = 0;
#pragma omp simd reduction(+ : d)
            for (int64_t i = 0; i < s.head_dim; ++i) d += o_row[i] * do_row[i];
            delta[static_cast<size_t>(r)] = d;
          }
          // dV += P^T dO
          gemm_raw<T>(true, false, kend, s.head_dim, rows, T(1), p.data(), kend, dO.at(b, t0, h), dO.row_stride, T(1),
                      dV.at(b, 0, g), dV.row_stride);
          // dP = dO V^T; dS = P * (dP - delta)
          gemm_raw<T>(false, true, rows, kend, s.head_dim, T(1), dO.at(b, t0, h), dO.row_stride, V.at(b, 0, g),
                      V.row_stride, T(0), dp.data(), kend);
          for (int64_t r = 0; r < rows; ++r) {
            T* ds = dp.data() + r * kend;
            const T* pr = p.data() + r * kend;
            const T d = delta[static_cast<size_t>(r)];
#pragma omp simd
            for (int64_t j = 0; j < kend; ++j) ds[j] = pr[j] * (ds[j] - d);
          }
          // dQ = dS K * scale; dK += dS^T Q * scale
          gemm_raw<T>(false, false, rows, s.head_dim, kend, scale, dp.data(), kend, K.at(b, 0, g), K.row_stride, T(0),
                      dQ.at(b, t0, h), dQ.row_stride);
          gemm_raw<T>(true, false, kend, s.head_dim, rows, scale, dp.data(), kend, Q.at(b, t0, h), Q.row_stride, T(1),
                      dK.at(b, 0, g), dK.row_stride);
        }
      }
    }
  }
}

// BLAS reads each head as a (T, hd) matrix with leading dimension stride(1).
Tensor unit_last_stride(const Tensor& t) {
  return t.stride(3) == 1 && t.size(1) > 1 && t.stride(1) >= t.size(3) ? t : t.contiguous();
}

}  // namespace

Tensor causal_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, double scale) {
  TSU_CHECK(q_in.dim() == 4 && k_in.dim() == 4 && v_in.dim() == 4, ValueError,
            "[causal_attention] expects q (B, T, Hq, hd), k and v (B, S, Hkv, hd); got {}, {}, {}",
            shape_str(q_in.shape()), shape_str(k_in.shape()), shape_str(v_in.shape()));
  const AttentionShape s{q_in.size(0), q_in.size(1), k_in.size(1), q_in.size(2), k_in.size(2), q_in.size(3)};
  TSU_CHECK(k_in.shape() == v_in.shape() && k_in.size(0) == s.batch && k_in.size(3) == s.head_dim, ValueError,
            "[causal_attention] k {} and v {} must be (B, S, Hkv, {}) with B = {}", shape_str(k_in.shape()),
            shape_str(v_in.shape()), s.head_dim, s.batch);
  TSU_CHECK(s.kv_heads > 0 && s.q_heads % s.kv_heads == 0, ValueError,
            "[causal_attention] {} query heads are not a multiple of {} key/value heads", s.q_heads, s.kv_heads);
  TSU_CHECK(s.keys >= s.queries, ValueError, "[causal_attention] fewer keys ({}) than queries ({})", s.keys, s.queries);
  TSU_CHECK(q_in.dtype() == k_in.dtype() && q_in.dtype() == v_in.dtype(), ValueError,
            "[causal_attention] q, k and v dtypes differ");
  TSU_CHECK(k_in.device() == q_in.device() && v_in.device() == q_in.device(), ValueError,
            "[causal_attention] k is on {} and v on {} but q is on {}", k_in.device().str(), v_in.device().str(),
            q_in.device().str());
  const double sc = scale != 0 ? scale : 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  const Tensor q = unit_last_stride(q_in.detach()), k = unit_last_stride(k_in.detach()),
               v = unit_last_stride(v_in.detach());
  const bool on_gpu = q.device().is_cuda();
  Tensor out = empty(q.shape(), {.dtype = q.dtype(), .device = q.device()});
  // The CUDA kernels keep the log-sum-exp in f32 whatever the input dtype.
  Tensor lse = empty({s.batch, s.q_heads, s.queries}, {.dtype = on_gpu ? DType::f32 : q.dtype(), .device = q.device()});
#ifdef TSUMUGI_WITH_CUDA
  if (on_gpu) cuda::causal_attention_forward(q, k, v, out, lse, sc);
#endif
  if (!on_gpu) {
    dispatch_float(q.dtype(), "causal_attention", [&](auto tag) {
      using T = decltype(tag);
      attention_forward<T>(q, k, v, out, lse, s, static_cast<T>(sc));
    });
  }
  if (needs_grad({&q_in, &k_in, &v_in})) {
    record("causal_attention", {q_in, k_in, v_in}, out,
           [q, k, v, o = out.detach(), lse, s, sc](const Tensor& g_in) {
             const Tensor g = g_in.contiguous();
#ifdef TSUMUGI_WITH_CUDA
             if (g.device().is_cuda()) {
               // Every element of dq, dk and dv is written by the kernels.
               Tensor dq = empty(q.shape(), {.dtype = q.dtype(), .device = q.device()});
               Tensor dk = empty(k.shape(), {.dtype = k.dtype(), .device = k.device()});
               Tensor dv = empty(v.shape(), {.dtype = v.dtype(), .device = v.device()});
               cuda::causal_attention_backward(q, k, v, o, lse, g, dq, dk, dv, sc);
               return std::vector<Tensor>{dq, dk, dv};
             }
#endif
             Tensor dq = empty(q.shape(), {.dtype = q.dtype()});
             Tensor dk = zeros(k.shape(), {.dtype = k.dtype()});
             Tensor dv = zeros(v.shape(), {.dtype = v.dtype()});
             dispatch_float(q.dtype(), "causal_attention", [&](auto tag) {
               using T = decltype(tag);
               attention_backward<T>(q, k, v, o, lse, g, dq, dk, dv, s, static_cast<T>(sc));
             });
             return std::vector<Tensor>{dq, dk, dv};
           });
  }
  return out;
}

}  // namespace tsumugi
