#pragma once
/// Autograd switches. Ops record a node on the tape when grad mode is on and any input
/// requires grad; `Tensor::backward` walks the tape in reverse topological order.
namespace tsumugi {

/// Whether ops on this thread record nodes for autograd.
bool grad_enabled();
void set_grad_enabled(bool enabled);

/// Turns recording off for its scope (evaluation, optimizer updates, initialisation).
class NoGradGuard {
 public:
  NoGradGuard() : previous_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace tsumugi
