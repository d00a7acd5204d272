// Softmax, log-softmax, LayerNorm and RMSNorm (with the fused residual add) on CUDA, forward and
// backward. CPU reference: softmax_rows, norm_forward and norm_backward in norms.cpp.
//
// One block per row, reading 128-bit packs when the row length and alignment allow. Each row is
// read a few times (statistics, then output); the repeats hit L1/L2. Parameter gradients are sums
// over rows: each block sums a fixed chunk of rows for 256 columns into a scratch tensor, and a
// second kernel adds the chunks in order, so the bits do not depend on scheduling.
#include "../cuda/device_math.cuh"
#include "../cuda/kernels.h"
#include "norms_cuda.h"
#include "row_kernels.cuh"

namespace tsumugi::cuda {
namespace {

constexpr int kRowThreads = 1024;   // softmax rows can be a whole vocabulary long
constexpr int kNormThreads = 256;   // norm rows are a model width (768 .. 8192)
constexpr int kColumnThreads = 256;  // columns per block in the parameter-gradient kernels

template <class T, int N>
__device__ __forceinline__ Pack<T, N> load_pack(const T* row, int64_t p) {
  return reinterpret_cast<const Pack<T, N>*>(row)[p];
}
template <class T, int N>
__device__ __forceinline__ void store_pack(T* row, int64_t p, const Pack<T, N>& v) {
  reinterpret_cast<Pack<T, N>*>(row)[p] = v;
}

// ---- softmax / log_softmax ----

template <class T, int N, bool Log>
__global__ void softmax_forward_kernel(const T* x, T* y, int64_t n) {
  using A = acc_t<T>;
  __shared__ A shared[64];
  const T* xr = x + blockIdx.x * n;
  T* yr = y + blockIdx.x * n;
  const int64_t packs = n / N;
  MaxSum<A> ms;
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const Pack<T, N> v = load_pack<T, N>(xr, p);
#pragma unroll
    for (int j = 0; j < N; ++j) ms.add(load_as<A>(&v.v[j]));
  }
  ms = block_max_sum(ms, shared);
  const A lse = ms.m + log_of(ms.s);
  const A inv = A(1) / ms.s;
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const Pack<T, N> v = load_pack<T, N>(xr, p);
    Pack<T, N> out;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const A xv = load_as<A>(&v.v[j]);
      if constexpr (Log) store_from(&out.v[j], xv - lse);
      else store_from(&out.v[j], exp_of(xv - ms.m) * inv);
    }
    store_pack(yr, p, out);
  }
}

// softmax: dx = y * (g - sum(g * y)); log_softmax: dx = g - exp(y) * sum(g).
template <class T, int N, bool Log>
__global__ void softmax_backward_kernel(const T* g, const T* y, T* dx, int64_t n) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  const int64_t offset = blockIdx.x * n;
  const int64_t packs = n / N;
  A acc = 0;
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const Pack<T, N> gv = load_pack<T, N>(g + offset, p), yv = load_pack<T, N>(y + offset, p);
#pragma unroll
    for (int j = 0; j < N; ++j) acc += Log ? load_as<A>(&gv.v[j]) : load_as<A>(&gv.v[j]) * load_as<A>(&yv.v[j]);
  }
  const A total = block_sum(acc, shared);
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const Pack<T, N> gv = load_pack<T, N>(g + offset, p), yv = load_pack<T, N>(y + offset, p);
    Pack<T, N> out;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const A gj = load_as<A>(&gv.v[j]), yj = load_as<A>(&yv.v[j]);
      if constexpr (Log) store_from(&out.v[j], gj - exp_of(yj) * total);
      else store_from(&out.v[j], yj * (gj - total));
    }
    store_pack(dx + offset, p, out);
  }
}

// ---- LayerNorm / RMSNorm ----

// Statistics in two passes (mean, then centred squares), as on the CPU. With a residual, the
// first pass writes s = x + residual rounded to T, and the rest reads s back: the row normalised
// is exactly the s returned (each thread re-reads only the packs it wrote).
template <class T, int N, bool Centered, bool Residual>
__global__ void norm_forward_kernel(const T* x, const T* res, const T* w, const T* b, T* s, T* y,
                                    acc_t<T>* mean_out, acc_t<T>* rstd_out, int64_t d, acc_t<T> eps) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  const int64_t offset = blockIdx.x * d;
  const int64_t packs = d / N;
  const T* src = Residual ? s + offset : x + offset;
  A total = 0;
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    Pack<T, N> v = load_pack<T, N>(x + offset, p);
    if constexpr (Residual) {
      const Pack<T, N> r = load_pack<T, N>(res + offset, p);
#pragma unroll
      for (int j = 0; j < N; ++j) store_from(&v.v[j], load_as<A>(&v.v[j]) + load_as<A>(&r.v[j]));
      store_pack(s + offset, p, v);
    }
#pragma unroll
    for (int j = 0; j < N; ++j) total += load_as<A>(&v.v[j]);
  }
  const A mu = Centered ? block_sum(total, shared) / A(d) : A(0);
  A squares = 0;
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const Pack<T, N> v = load_pack<T, N>(src, p);
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const A c = load_as<A>(&v.v[j]) - mu;
      squares += c * c;
    }
  }
  const A rstd = A(1) / sqrt_of(block_sum(squares, shared) / A(d) + eps);
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const Pack<T, N> v = load_pack<T, N>(src, p), wv = load_pack<T, N>(w, p);
    Pack<T, N> bv;
    if constexpr (Centered) bv = load_pack<T, N>(b, p);
    Pack<T, N> out;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      A o = (load_as<A>(&v.v[j]) - mu) * rstd * load_as<A>(&wv.v[j]);
      if constexpr (Centered) o += load_as<A>(&bv.v[j]);
      store_from(&out.v[j], o);
    }
    store_pack(y + offset, p, out);
  }
  if (threadIdx.x == 0) {
    if constexpr (Centered) mean_out[blockIdx.x] = mu;
    rstd_out[blockIdx.x] = rstd;
  }
}

// dx = rstd * (g w - mean(g w) - xhat * mean(g w xhat)) (+ ds), the CPU's norm_backward formula
// (no mean(g w) term for RMSNorm).
template <class T, int N, bool Centered, bool AddDs>
__global__ void norm_backward_dx_kernel(const T* g, const T* ds, const T* x, const T* w, const acc_t<T>* mean,
                                        const acc_t<T>* rstd, T* dx, int64_t d) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  const int64_t offset = blockIdx.x * d;
  const int64_t packs = d / N;
  const A mu = Centered ? mean[blockIdx.x] : A(0);
  const A r = rstd[blockIdx.x];
  A sum_dxhat = 0, sum_dxhat_xhat = 0;
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const Pack<T, N> gv = load_pack<T, N>(g + offset, p), xv = load_pack<T, N>(x + offset, p);
    const Pack<T, N> wv = load_pack<T, N>(w, p);
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const A dxhat = load_as<A>(&gv.v[j]) * load_as<A>(&wv.v[j]);
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * (load_as<A>(&xv.v[j]) - mu) * r;
    }
  }
  const A mean_dxhat = Centered ? block_sum(sum_dxhat, shared) / A(d) : A(0);
  const A mean_dxhat_xhat = block_sum(sum_dxhat_xhat, shared) / A(d);
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const Pack<T, N> gv = load_pack<T, N>(g + offset, p), xv = load_pack<T, N>(x + offset, p);
    const Pack<T, N> wv = load_pack<T, N>(w, p);
    Pack<T, N> dsv;
    if constexpr (AddDs) dsv = load_pack<T, N>(ds + offset, p);
    Pack<T, N> out;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const A xhat = (load_as<A>(&xv.v[j]) - mu) * r;
      A v = r * (load_as<A>(&gv.v[j]) * load_as<A>(&wv.v[j]) - mean_dxhat - xhat * mean_dxhat_xhat);
      if constexpr (AddDs) v += load_as<A>(&dsv.v[j]);
      store_from(&out.v[j], v);
    }
    store_pack(dx + offset, p, out);
  }
}

// partial_w[chunk, c] = sum of g * xhat over the chunk's rows (and partial_b of g), column c.
template <class T, bool Centered>
__global__ void norm_param_partials_kernel(const T* g, const T* x, const acc_t<T>* mean, const acc_t<T>* rstd,
                                           acc_t<T>* partial_w, acc_t<T>* partial_b, int64_t rows, int64_t d,
                                           int64_t rows_per_chunk) {
  using A = acc_t<T>;
  const int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (col >= d) return;
  const int64_t r0 = blockIdx.y * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  A acc_w = 0, acc_b = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const A gv = load_as<A>(g + r * d + col);
    const A mu = Centered ? mean[r] : A(0);
    acc_w += gv * (load_as<A>(x + r * d + col) - mu) * rstd[r];
    if constexpr (Centered) acc_b += gv;
  }
  partial_w[blockIdx.y * d + col] = acc_w;
  if constexpr (Centered) partial_b[blockIdx.y * d + col] = acc_b;
}

template <class T, bool Centered>
__global__ void norm_param_finish_kernel(const acc_t<T>* partial_w, const acc_t<T>* partial_b, T* dw, T* db,
                                         int64_t chunks, int64_t d) {
  using A = acc_t<T>;
  const int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (col >= d) return;
  A acc_w = 0, acc_b = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    acc_w += partial_w[c * d + col];
    if constexpr (Centered) acc_b += partial_b[c * d + col];
  }
  store_from(dw + col, acc_w);
  if constexpr (Centered) store_from(db + col, acc_b);
}


template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? ptr<const T>(t) : nullptr;
}

}  // namespace

void softmax_forward(const Tensor& x, const Tensor& y, bool log) {
  const int64_t n = x.dim() == 0 ? 1 : x.size(-1);
  const int64_t rows = n == 0 ? 0 : x.numel() / n;
  if (rows == 0) return;
  cudaStream_t stream = stream_of(x);
  dispatch_float(x.dtype(), log ? "log_softmax" : "softmax", [&](auto tag) {
    using T = decltype(tag);
    with_pack<T>(n, {x.data_ptr(), y.data_ptr()}, [&](auto pack) {
      constexpr int N = decltype(pack)::value;
      const int threads = row_threads(n / N, kRowThreads);
      auto kernel = log ? softmax_forward_kernel<T, N, true> : softmax_forward_kernel<T, N, false>;
      kernel<<<rows, threads, 0, stream>>>(ptr<const T>(x), ptr<T>(y), n);
      TSU_CUDA_CHECK_LAUNCH();
    });
  });
}

void softmax_backward(const Tensor& g, const Tensor& y, const Tensor& dx, bool log) {
  const int64_t n = y.dim() == 0 ? 1 : y.size(-1);
  const int64_t rows = n == 0 ? 0 : y.numel() / n;
  if (rows == 0) return;
  cudaStream_t stream = stream_of(y);
  dispatch_float(y.dtype(), log ? "log_softmax" : "softmax", [&](auto tag) {
    using T = decltype(tag);
    with_pack<T>(n, {g.data_ptr(), y.data_ptr(), dx.data_ptr()}, [&](auto pack) {
      constexpr int N = decltype(pack)::value;
      const int threads = row_threads(n / N, kRowThreads);
      auto kernel = log ? softmax_backward_kernel<T, N, true> : softmax_backward_kernel<T, N, false>;
      kernel<<<rows, threads, 0, stream>>>(ptr<const T>(g), ptr<const T>(y), ptr<T>(dx), n);
      TSU_CUDA_CHECK_LAUNCH();
    });
  });
}

void norm_forward(const Tensor& x, const Tensor& residual, const Tensor& weight, const Tensor& bias, const Tensor& s,
                  const Tensor& y, const Tensor& mean, const Tensor& rstd, bool centered, double eps) {
  const int64_t d = x.size(-1);
  const int64_t rows = d == 0 ? 0 : x.numel() / d;
  if (rows == 0) return;
  cudaStream_t stream = stream_of(x);
  const char* name = centered ? "layer_norm" : "rms_norm";
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const T* res = ptr_or_null<T>(residual);
    with_pack<T>(d, {x.data_ptr(), res, weight.data_ptr(), ptr_or_null<T>(bias), s.defined() ? s.data_ptr() : nullptr,
                     y.data_ptr()},
                 [&](auto pack) {
                   constexpr int N = decltype(pack)::value;
                   const int threads = row_threads(d / N, kNormThreads);
                   auto launch = [&](auto kernel) {
                     kernel<<<rows, threads, 0, stream>>>(
                         ptr<const T>(x), res, ptr<const T>(weight), ptr_or_null<T>(bias),
                         s.defined() ? ptr<T>(s) : nullptr, ptr<T>(y), centered ? ptr<A>(mean) : nullptr, ptr<A>(rstd),
                         d, static_cast<A>(eps));
                     TSU_CUDA_CHECK_LAUNCH();
                   };
                   if (centered && res) launch(norm_forward_kernel<T, N, true, true>);
                   else if (centered) launch(norm_forward_kernel<T, N, true, false>);
                   else if (res) launch(norm_forward_kernel<T, N, false, true>);
                   else launch(norm_forward_kernel<T, N, false, false>);
                 });
  });
}

void norm_backward(const Tensor& g, const Tensor& ds, const Tensor& x, const Tensor& weight, const Tensor& mean,
                   const Tensor& rstd, const Tensor& dx, const Tensor& dweight, const Tensor& dbias, bool centered) {
  const int64_t d = x.size(-1);
  const int64_t rows = d == 0 ? 0 : x.numel() / d;
  if (d == 0) return;
  if (rows == 0) {  // no rows: the parameter gradients are zero
    fill(dweight, 0.0);
    if (centered) fill(dbias, 0.0);
    return;
  }
  cudaStream_t stream = stream_of(x);
  const char* name = centered ? "layer_norm" : "rms_norm";
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const T* dsp = ptr_or_null<T>(ds);
    const A* meanp = centered ? ptr<const A>(mean) : nullptr;
    with_pack<T>(d, {g.data_ptr(), dsp, x.data_ptr(), weight.data_ptr(), dx.data_ptr()}, [&](auto pack) {
      constexpr int N = decltype(pack)::value;
      const int threads = row_threads(d / N, kNormThreads);
      auto launch = [&](auto kernel) {
        kernel<<<rows, threads, 0, stream>>>(ptr<const T>(g), dsp, ptr<const T>(x), ptr<const T>(weight), meanp,
                                             ptr<const A>(rstd), ptr<T>(dx), d);
        TSU_CUDA_CHECK_LAUNCH();
      };
      if (centered && dsp) launch(norm_backward_dx_kernel<T, N, true, true>);
      else if (centered) launch(norm_backward_dx_kernel<T, N, true, false>);
      else if (dsp) launch(norm_backward_dx_kernel<T, N, false, true>);
      else launch(norm_backward_dx_kernel<T, N, false, false>);
    });

    // A fixed number of rows per chunk (a function of the shape only): about 1024 chunks at most.
    const int64_t rows_per_chunk = std::max<int64_t>(32, (rows + 1023) / 1024);
    const int64_t chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
    const TensorOptions scratch{.dtype = std::is_same_v<T, double> ? DType::f64 : DType::f32, .device = x.device()};
    const Tensor partial_w = empty({chunks, d}, scratch);
    const Tensor partial_b = centered ? empty({chunks, d}, scratch) : Tensor();
    A* pw = ptr<A>(partial_w);
    A* pb = centered ? ptr<A>(partial_b) : nullptr;
    const unsigned col_blocks = static_cast<unsigned>((d + kColumnThreads - 1) / kColumnThreads);
    const dim3 grid(col_blocks, static_cast<unsigned>(chunks));
    if (centered) {
      norm_param_partials_kernel<T, true><<<grid, kColumnThreads, 0, stream>>>(ptr<const T>(g), ptr<const T>(x), meanp,
                                                                               ptr<const A>(rstd), pw, pb, rows, d,
                                                                               rows_per_chunk);
      TSU_CUDA_CHECK_LAUNCH();
      norm_param_finish_kernel<T, true><<<col_blocks, kColumnThreads, 0, stream>>>(pw, pb, ptr<T>(dweight),
                                                                                 ptr<T>(dbias), chunks, d);
      TSU_CUDA_CHECK_LAUNCH();
    } else {
      norm_param_partials_kernel<T, false><<<grid, kColumnThreads, 0, stream>>>(ptr<const T>(g), ptr<const T>(x), meanp,
                                                                                ptr<const A>(rstd), pw, pb, rows, d,
                                                                                rows_per_chunk);
      TSU_CUDA_CHECK_LAUNCH();
      norm_param_finish_kernel<T, false><<<col_blocks, kColumnThreads, 0, stream>>>(pw, pb, ptr<T>(dweight), nullptr,
                                                                                  chunks, d);
      TSU_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace tsumugi::cuda
