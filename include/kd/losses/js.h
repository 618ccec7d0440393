// kind "js": Jensen-Shannon divergence between teacher and student at temperature T.
//
//   student, teacher [N, C] logits -> scalar
//   p_t = softmax(t / T), p_s = softmax(s / T), m = (p_t + p_s) / 2
//   js = T^2 / N * sum_n [ 0.5 * KL(p_t[n] || m[n]) + 0.5 * KL(p_s[n] || m[n]) ]
//   log m = logsumexp(log p_t, log p_s) - log 2   (stable where either probability underflows)
// Symmetric and bounded by T^2 * log 2 per example; natural log.
//
// Example: {kind: js, temperature: 2}
#pragma once

#include "kd/losses/loss_term.h"

namespace kd::losses {

class JsLoss : public LossTerm {
 public:
  using LossTerm::LossTerm;
  torch::Tensor compute(const LossInputs& inputs) const override;
  bool uses_teacher() const override { return true; }
  bool uses_labels() const override { return false; }
  bool supports(Task task) const override { return task == Task::classification; }
  std::vector<LossOption> declared_options() const override {
    return {temperature_option()};
  }
};

}  // namespace kd::losses
