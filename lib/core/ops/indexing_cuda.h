#pragma once
// Internal, CUDA only: launchers of the embedding kernels in indexing.cu. Tensors are allocated by
// indexing.cpp on the device of the inputs; the launchers run on that device's tsumugi stream.
#include <tsumugi/core/tensor.h>

#include <cstdint>

namespace tsumugi::cuda {

/// Position of the first id outside [0, vocab) in contiguous ids (any index dtype), or ids.numel()
/// when all are valid. Waits for the stream: the answer is needed on the host to throw.
int64_t first_invalid_index(const Tensor& ids, int64_t vocab);
/// out (n, D) = weight (V, D)[ids (n)]: rows copied bytewise, so any dtype; all contiguous.
void embedding_forward(const Tensor& weight, const Tensor& ids, const Tensor& out);
/// dweight (V, D) contiguous, overwritten: row v = sum of grad (n, D) rows i with ids[i] = v, added
/// in increasing i (ids sorted stably by value, one block per run of equal ids): deterministic.
void embedding_backward(const Tensor& grad, const Tensor& ids, const Tensor& dweight);

}  // namespace tsumugi::cuda
