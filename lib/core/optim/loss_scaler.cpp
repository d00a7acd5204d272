// Dynamic loss scaling for fp16 training: the scale halves on overflow and doubles after a run of
// finite steps, as torch.amp.GradScaler does.
#include <tsumugi/core/optim.h>

#include <cfloat>
#include <cmath>

#include "../check.h"

namespace tsumugi {

DynamicLossScaler::DynamicLossScaler(LossScalerOptions options) : options_(options), scale_(options.init_scale) {
  TSU_CHECK(std::isfinite(options.init_scale) && options.init_scale > 0 && options.growth_factor >= 1 &&
                options.backoff_factor > 0 && options.backoff_factor < 1 && options.growth_interval >= 1,
            ValueError,
            "[loss_scaler] invalid options: init_scale {}, growth_factor {} (>= 1), backoff_factor {} (in (0, 1)), "
            "growth_interval {} (>= 1)",
            options.init_scale, options.growth_factor, options.backoff_factor, options.growth_interval);
}

bool DynamicLossScaler::update(bool finite) {
  if (!finite) {
    scale_ *= options_.backoff_factor;
    good_steps_ = 0;
    return false;
  }
  if (++good_steps_ >= options_.growth_interval) {
    // The loss is scaled in fp32: a scale past its range would turn every loss into Inf.
    if (scale_ * options_.growth_factor <= FLT_MAX) scale_ *= options_.growth_factor;
    good_steps_ = 0;
  }
  return true;
}

StateDict DynamicLossScaler::state_dict() const {
  return {{"loss_scaler.scale", from_data<double>({scale_}, {1})},
          {"loss_scaler.good_steps", from_data<int64_t>({good_steps_}, {1})}};
}

void DynamicLossScaler::load_state_dict(const StateDict& state) {
  auto get = [&](const std::string& key) -> const Tensor& {
    auto it = state.find(key);
    TSU_CHECK(it != state.end(), ValueError, "[loss_scaler] state has no '{}'", key);
    TSU_CHECK(it->second.numel() == 1, ValueError, "[loss_scaler] '{}' has {} elements, expected 1", key,
              it->second.numel());
    return it->second;
  };
  const double scale = get("loss_scaler.scale").item<double>();
  const int64_t good_steps = get("loss_scaler.good_steps").item<int64_t>();
  TSU_CHECK(std::isfinite(scale) && scale > 0 && good_steps >= 0, ValueError,
            "[loss_scaler] invalid state: scale {}, good_steps {}", scale, good_steps);
  scale_ = scale;
  good_steps_ = good_steps;
}

}  // namespace tsumugi
