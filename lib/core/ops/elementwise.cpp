// Elementwise arithmetic with broadcasting, and unary math.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>

#include "../autograd_graph.h"
#include "../elementwise.h"
#include "../strided.h"
#include "../vmath.h"
#include "elementwise_cuda.h"

namespace tsumugi {

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    TSU_CHECK(da == db || da == 1 || db == 1, ValueError, "[{}] shapes {} and {} do not broadcast", op, shape_str(a),
              shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

namespace {

enum class BinaryOp { add, sub, mul, div };

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return "add";
    case BinaryOp::sub: return "sub";
    case BinaryOp::mul: return "mul";
    case BinaryOp::div: return "div";
  }
  return "?";
}

constexpr cuda::BinaryOp cuda_binary_op(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return cuda::BinaryOp::add;
    case BinaryOp::sub: return cuda::BinaryOp::sub;
    case BinaryOp::mul: return cuda::BinaryOp::mul;
    case BinaryOp::div: return cuda::BinaryOp::div;
  }
  return cuda::BinaryOp::add;
}

template <BinaryOp Op, class T>
inline T apply(T x, T y) {
  if constexpr (Op == BinaryOp::add) return x + y;
  else if constexpr (Op == BinaryOp::sub) return x - y;
  else if constexpr (Op == BinaryOp::mul) return x * y;
  else return x / y;
}

template <BinaryOp Op>
Tensor binary_kernel(const Tensor& a, const Tensor& b) {
  const char* name = binary_name(Op);
  TSU_CHECK(a.dtype() == b.dtype(), ValueError, "[{}] dtypes differ: {} and {}", name, dtype_name(a.dtype()),
            dtype_name(b.dtype()));
  TSU_CHECK(a.device() == b.device(), ValueError, "[{}] b is on {} but a is on {}", name, b.device().str(),
            a.device().str());
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = empty(shape, {.dtype = a.dtype(), .device = a.device()});
  const Tensor ea = a.detach().expand(shape);
  const Tensor eb = b.detach().expand(shape);
#ifdef TSUMUGI_WITH_CUDA
  if (a.device().is_cuda()) {
    cuda::binary(cuda_binary_op(Op), out, ea, eb);
    return out;
  }
#endif
  dispatch_float(a.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    T* o = out.data<T>();
    const T* pa = ea.data<T>();
    const T* pb = eb.data<T>();
    for_each_row<3>(shape, {out.strides(), ea.strides(), eb.strides()},
                    [&](const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& st) {
                      T* po = o + off[0];
                      const T* x = pa + off[1];
                      const T* y = pb + off[2];
                      if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
#pragma omp simd
                        for (int64_t k = 0; k < n; ++k) po[k] = apply<Op>(x[k], y[k]);
                      } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
                        const T yv = y[0];
#pragma omp simd
                        for (int64_t k = 0; k < n; ++k) po[k] = apply<Op>(x[k], yv);
                      } else if (st[0] == 1 && st[1] == 0 && st[2] == 1) {
                        const T xv = x[0];
#pragma omp simd
                        for (int64_t k = 0; k < n; ++k) po[k] = apply<Op>(xv, y[k]);
                      } else {
                        for (int64_t k = 0; k < n; ++k) po[k * st[0]] = apply<Op>(x[k * st[1]], y[k * st[2]]);
                      }
                    });
  });
  return out;
}

std::vector<Tensor> two(Tensor a, Tensor b) { return {std::move(a), std::move(b)}; }

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel<BinaryOp::add>(a, b);
  if (needs_grad({&a, &b})) {
    record("add", {a, b}, out, [sa = a.shape(), sb = b.shape()](const Tensor& g) {
      return two(sum_to(g, sa), sum_to(g, sb));
    });
  }
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel<BinaryOp::sub>(a, b);
  if (needs_grad({&a, &b})) {
    record("sub", {a, b}, out, [sa = a.shape(), sb = b.shape()](const Tensor& g) {
      return two(sum_to(g, sa), sum_to(neg(g), sb));
    });
  }
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel<BinaryOp::mul>(a, b);
  if (needs_grad({&a, &b})) {
    const bool ga = a.requires_grad();
    const bool gb = b.requires_grad();
    record("mul", {a, b}, out, [ad = a.detach(), bd = b.detach(), ga, gb](const Tensor& g) {
      return two(ga ? sum_to(mul(g, bd), ad.shape()) : Tensor(), gb ? sum_to(mul(g, ad), bd.shape()) : Tensor());
    });
  }
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel<BinaryOp::div>(a, b);
  if (needs_grad({&a, &b})) {
    const bool gb = b.requires_grad();
    record("div", {a, b}, out, [ad = a.detach(), bd = b.detach(), gb](const Tensor& g) {
      Tensor ga = sum_to(div(g, bd), ad.shape());
      Tensor gbv = gb ? sum_to(neg(div(mul(g, ad), mul(bd, bd))), bd.shape()) : Tensor();
      return two(ga, gbv);
    });
  }
  return out;
}

#ifdef TSUMUGI_WITH_CUDA
namespace {

// f(x) on the GPU, in a new contiguous tensor (the CPU's map1 also reads x contiguous).
Tensor unary_cuda(cuda::UnaryOp op, const Tensor& x_in, double p0, double p1) {
  const Tensor x = x_in.detach().contiguous();
  Tensor out = empty_like(x);
  cuda::unary(op, out, x, p0, p1);
  return out;
}

// g * f'(x) on the GPU, from x or y = f(x) as the op's formula needs.
Tensor unary_backward_cuda(cuda::UnaryOp op, const Tensor& g, const Tensor& x, const Tensor& y, double p0) {
  const Tensor gc = g.contiguous();
  Tensor dx = empty_like(gc);
  cuda::unary_backward(op, dx, gc, x.contiguous(), y.contiguous(), p0);
  return dx;
}

}  // namespace
#endif

Tensor affine(const Tensor& x, double alpha, double beta) {
  Tensor out;
#ifdef TSUMUGI_WITH_CUDA
  if (x.device().is_cuda()) out = unary_cuda(cuda::UnaryOp::affine, x, alpha, beta);
#endif
  if (!out.defined()) {
    out = dispatch_float(x.dtype(), "affine", [&](auto tag) {
      using T = decltype(tag);
      const T a = static_cast<T>(alpha);
      const T b = static_cast<T>(beta);
      return map1("affine", x, [a, b](T v) { return v * a + b; });
    });
  }
  if (needs_grad({&x})) record("affine", {x}, out, [alpha](const Tensor& g) { return std::vector<Tensor>{affine(g, alpha, 0.0)}; });
  return out;
}

Tensor neg(const Tensor& x) { return affine(x, -1.0, 0.0); }

namespace {

// A unary op whose backward is g * dfdx(x, y); `op` and `param` name it to the CUDA kernels.
template <class F, class D>
Tensor unary(const char* name, cuda::UnaryOp op, double param, const Tensor& x, F&& f, D&& dfdx) {
  Tensor out;
#ifdef TSUMUGI_WITH_CUDA
  if (x.device().is_cuda()) out = unary_cuda(op, x, param, 0.0);
#endif
  if (!out.defined()) out = map1(name, x, f);
  if (needs_grad({&x})) {
    record(name, {x}, out, [name, op, param, xd = x.detach(), yd = out.detach(), dfdx](const Tensor& g) {
#ifdef TSUMUGI_WITH_CUDA
      if (g.device().is_cuda()) return std::vector<Tensor>{unary_backward_cuda(op, g, xd, yd, param)};
#endif
      return std::vector<Tensor>{
          map3(name, g, xd, yd, [dfdx](auto gv, auto xv, auto yv) { return gv * dfdx(xv, yv); })};
    });
  }
  return out;
}

}  // namespace

Tensor exp(const Tensor& x) {
  return unary("exp", cuda::UnaryOp::exp, 0.0, x, [](auto v) { return vmath::exp(v); },
               [](auto, auto y) { return y; });
}
Tensor log(const Tensor& x) {
  return unary("log", cuda::UnaryOp::log, 0.0, x, [](auto v) { return std::log(v); },
               [](auto v, auto) { return 1 / v; });
}
Tensor tanh(const Tensor& x) {
  return unary("tanh", cuda::UnaryOp::tanh, 0.0, x, [](auto v) { return std::tanh(v); },
               [](auto, auto y) { return 1 - y * y; });
}
Tensor sigmoid(const Tensor& x) {
  return unary("sigmoid", cuda::UnaryOp::sigmoid, 0.0, x, [](auto v) { return vmath::sigmoid(v); },
               [](auto, auto y) { return y * (1 - y); });
}
Tensor sqrt(const Tensor& x) {
  return unary("sqrt", cuda::UnaryOp::sqrt, 0.0, x, [](auto v) { return std::sqrt(v); },
               [](auto, auto y) { return decltype(y)(0.5) / y; });
}
Tensor relu(const Tensor& x) {
  return unary("relu", cuda::UnaryOp::relu, 0.0, x, [](auto v) { return v > 0 ? v : decltype(v)(0); },
               [](auto v, auto) { return v > 0 ? decltype(v)(1) : decltype(v)(0); });
}
Tensor square(const Tensor& x) {
  return unary("square", cuda::UnaryOp::square, 0.0, x, [](auto v) { return v * v; },
               [](auto v, auto) { return 2 * v; });
}
Tensor pow(const Tensor& x, double exponent) {
  return unary(
      "pow", cuda::UnaryOp::pow, exponent, x, [exponent](auto v) { return static_cast<decltype(v)>(std::pow(v, exponent)); },
      [exponent](auto v, auto) { return static_cast<decltype(v)>(exponent * std::pow(v, exponent - 1)); });
}

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator+(const Tensor& a, double b) { return affine(a, 1.0, b); }
Tensor operator-(const Tensor& a, double b) { return affine(a, 1.0, -b); }
Tensor operator*(const Tensor& a, double b) { return affine(a, b, 0.0); }
Tensor operator/(const Tensor& a, double b) { return affine(a, 1.0 / b, 0.0); }
Tensor operator+(double a, const Tensor& b) { return affine(b, 1.0, a); }
Tensor operator-(double a, const Tensor& b) { return affine(b, -1.0, a); }
Tensor operator*(double a, const Tensor& b) { return affine(b, a, 0.0); }
Tensor operator-(const Tensor& x) { return neg(x); }

}  // namespace tsumugi
