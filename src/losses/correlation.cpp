#include "kd/losses/correlation.h"

namespace kd::losses {

torch::Tensor CorrelationLoss::compute(const LossInputs& inputs) const {
  auto [s, t] = features(inputs);
  auto similarities = [](const torch::Tensor& x) {
    torch::Tensor flat = x.flatten(1);
    torch::Tensor unit = flat / flat.norm(2, 1, /*keepdim=*/true).clamp_min(1e-12);
    return unit.mm(unit.t());
  };
  return (similarities(s) - similarities(t)).pow(2).mean();
}

}  // namespace kd::losses
