#pragma once
// Internal: CUDA launchers of the elementwise ops (defined in elementwise.cu, only in builds with
// TSUMUGI_WITH_CUDA). No CUDA types here, so that elementwise.cpp can include it in every build.
// Every launcher runs on the tsumugi stream of the output's device and computes in float (double
// for f64); outputs are allocated by the caller.
#include <tsumugi/core/tensor.h>

namespace tsumugi::cuda {

/// The four arithmetic operators of add, sub, mul, div.
enum class BinaryOp { add, sub, mul, div };

/// out = a op b. out: contiguous, the broadcast shape; a, b: any strides, broadcast to out's shape
/// (NumPy rules, as layout_of applies them); one dtype for all three.
void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b);

/// The unary ops; p0/p1 are alpha/beta for affine (x * alpha + beta) and p0 is the exponent of pow.
enum class UnaryOp { affine, exp, log, tanh, sigmoid, sqrt, relu, square, pow };

/// out = f(x). out, x: contiguous, same shape and dtype.
void unary(UnaryOp op, const Tensor& out, const Tensor& x, double p0, double p1);

/// dx = g * f'(x) written with y = f(x) where the CPU formula does. All contiguous, same shape
/// and dtype. Not defined for affine, whose backward is affine itself.
void unary_backward(UnaryOp op, const Tensor& dx, const Tensor& g, const Tensor& x, const Tensor& y, double p0);

}  // namespace tsumugi::cuda
