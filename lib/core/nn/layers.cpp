#include <tsumugi/core/nn/layers.h>
#include <tsumugi/core/ops.h>

namespace tsumugi {

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias) {
  weight = register_parameter("weight", zeros({out_features, in_features}));
  if (with_bias) bias = register_parameter("bias", zeros({out_features}));
}

Tensor Linear::forward(const Tensor& x) const { return linear(x, weight, bias); }

Conv1D::Conv1D(int64_t in_features, int64_t out_features) {
  weight = register_parameter("weight", zeros({in_features, out_features}));
  bias = register_parameter("bias", zeros({out_features}));
}

Tensor Conv1D::forward(const Tensor& x) const { return linear(x, weight.t(), bias); }

Embedding::Embedding(int64_t num_embeddings, int64_t dim) {
  weight = register_parameter("weight", zeros({num_embeddings, dim}));
}

Tensor Embedding::forward(const Tensor& ids) const { return embedding(weight, ids); }

LayerNorm::LayerNorm(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", ones({dim}));
  bias = register_parameter("bias", zeros({dim}));
}

Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }

RMSNorm::RMSNorm(int64_t dim, double eps_) : eps(eps_) { weight = register_parameter("weight", ones({dim})); }

Tensor RMSNorm::forward(const Tensor& x) const { return rms_norm(x, weight, eps); }

}  // namespace tsumugi
