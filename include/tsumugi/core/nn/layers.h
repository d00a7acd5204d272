#pragma once
/// Layers with Hugging Face parameter names and layouts.
#include <tsumugi/core/nn/module.h>
#include <tsumugi/core/random.h>

namespace tsumugi {

/// y = x W^T + b; weight (out, in), bias (out), as torch.nn.Linear.
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  Tensor forward(const Tensor& x) const;  // (..., in) -> (..., out)
  Tensor weight;                          // (out, in)
  Tensor bias;                            // (out) or undefined
};

/// y = x W + b with weight stored (in, out): Hugging Face GPT-2's Conv1D.
class Conv1D : public Module {
 public:
  Conv1D(int64_t in_features, int64_t out_features);
  Tensor forward(const Tensor& x) const;  // (..., in) -> (..., out)
  Tensor weight;                          // (in, out)
  Tensor bias;                            // (out)
};

class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t dim);
  Tensor forward(const Tensor& ids) const;  // integer (...) -> (..., dim)
  Tensor weight;                            // (num_embeddings, dim)
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5);
  Tensor forward(const Tensor& x) const;  // (..., dim)
  Tensor weight, bias;                    // (dim)
  double eps;
};

class RMSNorm : public Module {
 public:
  explicit RMSNorm(int64_t dim, double eps = 1e-6);
  Tensor forward(const Tensor& x) const;  // (..., dim)
  Tensor weight;                          // (dim)
  double eps;
};

}  // namespace tsumugi
