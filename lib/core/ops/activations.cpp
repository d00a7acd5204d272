// Activations (GELU, SiLU, SwiGLU), rotary embedding and dropout.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>

#include <cmath>
#include <numbers>

#include "../autograd_graph.h"
#include "../elementwise.h"
#include "../vmath.h"
#include "activations_cuda.h"

namespace tsumugi {
namespace {

constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kGeluCubic = 0.044715;

template <class T>
inline T gelu_value(T x) {
  const T inner = static_cast<T>(kSqrt2OverPi) * (x + static_cast<T>(kGeluCubic) * x * x * x);
  return T(0.5) * x * (T(1) + vmath::tanh(inner));
}

template <class T>
inline T gelu_derivative(T x) {
  const T inner = static_cast<T>(kSqrt2OverPi) * (x + static_cast<T>(kGeluCubic) * x * x * x);
  const T t = vmath::tanh(inner);
  const T dinner = static_cast<T>(kSqrt2OverPi) * (T(1) + T(3 * kGeluCubic) * x * x);
  return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * dinner;
}

template <class T>
inline T silu_value(T x) { return x * vmath::sigmoid(x); }

template <class T>
inline T silu_derivative(T x) {
  const T s = vmath::sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}

#ifdef TSUMUGI_WITH_CUDA
// f(x) on the GPU, into a new contiguous tensor.
Tensor activation_cuda(cuda::Activation op, const Tensor& x_in) {
  const Tensor x = x_in.detach().contiguous();
  Tensor y = empty_like(x);
  cuda::activation_forward(op, y, x);
  return y;
}

// g * f'(x) on the GPU.
Tensor activation_backward_cuda(cuda::Activation op, const Tensor& g_in, const Tensor& x) {
  const Tensor g = g_in.contiguous();
  Tensor dx = empty_like(g);
  cuda::activation_backward(op, dx, g, x.contiguous());
  return dx;
}
#endif

}  // namespace

Tensor gelu(const Tensor& x) {
  Tensor y;
#ifdef TSUMUGI_WITH_CUDA
  if (x.device().is_cuda()) y = activation_cuda(cuda::Activation::gelu, x);
#endif
  if (!y.defined()) y = map1("gelu", x.detach(), [](auto v) { return gelu_value(v); });
  if (needs_grad({&x})) {
    record("gelu", {x}, y, [xd = x.detach()](const Tensor& g) {
#ifdef TSUMUGI_WITH_CUDA
      if (g.device().is_cuda()) return std::vector<Tensor>{activation_backward_cuda(cuda::Activation::gelu, g, xd)};
#endif
      return std::vector<Tensor>{map2("gelu", g, xd, [](auto gv, auto xv) { return gv * gelu_derivative(xv); })};
    });
  }
  return y;
}

Tensor silu(const Tensor& x) {
  Tensor y;
#ifdef TSUMUGI_WITH_CUDA
  if (x.device().is_cuda()) y = activation_cuda(cuda::Activation::silu, x);
#endif
  if (!y.defined()) y = map1("silu", x.detach(), [](auto v) { return silu_value(v); });
  if (needs_grad({&x})) {
    record("silu", {x}, y, [xd = x.detach()](const Tensor& g) {
#ifdef TSUMUGI_WITH_CUDA
      if (g.device().is_cuda()) return std::vector<Tensor>{activation_backward_cuda(cuda::Activation::silu, g, xd)};
#endif
      return std::vector<Tensor>{map2("silu", g, xd, [](auto gv, auto xv) { return gv * silu_derivative(xv); })};
    });
  }
  return y;
}

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  TSU_CHECK(up.device() == gate.device(), ValueError, "[swiglu] up is on {} but gate is on {}", up.device().str(),
            gate.device().str());
  Tensor y;
#ifdef TSUMUGI_WITH_CUDA
  if (gate.device().is_cuda()) {
    TSU_CHECK(gate.shape() == up.shape() && gate.dtype() == up.dtype(), ValueError,
              "[swiglu] gate and up differ: {} {} and {} {}", shape_str(gate.shape()), dtype_name(gate.dtype()),
              shape_str(up.shape()), dtype_name(up.dtype()));
    const Tensor gc = gate.detach().contiguous();
    y = empty_like(gc);
    cuda::swiglu_forward(y, gc, up.detach().contiguous());
  }
#endif
  if (!y.defined()) y = map2("swiglu", gate.detach(), up.detach(), [](auto a, auto b) { return silu_value(a) * b; });
  if (needs_grad({&gate, &up})) {
    record("swiglu", {gate, up}, y, [gd = gate.detach(), ud = up.detach()](const Tensor& g) {
#ifdef TSUMUGI_WITH_CUDA
      if (g.device().is_cuda()) {
        const Tensor gc = g.contiguous();
        Tensor dgate = empty_like(gc), dup = empty_like(gc);
        cuda::swiglu_backward(dgate, dup, gc, gd.contiguous(), ud.contiguous());
        return std::vector<Tensor>{dgate, dup};
      }
#endif
      Tensor dgate = map3("swiglu", g, gd, ud, [](auto gv, auto a, auto b) { return gv * b * silu_derivative(a); });
      Tensor dup = map2("swiglu", g, gd, [](auto gv, auto a) { return gv * silu_value(a); });
      return std::vector<Tensor>{dgate, dup};
    });
  }
  return y;
}

namespace {

// 1 / theta^(2i / head_dim) in T, as Hugging Face Llama computes it (float32 for f32 tensors).
template <class T>
T rope_inv_freq(int64_t i, int64_t head_dim, double theta) {
  return T(1) / static_cast<T>(std::pow(static_cast<T>(theta), static_cast<T>(2 * i) / static_cast<T>(head_dim)));
}

// cos and sin of position * inv_freq[i], (T, head_dim / 2), computed as Hugging Face Llama does:
// inv_freq and the angle in float32 for f32 tensors.
template <class T>
void rope_table(int64_t length, int64_t half, int64_t head_dim, double theta, int64_t offset, std::vector<T>& cos_t,
                std::vector<T>& sin_t) {
  cos_t.resize(static_cast<size_t>(length * half));
  sin_t.resize(cos_t.size());
  for (int64_t i = 0; i < half; ++i) {
    const T inv_freq = rope_inv_freq<T>(i, head_dim, theta);
    for (int64_t t = 0; t < length; ++t) {
      const T angle = static_cast<T>(offset + t) * inv_freq;
      cos_t[static_cast<size_t>(t * half + i)] = static_cast<T>(std::cos(static_cast<double>(angle)));
      sin_t[static_cast<size_t>(t * half + i)] = static_cast<T>(std::sin(static_cast<double>(angle)));
    }
  }
}

// Rotates pairs (i, i + half) of x (B, T, H, hd) by +angle (forward) or -angle (backward).
Tensor rope_kernel(const Tensor& x_in, double theta, int64_t offset, bool inverse) {
  const Tensor x = x_in.contiguous();
  const int64_t batch = x.size(0), length = x.size(1), heads = x.size(2), hd = x.size(3), half = hd / 2;
  Tensor y = empty_like(x);
#ifdef TSUMUGI_WITH_CUDA
  if (x.device().is_cuda()) {
    // The GPU computes in float (double for f64): the frequencies of that type, as the CPU has them.
    std::vector<double> inv_freq(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i) {
      inv_freq[static_cast<size_t>(i)] = x.dtype() == DType::f64 ? rope_inv_freq<double>(i, hd, theta)
                                                                  : rope_inv_freq<float>(i, hd, theta);
    }
    cuda::rope_rotate(y, x, inv_freq, offset, inverse);
    return y;
  }
#endif
  dispatch_float(x.dtype(), "rope", [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> cos_t, sin_t;
    rope_table<T>(length, half, hd, theta, offset, cos_t, sin_t);
    const T sign = inverse ? T(-1) : T(1);
    const T* in = x.data<T>();
    T* out = y.data<T>();
#pragma omp parallel for schedule(static) if (x.numel() > kParallelGrain)
    for (int64_t bt = 0; bt < batch * length; ++bt) {
      const int64_t t = bt % length;
      const T* c = cos_t.data() + t * half;
      const T* s = sin_t.data() + t * half;
      for (int64_t h = 0; h < heads; ++h) {
        const T* xr = in + (bt * heads + h) * hd;
        T* yr = out + (bt * heads + h) * hd;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const T x1 = xr[i], x2 = xr[i + half], si = sign * s[i];
          yr[i] = x1 * c[i] - x2 * si;
          yr[i + half] = x2 * c[i] + x1 * si;
        }
      }
    }
  });
  return y;
}

}  // namespace

Tensor rope(const Tensor& x, double theta, int64_t position_offset) {
  TSU_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, ValueError, "[rope] expects (B, T, H, head_dim) with an even head_dim, got {}",
            shape_str(x.shape()));
  TSU_CHECK(theta > 0 && position_offset >= 0, ValueError, "[rope] theta must be positive and the offset non-negative");
  Tensor y = rope_kernel(x.detach(), theta, position_offset, false);
  if (needs_grad({&x})) {
    record("rope", {x}, y, [theta, position_offset](const Tensor& g) {
      return std::vector<Tensor>{rope_kernel(g, theta, position_offset, true)};
    });
  }
  return y;
}

namespace {

// a * mask elementwise; on a GPU through mul (neither operand records a node).
Tensor apply_mask(const Tensor& a, const Tensor& mask) {
  if (a.device().is_cuda()) return mul(a.detach(), mask);
  return map2("dropout", a, mask, [](auto x, auto m) { return x * m; });
}

}  // namespace

Tensor dropout(const Tensor& x, double p, Generator& gen, bool training) {
  TSU_CHECK(p >= 0 && p < 1, ValueError, "[dropout] probability must be in [0, 1), got {}", p);
  if (!training || p == 0) return x;
  const int64_t n = x.numel();
  const uint64_t first = gen.advance(static_cast<uint64_t>((n + 3) / 4));
  const uint32_t threshold = static_cast<uint32_t>(p * 4294967296.0);
  Tensor mask = empty(x.shape(), {.dtype = x.dtype(), .device = x.device()});
  if (x.device().is_cuda()) {
#ifdef TSUMUGI_WITH_CUDA
    // Philox on the device: the CPU's mask for the same generator state, bit for bit.
    cuda::dropout_mask(mask, threshold, 1.0 / (1.0 - p), gen.seed(), gen.stream(), first);
#endif
  } else {
    dispatch_float(x.dtype(), "dropout", [&](auto tag) {
      using T = decltype(tag);
      T* m = mask.data<T>();
      const T scale = static_cast<T>(1.0 / (1.0 - p));
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
      for (int64_t block = 0; block < (n + 3) / 4; ++block) {
        const auto words = gen.block(first + static_cast<uint64_t>(block));
        for (int64_t j = 0; j < 4 && block * 4 + j < n; ++j) m[block * 4 + j] = words[j] >= threshold ? scale : T(0);
      }
    });
  }
  Tensor y = apply_mask(x.detach(), mask);
  if (needs_grad({&x})) {
    record("dropout", {x}, y, [mask](const Tensor& g) { return std::vector<Tensor>{apply_mask(g, mask)}; });
  }
  return y;
}

}  // namespace tsumugi
