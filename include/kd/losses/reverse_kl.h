// kind "reverse_kl": KL(student || teacher) at temperature T, the mode-seeking direction.
//
//   student, teacher [N, C] logits -> scalar
//   reverse_kl = T^2 / N * sum_n sum_c p_s[n,c] * (log p_s[n,c] - log p_t[n,c]),  p = softmax(z / T)
//              = F.kl_div(log_softmax(t/T), log_softmax(s/T), reduction='batchmean', log_target=True) * T*T
// Classes with p_s = 0 contribute 0.
//
// Example: {kind: reverse_kl, temperature: 2}
#pragma once

#include "kd/losses/loss_term.h"

namespace kd::losses {

class ReverseKlLoss : public LossTerm {
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
