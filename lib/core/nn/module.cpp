#include <tsumugi/core/autograd.h>
#include <tsumugi/core/nn/module.h>
#include <tsumugi/core/ops.h>

#include <algorithm>
#include <set>

#include "../check.h"
#include "../tensor_impl.h"

namespace tsumugi {

Tensor Module::register_parameter(const std::string& name, Tensor tensor) {
  TSU_CHECK(!name.empty() && name.find('.') == std::string::npos, ValueError,
            "[register_parameter] invalid name '{}'", name);
  for (const auto& [existing, _] : params_)
    TSU_CHECK(existing != name, ValueError, "[register_parameter] '{}' registered twice", name);
  if (!tensor.requires_grad()) tensor.set_requires_grad(true);
  params_.emplace_back(name, tensor);
  return tensor;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  TSU_CHECK(module != nullptr && !name.empty(), ValueError, "[register_module] invalid module '{}'", name);
  for (const auto& [existing, _] : children_)
    TSU_CHECK(existing != name, ValueError, "[register_module] '{}' registered twice", name);
  children_.emplace_back(name, std::move(module));
}

void Module::collect(const std::string& prefix, NamedTensors& out, std::vector<const TensorImpl*>& seen) const {
  for (const auto& [name, tensor] : params_) {
    if (std::find(seen.begin(), seen.end(), tensor.impl()) != seen.end()) continue;
    seen.push_back(tensor.impl());
    out.emplace_back(prefix + name, tensor);
  }
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", out, seen);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  std::vector<const TensorImpl*> seen;
  collect("", out, seen);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

StateDict Module::state_dict() const {
  StateDict out;
  for (const auto& [name, t] : named_parameters()) out.emplace(name, t.detach());
  return out;
}

void Module::load_state_dict(const StateDict& state, bool strict) {
  std::vector<std::string> missing;
  std::set<std::string> used;
  NoGradGuard no_grad;
  for (auto& [name, param] : named_parameters()) {
    auto it = state.find(name);
    if (it == state.end()) {
      missing.push_back(name);
      continue;
    }
    TSU_CHECK(it->second.shape() == param.shape(), ValueError,
              "[load_state_dict] {}: checkpoint shape {} != model shape {}", name, shape_str(it->second.shape()),
              shape_str(param.shape()));
    param.copy_(it->second);
    used.insert(name);
  }
  std::vector<std::string> unexpected;
  for (const auto& [name, _] : state)
    if (!used.count(name)) unexpected.push_back(name);
  if (strict && (!missing.empty() || !unexpected.empty())) {
    auto first = [](const std::vector<std::string>& names) {
      std::vector<std::string> head(names.begin(), names.begin() + std::min<size_t>(names.size(), 5));
      return fmt::format("{}{}", fmt::join(head, ", "), names.size() > 5 ? fmt::format(" and {} more", names.size() - 5) : "");
    };
    TSU_FAIL(ValueError, "[load_state_dict] {}{}{}", missing.empty() ? "" : "missing: " + first(missing),
             !missing.empty() && !unexpected.empty() ? "; " : "",
             unexpected.empty() ? "" : "unexpected: " + first(unexpected));
  }
}

namespace {

// Points the parameter's own TensorImpl at converted storage, so every handle sees it.
void replace_in_place(Tensor& param, const Tensor& converted) {
  TensorImpl& impl = *param.impl();
  impl.storage = converted.impl()->storage;
  impl.strides = converted.strides();
  impl.offset = converted.offset();
  impl.dtype = converted.dtype();
  impl.grad = Tensor();
}

}  // namespace

void Module::to(DType dtype) {
  NoGradGuard no_grad;
  for (auto& [name, param] : named_parameters())
    if (param.dtype() != dtype) replace_in_place(param, param.detach().to(dtype).contiguous());
}

void Module::to(Device device) {
  NoGradGuard no_grad;
  for (auto& [name, param] : named_parameters())
    if (param.device() != device) replace_in_place(param, param.detach().to(device));
}

void Module::release_parameters(const std::vector<std::string>& names) {
  NoGradGuard no_grad;
  const NamedTensors params = named_parameters();
  for (const std::string& name : names) {
    auto it = std::find_if(params.begin(), params.end(), [&](const auto& entry) { return entry.first == name; });
    TSU_CHECK(it != params.end(), ValueError, "[release_parameters] the module has no parameter '{}'", name);
    Tensor param = it->second;
    const Tensor nothing = empty({0}, {.dtype = param.dtype(), .device = param.device()});
    replace_in_place(param, nothing);
    param.impl()->shape = nothing.shape();
    param.set_grad_ready_hook(nullptr);
  }
}

void Module::zero_grad() {
  for (auto& [name, t] : named_parameters()) t.zero_grad();
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

}  // namespace tsumugi
