// CUDA kernels of GELU, SiLU, SwiGLU (forward and backward), rotary embedding and dropout's mask.
// CPU reference: activations.cpp; the formulas below are the CPU's, in the same order.
#include "activations_cuda.h"
#include "elementwise.cuh"

namespace tsumugi::cuda {
namespace {

constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kGeluCubic = 0.044715;

template <class A>
__device__ __forceinline__ A gelu_value(A x) {
  const A inner = A(kSqrt2OverPi) * (x + A(kGeluCubic) * x * x * x);
  return A(0.5) * x * (A(1) + math_tanh(inner));
}

template <class A>
__device__ __forceinline__ A gelu_derivative(A x) {
  const A inner = A(kSqrt2OverPi) * (x + A(kGeluCubic) * x * x * x);
  const A t = math_tanh(inner);
  const A dinner = A(kSqrt2OverPi) * (A(1) + A(3 * kGeluCubic) * x * x);
  return A(0.5) * (A(1) + t) + A(0.5) * x * (A(1) - t * t) * dinner;
}

template <class A>
__device__ __forceinline__ A silu_value(A x) {
  return x * math_sigmoid(x);
}

template <class A>
__device__ __forceinline__ A silu_derivative(A x) {
  const A s = math_sigmoid(x);
  return s * (A(1) + x * (A(1) - s));
}

struct Gelu {
  template <class A>
  __device__ __forceinline__ A operator()(A x) const { return gelu_value(x); }
};
struct GeluGrad {
  template <class A>
  __device__ __forceinline__ A operator()(A g, A x) const { return g * gelu_derivative(x); }
};
struct Silu {
  template <class A>
  __device__ __forceinline__ A operator()(A x) const { return silu_value(x); }
};
struct SiluGrad {
  template <class A>
  __device__ __forceinline__ A operator()(A g, A x) const { return g * silu_derivative(x); }
};
struct Swiglu {
  template <class A>
  __device__ __forceinline__ A operator()(A gate, A up) const { return silu_value(gate) * up; }
};

// dgate and dup in one pass over g, gate, up (128-bit loads when all five are aligned).
template <class T>
__global__ void swiglu_backward_kernel(T* __restrict__ dgate, T* __restrict__ dup, const T* __restrict__ g,
                                       const T* __restrict__ gate, const T* __restrict__ up, int64_t n,
                                       bool vectorized) {
  using A = acc_t<T>;
  constexpr int V = kVecWidth<T>;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  int64_t done = 0;
  if (vectorized) {
    const int64_t vectors = n / V;
    for (int64_t j = first; j < vectors; j += step) {
      const Vec<T> gv = reinterpret_cast<const Vec<T>*>(g)[j];
      const Vec<T> av = reinterpret_cast<const Vec<T>*>(gate)[j];
      const Vec<T> bv = reinterpret_cast<const Vec<T>*>(up)[j];
      Vec<T> da, db;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const A gx = load_as<A>(&gv.v[e]), a = load_as<A>(&av.v[e]), b = load_as<A>(&bv.v[e]);
        store_from(&da.v[e], gx * b * silu_derivative(a));
        store_from(&db.v[e], gx * silu_value(a));
      }
      reinterpret_cast<Vec<T>*>(dgate)[j] = da;
      reinterpret_cast<Vec<T>*>(dup)[j] = db;
    }
    done = vectors * V;
  }
  for (int64_t i = done + first; i < n; i += step) {
    const A gx = load_as<A>(g + i), a = load_as<A>(gate + i), b = load_as<A>(up + i);
    store_from(dgate + i, gx * b * silu_derivative(a));
    store_from(dup + i, gx * silu_value(a));
  }
}

// ---- rotary embedding ----
struct RopeFrequencies {
  double inv_freq[kRopeMaxHalf];  // values of the compute type A, exactly
};

// table[t, i] = (cos, sin) of angle = A(offset + t) * inv_freq[i], the angle rounded to A and its
// cosine and sine taken in double, as the CPU's rope_table does.
template <class A>
__global__ void rope_table_kernel(A* table, RopeFrequencies f, int64_t length, int64_t half, int64_t offset) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < length * half;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / half, i = e % half;
    const A angle = static_cast<A>(offset + t) * static_cast<A>(f.inv_freq[i]);
    table[2 * e] = static_cast<A>(::cos(static_cast<double>(angle)));
    table[2 * e + 1] = static_cast<A>(::sin(static_cast<double>(angle)));
  }
}

// One thread per pair (row, i) of x viewed as rows (B * T * H, hd); row = (b * T + t) * H + h.
template <class T>
__global__ void rope_kernel(T* __restrict__ y, const T* __restrict__ x, const acc_t<T>* __restrict__ table,
                            int64_t pairs, int64_t length, int64_t heads, int64_t half, bool inverse) {
  using A = acc_t<T>;
  const A sign = inverse ? A(-1) : A(1);
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = p % half, row = p / half;
    const int64_t t = (row / heads) % length;
    const A c = table[2 * (t * half + i)];
    const A si = sign * table[2 * (t * half + i) + 1];
    const T* xr = x + row * 2 * half;
    T* yr = y + row * 2 * half;
    const A x1 = load_as<A>(xr + i), x2 = load_as<A>(xr + i + half);
    store_from(yr + i, x1 * c - x2 * si);
    store_from(yr + i + half, x2 * c + x1 * si);
  }
}

// ---- dropout: Philox-4x32-10, the same function as random.cpp's philox4x32 ----
constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;

__device__ __forceinline__ uint4 philox4x32(uint4 c, uint64_t key) {
  uint32_t k0 = static_cast<uint32_t>(key);
  uint32_t k1 = static_cast<uint32_t>(key >> 32);
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = __umulhi(kMul0, c.x), lo0 = kMul0 * c.x;
    const uint32_t hi1 = __umulhi(kMul1, c.z), lo1 = kMul1 * c.z;
    c = make_uint4(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return c;
}

// One thread per Philox block of four elements (Generator::block's counter layout).
template <class T>
__global__ void dropout_mask_kernel(T* mask, int64_t n, uint32_t threshold, acc_t<T> scale, uint64_t seed,
                                    uint64_t stream, uint64_t first_block) {
  using A = acc_t<T>;
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks; b += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t index = first_block + static_cast<uint64_t>(b);
    const uint4 w = philox4x32(make_uint4(static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                                          static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)),
                               seed);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (b * 4 + j < n) store_from(mask + b * 4 + j, words[j] >= threshold ? scale : A(0));
    }
  }
}

void require_same(const char* op, const Tensor& out, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) require_like(op, out, *t, "every operand");
}

const char* activation_name(Activation op) { return op == Activation::gelu ? "gelu" : "silu"; }

}  // namespace

void activation_forward(Activation op, const Tensor& y, const Tensor& x) {
  const char* name = activation_name(op);
  require_like(name, y, x, "the input");
  dispatch_float(y.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    if (op == Activation::gelu) launch_map<T, 1>(y, {x}, Gelu{});
    else launch_map<T, 1>(y, {x}, Silu{});
  });
}

void activation_backward(Activation op, const Tensor& dx, const Tensor& g, const Tensor& x) {
  const char* name = activation_name(op);
  require_same(name, dx, {&g, &x});
  dispatch_float(dx.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    if (op == Activation::gelu) launch_map<T, 2>(dx, {g, x}, GeluGrad{});
    else launch_map<T, 2>(dx, {g, x}, SiluGrad{});
  });
}

void swiglu_forward(const Tensor& y, const Tensor& gate, const Tensor& up) {
  require_same("swiglu", y, {&gate, &up});
  dispatch_float(y.dtype(), "swiglu", [&](auto tag) {
    using T = decltype(tag);
    launch_map<T, 2>(y, {gate, up}, Swiglu{});
  });
}

void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& g, const Tensor& gate, const Tensor& up) {
  require_same("swiglu", dgate, {&dup, &g, &gate, &up});
  const int64_t n = dgate.numel();
  if (n == 0) return;
  dispatch_float(dgate.dtype(), "swiglu", [&](auto tag) {
    using T = decltype(tag);
    const bool vectorized = aligned16(dgate.data_ptr()) && aligned16(dup.data_ptr()) && aligned16(g.data_ptr()) &&
                            aligned16(gate.data_ptr()) && aligned16(up.data_ptr());
    constexpr int kThreads = 256;
    const int64_t work = vectorized ? (n + kVecWidth<T> - 1) / kVecWidth<T> : n;
    swiglu_backward_kernel<T><<<blocks_for(work, kThreads), kThreads, 0, stream_of(dgate)>>>(
        ptr<T>(dgate), ptr<T>(dup), ptr<const T>(g), ptr<const T>(gate), ptr<const T>(up), n, vectorized);
    TSU_CUDA_CHECK_LAUNCH();
  });
}

void rope_rotate(const Tensor& y, const Tensor& x, const std::vector<double>& inv_freq, int64_t position_offset,
                 bool inverse) {
  require_like("rope", y, x, "the input");
  TSU_CUDA_REQUIRE(x.dim() == 4 && x.size(3) % 2 == 0, ValueError, "[rope] internal: x must be (B, T, H, head_dim)");
  const int64_t length = x.size(1), heads = x.size(2), half = x.size(3) / 2;
  TSU_CUDA_REQUIRE(half <= kRopeMaxHalf, ValueError,
                   "[rope] head_dim " + std::to_string(2 * half) + " is larger than the CUDA kernel's " +
                       std::to_string(2 * kRopeMaxHalf));
  TSU_CUDA_REQUIRE(static_cast<int64_t>(inv_freq.size()) == half, ValueError,
                   "[rope] internal: one frequency per pair expected");
  const int64_t pairs = x.numel() / 2;
  if (pairs == 0) return;
  RopeFrequencies f{};
  for (int64_t i = 0; i < half; ++i) f.inv_freq[i] = inv_freq[static_cast<size_t>(i)];
  cudaStream_t s = stream_of(y);
  dispatch_float(x.dtype(), "rope", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int kThreads = 256;
    const DType table_dtype = std::is_same_v<A, double> ? DType::f64 : DType::f32;
    const Tensor table = empty({length, half, 2}, {.dtype = table_dtype, .device = x.device()});  // (cos, sin)
    rope_table_kernel<A><<<blocks_for(length * half, kThreads), kThreads, 0, s>>>(ptr<A>(table), f, length, half,
                                                                                  position_offset);
    TSU_CUDA_CHECK_LAUNCH();
    rope_kernel<T><<<blocks_for(pairs, kThreads), kThreads, 0, s>>>(ptr<T>(y), ptr<const T>(x), ptr<const A>(table),
                                                                    pairs, length, heads, half, inverse);
    TSU_CUDA_CHECK_LAUNCH();
  });
}

void dropout_mask(const Tensor& mask, uint32_t threshold, double scale, uint64_t seed, uint64_t stream,
                  uint64_t first_block) {
  TSU_CUDA_REQUIRE(mask.device().is_cuda() && mask.is_contiguous(), ValueError,
                   "[dropout] internal: the mask must be a contiguous CUDA tensor");
  const int64_t n = mask.numel();
  if (n == 0) return;
  dispatch_float(mask.dtype(), "dropout", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int kThreads = 256;
    dropout_mask_kernel<T><<<blocks_for((n + 3) / 4, kThreads), kThreads, 0, stream_of(mask)>>>(
        ptr<T>(mask), n, threshold, static_cast<A>(scale), seed, stream, first_block);
    TSU_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tsumugi::cuda
