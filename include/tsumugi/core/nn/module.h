#pragma once
/// Module: a named tree of parameters, as in PyTorch. Parameters are registered with a name;
/// children contribute theirs under "child.param", so names match Hugging Face checkpoints.
#include <tsumugi/core/tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tsumugi {

/// Tensors by name: what state_dict() returns and safetensors files hold.
using StateDict = std::map<std::string, Tensor>;
/// Parameters in registration order, each under its dotted name.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// Every parameter once, depth first in registration order, with its dotted name. A tensor
  /// registered twice (tied weights) appears under its first name only.
  NamedTensors named_parameters() const;
  std::vector<Tensor> parameters() const;
  /// Total number of parameter elements (each tied tensor counted once).
  int64_t num_parameters() const;
  /// Parameters by name; the tensors share storage with the module.
  StateDict state_dict() const;
  /// Copies values from `state` into the parameters (converting dtype). With `strict`, a missing
  /// or unexpected name is an error listing them; a shape mismatch is always an error.
  virtual void load_state_dict(const StateDict& state, bool strict = true);
  /// Converts every parameter in place to `dtype` (all handles to them see the change).
  void to(DType dtype);
  /// Moves every parameter in place to `device`.
  void to(Device device);
  /// Frees the named parameters' storage (and gradients): each becomes a 0-element tensor of its
  /// dtype and device, as the module's own handles (named_parameters) see; a tensor taken from
  /// state_dict() earlier keeps the old storage alive. For a pipeline stage, which keeps only its
  /// piece of a model. Throws ValueError for a name the module does not have.
  void release_parameters(const std::vector<std::string>& names);
  /// Drops the gradients of all parameters.
  void zero_grad();
  /// Training mode (dropout on) or evaluation mode, recursively.
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

 protected:
  /// Adds a parameter (marked requires_grad) and returns it. The returned handle and the
  /// registered one share the tensor: copy new values into it, never reassign it.
  Tensor register_parameter(const std::string& name, Tensor tensor);
  /// Adds a child module whose parameters appear as "name.param".
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> module);
  void collect(const std::string& prefix, NamedTensors& out, std::vector<const TensorImpl*>& seen) const;

  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

/// Children named "0", "1", ...: transformer.h.0, model.layers.3.
template <class M>
class ModuleList : public Module {
 public:
  void push_back(std::shared_ptr<M> module) {
    items_.push_back(register_module(std::to_string(items_.size()), std::move(module)));
  }
  size_t size() const { return items_.size(); }
  M& operator[](size_t i) const { return *items_[i]; }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

}  // namespace tsumugi
