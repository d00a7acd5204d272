#pragma once
// Internal: the tape. Each recorded op is a Node; a Node's edges say where the gradients of its
// inputs go: into another Node's output slot, or into a leaf tensor's .grad.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor_impl.h"

namespace tsumugi {

struct Edge {
  std::shared_ptr<Node> node;        // producer of the input (non-leaf), or
  std::shared_ptr<TensorImpl> leaf;  // a leaf that requires grad, or neither (no gradient)
  int output_nr = 0;
};

/// Gradients of the inputs (one per input, undefined where none) from those of the outputs
/// (one per output, undefined where no gradient arrived).
using BackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs)>;

struct Node {
  std::string name;
  std::vector<Edge> edges;  // one per input
  BackwardFn backward;
  int num_outputs = 1;
  uint64_t sequence = 0;  // creation order: later nodes run first
  std::vector<Shape> output_shapes;
  std::vector<DType> output_dtypes;
};

/// True when an op with these inputs must record a node.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

/// Records `outputs` as produced by op `name` from `inputs`.
/// `backward` maps output gradients to input gradients.
void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor*>& outputs,
            BackwardFn backward);

/// Single-output form: `backward(grad_output)` returns one gradient per input.
void record(const char* name, const std::vector<Tensor>& inputs, Tensor& output,
            std::function<std::vector<Tensor>(const Tensor&)> backward);

}  // namespace tsumugi
