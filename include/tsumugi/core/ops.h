#pragma once
/// Ops: free functions on tensors. Each checks its arguments, runs a CPU (or CUDA) kernel and,
/// when an input requires grad, records its backward on the tape. Float ops accept f32 and f64
/// on the CPU (f64 is what the gradient checks use).
#include <tsumugi/core/random.h>
#include <tsumugi/core/tensor.h>

#include <utility>
#include <vector>

namespace tsumugi {

// ---- elementwise, with NumPy broadcasting ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
/// a * alpha + beta, elementwise.
Tensor affine(const Tensor& a, double alpha, double beta);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor square(const Tensor& x);
/// x ** exponent.
Tensor pow(const Tensor& x, double exponent);

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
Tensor operator+(double a, const Tensor& b);
Tensor operator-(double a, const Tensor& b);
Tensor operator*(double a, const Tensor& b);
Tensor operator-(const Tensor& x);

// ---- reductions ----
/// Sum over `dims` (all dimensions when empty).
Tensor sum(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
/// Largest value along `dim`; the gradient goes to the first largest element.
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);
/// Index (i64) of the first largest value along `dim`; no gradient.
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
/// Sums `x` down to `shape` over the dimensions that broadcasting expanded.
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- linear algebra (CBLAS on the CPU, cuBLASLt on CUDA) ----
/// (..., M, K) x (..., K, N) -> (..., M, N) with broadcast batch dimensions; 1-D and 2-D as in
/// NumPy. Transposed views are passed to BLAS as transposes, never copied.
Tensor matmul(const Tensor& a, const Tensor& b);
/// x (..., in) times w (out, in) transposed, plus b (out) when defined: nn.Linear.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());
/// gelu(linear(x, w, b)) (tanh-form GELU): x (..., in), w (out, in), b (out) or undefined. On
/// CUDA one GEMM whose epilogue adds the bias and applies GELU, keeping x w^T + b for backward.
Tensor linear_gelu(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());
/// Lets f32 GEMMs on CUDA use TF32 tensor cores (inputs rounded to 10 mantissa bits, fp32
/// accumulation; relative error about 1e-3, several times faster). Off by default: f32 GEMMs
/// are then exact fp32. Applies to every thread and device; bf16/f16 GEMMs and the CPU ignore it.
void set_allow_tf32(bool allow);
/// Whether f32 GEMMs on CUDA may use TF32 (set_allow_tf32).
bool allow_tf32();

// ---- shape ----
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim);
/// Splits `dim` into pieces of the given sizes (views).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);

// ---- neural-network functions ----
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);
/// Rows of weight (V, D) picked by integer ids (...) -> (..., D).
Tensor embedding(const Tensor& weight, const Tensor& ids);
/// LayerNorm over the last dimension: x (..., D), weight and bias (D).
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
/// RMSNorm over the last dimension (Llama): x * rsqrt(mean(x^2) + eps) * weight.
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);
/// The pre-norm residual step in one pass: s = x + residual and layer_norm(s, weight, bias, eps).
/// x and residual (..., D), same shape; weight and bias (D). Returns (s, normalized s); both
/// can receive gradients.
std::pair<Tensor, Tensor> add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor& weight,
                                         const Tensor& bias, double eps = 1e-5);
/// s = x + residual and rms_norm(s, weight, eps), as add_layer_norm. Returns (s, normalized s).
std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& weight,
                                       double eps = 1e-6);
/// GELU, tanh form (GPT-2's "gelu_new").
Tensor gelu(const Tensor& x);
Tensor silu(const Tensor& x);
/// silu(gate) * up, fused (Llama MLP).
Tensor swiglu(const Tensor& gate, const Tensor& up);
/// Rotary position embedding, rotate-half form (dimension i pairs with i + head_dim/2), as in
/// Hugging Face Llama. x (B, T, H, head_dim); position of row t is position_offset + t.
Tensor rope(const Tensor& x, double theta, int64_t position_offset = 0);
/// Causal scaled-dot-product attention with grouped-query heads.
/// q (B, T, Hq, hd), k and v (B, S, Hkv, hd) with Hq % Hkv == 0 -> (B, T, Hq, hd).
/// Query t sees keys 0 .. t + (S - T) (S > T when a KV cache holds earlier positions).
/// Scale 0 means 1 / sqrt(hd). Memory: never a (T, S) matrix per head for the whole batch.
Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale = 0.0);
/// Mean cross-entropy of logits (N, V) against integer targets (N); targets equal to
/// ignore_index are skipped. z_loss adds z_loss * mean(logsumexp^2) (PaLM). The loss is a
/// scalar of the logits' dtype for f32 and f64, and f32 for bf16/f16 logits (CUDA); the logits'
/// gradient has their dtype. A batch whose targets are all ignored has loss 0. Targets
/// outside [0, V) throw IndexError on the CPU; on CUDA, where checking would wait for the GPU,
/// they make the loss NaN.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                     double z_loss = 0.0);
/// Zeroes each element with probability p and scales the rest by 1 / (1 - p).
Tensor dropout(const Tensor& x, double p, Generator& gen, bool training = true);

}  // namespace tsumugi
