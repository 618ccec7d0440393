// kind "kl": Hinton et al. 2015 soft-target loss, KL(teacher || student) at temperature T.
//
//   student, teacher [N, C] logits -> scalar
//   p_t = softmax(t / T), log p_s = log_softmax(s / T)
//   kl = T^2 / N * sum_n sum_c p_t[n,c] * (log p_t[n,c] - log p_s[n,c])
//      = F.kl_div(log_softmax(s/T), log_softmax(t/T), reduction='batchmean', log_target=True) * T*T
// T^2 keeps the gradient's scale independent of T (Hinton et al. 2015, section 2).
// Classes with p_t = 0 contribute 0.
//
// Example: {kind: kl, weight: 0.9, temperature: 4}
#pragma once

#include "kd/losses/loss_term.h"

namespace kd::losses {

class KlLoss : public LossTerm {
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
