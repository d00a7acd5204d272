// The tape and the backward pass.
//
// Each recorded op is a Node that knows where its inputs' gradients go (Edge). backward() finds
// every node reachable from the root, then runs them in an order where a node runs only after
// all nodes that consume its outputs have run (Kahn's algorithm); among ready nodes the most
// recently created runs first, which makes the order, and so the floating-point sums, fixed.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>

#include <atomic>
#include <queue>
#include <unordered_map>

#include "autograd_graph.h"
#include "check.h"

namespace tsumugi {
namespace {

thread_local bool grad_mode_enabled = true;
std::atomic<uint64_t> next_sequence{0};

Edge edge_to(const Tensor& input) {
  if (!input.defined() || !input.requires_grad()) return {};
  TensorImpl* impl = input.impl();
  if (impl->grad_fn) return {impl->grad_fn, nullptr, impl->output_nr};
  return {nullptr, input.impl_ptr(), 0};
}

// Adds a gradient into a leaf's .grad. The first gradient is stored as is (it may be shared with
// other tensors), so later ones are added out of place.
void accumulate_leaf(TensorImpl& leaf, const Tensor& grad) {
  if (!leaf.grad.defined()) {
    leaf.grad = grad;
    leaf.grad_owned = false;
  } else {
    leaf.grad = add(leaf.grad, grad);
    leaf.grad_owned = true;
  }
}

}  // namespace

bool grad_enabled() { return grad_mode_enabled; }
void set_grad_enabled(bool enabled) { grad_mode_enabled = enabled; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!grad_mode_enabled) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!grad_mode_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor*>& outputs,
            BackwardFn backward) {
  if (!needs_grad(inputs)) return;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->sequence = next_sequence.fetch_add(1);
  node->num_outputs = static_cast<int>(outputs.size());
  node->edges.reserve(inputs.size());
  for (const Tensor& input : inputs) node->edges.push_back(edge_to(input));
  for (size_t i = 0; i < outputs.size(); ++i) {
    TensorImpl* impl = outputs[i]->impl();
    impl->grad_fn = node;
    impl->output_nr = static_cast<int>(i);
    impl->requires_grad = true;
    node->output_shapes.push_back(impl->shape);
    node->output_dtypes.push_back(impl->dtype);
  }
  node->backward = std::move(backward);
}

void record(const char* name, const std::vector<Tensor>& inputs, Tensor& output,
            std::function<std::vector<Tensor>(const Tensor&)> backward) {
  record(name, inputs, std::vector<Tensor*>{&output},
         [fn = std::move(backward)](const std::vector<Tensor>& grads) { return fn(grads[0]); });
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  TSU_CHECK(defined(), AutogradError, "[backward] called on an undefined tensor");
  TSU_CHECK(requires_grad(), AutogradError,
            "[backward] tensor does not require grad: no input of the ops that made it requires grad");
  Tensor seed = gradient;
  if (!seed.defined()) {
    TSU_CHECK(numel() == 1, AutogradError,
              "[backward] called on a non-scalar tensor of shape {} without a gradient; pass one of that shape",
              shape_str(shape()));
    seed = ones(shape(), {.dtype = dtype(), .device = device()});
  }
  TSU_CHECK(seed.shape() == shape(), AutogradError, "[backward] gradient shape {} != tensor shape {}",
            shape_str(seed.shape()), shape_str(shape()));

  NoGradGuard no_grad;  // backward formulas are not themselves recorded
  auto grad_ready = [](const std::shared_ptr<TensorImpl>& leaf) {
    if (leaf->grad_ready_hook) leaf->grad_ready_hook(Tensor(leaf));
  };
  if (is_leaf()) {
    accumulate_leaf(*impl(), seed);
    grad_ready(impl_ptr());
    return;
  }

  // Count, for every reachable node, how many edges point at it.
  std::unordered_map<Node*, int> pending;
  std::vector<std::shared_ptr<Node>> stack{impl()->grad_fn};
  pending[impl()->grad_fn.get()] = 0;
  std::vector<std::shared_ptr<Node>> all_nodes;
  std::unordered_map<TensorImpl*, int> leaf_uses;  // edges into each leaf: its hook fires after the last
  while (!stack.empty()) {
    std::shared_ptr<Node> node = std::move(stack.back());
    stack.pop_back();
    all_nodes.push_back(node);
    for (const Edge& edge : node->edges) {
      if (edge.leaf) ++leaf_uses[edge.leaf.get()];
      if (!edge.node) continue;
      auto [it, inserted] = pending.try_emplace(edge.node.get(), 0);
      ++it->second;
      if (inserted) stack.push_back(edge.node);
    }
  }

  auto later_first = [](const std::shared_ptr<Node>& a, const std::shared_ptr<Node>& b) {
    return a->sequence < b->sequence;
  };
  std::priority_queue<std::shared_ptr<Node>, std::vector<std::shared_ptr<Node>>, decltype(later_first)> ready(
      later_first);
  std::unordered_map<Node*, std::vector<Tensor>> grads;
  grads[impl()->grad_fn.get()].resize(static_cast<size_t>(impl()->grad_fn->num_outputs));
  grads[impl()->grad_fn.get()][static_cast<size_t>(impl()->output_nr)] = seed;
  ready.push(impl()->grad_fn);

  while (!ready.empty()) {
    std::shared_ptr<Node> node = ready.top();
    ready.pop();
    std::vector<Tensor> grad_outputs = std::move(grads[node.get()]);
    grads.erase(node.get());
    grad_outputs.resize(static_cast<size_t>(node->num_outputs));
    TSU_CHECK(node->backward != nullptr, AutogradError,
              "[backward] the graph through '{}' was already freed by an earlier backward; "
              "pass retain_graph = true to backward twice",
              node->name);
    std::vector<Tensor> grad_inputs;
    bool any = false;
    for (const Tensor& g : grad_outputs) any = any || g.defined();
    if (any) grad_inputs = node->backward(grad_outputs);
    grad_inputs.resize(node->edges.size());

    for (size_t i = 0; i < node->edges.size(); ++i) {
      const Edge& edge = node->edges[i];
      const Tensor& g = grad_inputs[i];
      if (edge.node) {
        if (g.defined()) {
          std::vector<Tensor>& slots = grads[edge.node.get()];
          slots.resize(static_cast<size_t>(edge.node->num_outputs));
          Tensor& slot = slots[static_cast<size_t>(edge.output_nr)];
          slot = slot.defined() ? add(slot, g) : g;
        }
        if (--pending[edge.node.get()] == 0) ready.push(edge.node);
      } else if (edge.leaf) {
        if (g.defined()) {
          TSU_CHECK(g.shape() == edge.leaf->shape, AutogradError,
                    "[backward] '{}' produced a gradient of shape {} for an input of shape {}", node->name,
                    shape_str(g.shape()), shape_str(edge.leaf->shape));
          accumulate_leaf(*edge.leaf, g);
        }
        if (--leaf_uses[edge.leaf.get()] == 0) grad_ready(edge.leaf);
      }
    }
    if (!retain_graph) {
      node->backward = nullptr;  // frees the tensors this node saved
    }
  }
}

}  // namespace tsumugi
