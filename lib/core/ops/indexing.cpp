// Embedding lookup, concatenation and splitting.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>

#include <cstring>

#include "../autograd_graph.h"
#include "../elementwise.h"
#ifdef TSUMUGI_WITH_CUDA
#include "indexing_cuda.h"
#endif

namespace tsumugi {
namespace {

constexpr int64_t kColumnBlock = 256;

// dweight (V, D): row ids[n] accumulates grad[n]. Column blocks run in parallel, each adding the
// rows in index order, so repeated ids sum in a fixed order.
template <class T, class I>
void embedding_backward(const T* grad, const I* ids, T* dweight, int64_t n, int64_t d) {
  const int64_t blocks = (d + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (n * d > kParallelGrain)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t c0 = block * kColumnBlock;
    const int64_t width = std::min(kColumnBlock, d - c0);
    for (int64_t i = 0; i < n; ++i) {
      T* row = dweight + static_cast<int64_t>(ids[i]) * d + c0;
      const T* g = grad + i * d + c0;
#pragma omp simd
      for (int64_t c = 0; c < width; ++c) row[c] += g[c];
    }
  }
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids_in) {
  TSU_CHECK(weight.dim() == 2, ValueError, "[embedding] weight must be (vocab, dim), got {}", shape_str(weight.shape()));
  TSU_CHECK(ids_in.device() == weight.device(), ValueError, "[embedding] ids are on {} but weight is on {}",
            ids_in.device().str(), weight.device().str());
  const Tensor w = weight.detach().contiguous();
  const Tensor ids = ids_in.contiguous();
  const int64_t vocab = w.size(0), d = w.size(1), n = ids.numel();
  Shape out_shape = ids.shape();
  out_shape.push_back(d);
  Tensor out = empty(out_shape, {.dtype = w.dtype(), .device = w.device()});
#ifdef TSUMUGI_WITH_CUDA
  if (w.device().is_cuda()) {
    const int64_t bad = cuda::first_invalid_index(ids, vocab);
    TSU_CHECK(bad == n, IndexError, "[embedding] token id {} at position {} is outside the vocabulary of {}",
              ids.flatten().select(0, bad).item<int64_t>(), bad, vocab);
    cuda::embedding_forward(w, ids, out);
  }
#endif
  if (w.device().is_cpu()) {
    dispatch_index(ids.dtype(), "embedding", [&](auto index_tag) {
      using I = decltype(index_tag);
      const I* id = ids.data<I>();
      for (int64_t i = 0; i < n; ++i) {
        const int64_t v = static_cast<int64_t>(id[i]);
        TSU_CHECK(v >= 0 && v < vocab, IndexError,
                  "[embedding] token id {} at position {} is outside the vocabulary of {}", v, i, vocab);
      }
      const size_t row_bytes = static_cast<size_t>(d) * dtype_size(w.dtype());
      const char* src = static_cast<const char*>(w.data_ptr());
      char* dst = static_cast<char*>(out.data_ptr());
#pragma omp parallel for schedule(static) if (n * d > kParallelGrain)
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(dst + static_cast<size_t>(i) * row_bytes, src + static_cast<size_t>(id[i]) * row_bytes, row_bytes);
    });
  }
  if (needs_grad({&weight})) {
    record("embedding", {weight, ids_in}, out, [ids, vocab, d](const Tensor& g_in) {
      const Tensor g = g_in.contiguous();
#ifdef TSUMUGI_WITH_CUDA
      if (g.device().is_cuda()) {
        Tensor dweight = empty({vocab, d}, {.dtype = g.dtype(), .device = g.device()});
        cuda::embedding_backward(g, ids, dweight);
        return std::vector<Tensor>{dweight, Tensor()};
      }
#endif
      Tensor dweight = zeros({vocab, d}, {.dtype = g.dtype()});
      dispatch_float(g.dtype(), "embedding", [&](auto tag) {
        using T = decltype(tag);
        dispatch_index(ids.dtype(), "embedding", [&](auto index_tag) {
          using I = decltype(index_tag);
          embedding_backward<T, I>(g.data<T>(), ids.data<I>(), dweight.data<T>(), ids.numel(), d);
        });
      });
      return std::vector<Tensor>{dweight, Tensor()};
    });
  }
  return out;
}

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  TSU_CHECK(!tensors.empty(), ValueError, "[cat] no tensors given");
  const Tensor& first = tensors[0];
  dim = wrap_dim(dim, first.dim(), "cat");
  Shape shape = first.shape();
  shape[dim] = 0;
  for (const Tensor& t : tensors) {
    TSU_CHECK(t.device() == first.device(), ValueError, "[cat] a tensor is on {} but the first is on {}",
              t.device().str(), first.device().str());
    TSU_CHECK(t.dim() == first.dim() && t.dtype() == first.dtype(), ValueError,
              "[cat] tensors differ in rank or dtype: {} {} vs {} {}", shape_str(t.shape()), dtype_name(t.dtype()),
              shape_str(first.shape()), dtype_name(first.dtype()));
    for (int64_t d = 0; d < first.dim(); ++d)
      TSU_CHECK(d == dim || t.size(d) == first.size(d), ValueError, "[cat] shapes {} and {} differ outside dimension {}",
                shape_str(t.shape()), shape_str(first.shape()), dim);
    shape[dim] += t.size(dim);
  }
  Tensor out = empty(shape, {.dtype = first.dtype(), .device = first.device()});
  std::vector<int64_t> sizes;
  {
    NoGradGuard no_grad;
    int64_t start = 0;
    for (const Tensor& t : tensors) {
      out.narrow(dim, start, t.size(dim)).copy_(t);
      start += t.size(dim);
      sizes.push_back(t.size(dim));
    }
  }
  if (needs_grad(tensors)) {
    record("cat", tensors, out, [sizes, dim](const Tensor& g) {
      std::vector<Tensor> grads;
      int64_t start = 0;
      for (int64_t size : sizes) {
        grads.push_back(g.narrow(dim, start, size));
        start += size;
      }
      return grads;
    });
  }
  return out;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  dim = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  TSU_CHECK(total == x.size(dim), ValueError, "[split] sizes ({}) do not add up to dimension {} of size {}",
            fmt::join(sizes, ", "), dim, x.size(dim));
  std::vector<Tensor> parts;
  {
    NoGradGuard no_grad;
    int64_t start = 0;
    for (int64_t s : sizes) {
      parts.push_back(x.detach().narrow(dim, start, s));
      start += s;
    }
  }
  if (needs_grad({&x})) {
    std::vector<Tensor*> outputs;
    for (Tensor& p : parts) outputs.push_back(&p);
    // One node for all parts: the backward writes every part's gradient into one buffer.
    record("split", {x}, outputs, [shape = x.shape(), sizes, dim](const std::vector<Tensor>& grads) {
      const Tensor& any = *std::find_if(grads.begin(), grads.end(), [](const Tensor& g) { return g.defined(); });
      Tensor full_grad = empty(shape, {.dtype = any.dtype(), .device = any.device()});
      int64_t start = 0;
      for (size_t i = 0; i < sizes.size(); ++i) {
        Tensor slot = full_grad.narrow(dim, start, sizes[i]);
        if (grads[i].defined()) slot.copy_(grads[i]);
        else slot.zero_();
        start += sizes[i];
      }
      return std::vector<Tensor>{full_grad};
    });
  }
  return parts;
}

}  // namespace tsumugi
