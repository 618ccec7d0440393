// kind "dkd": Decoupled Knowledge Distillation (Zhao et al., CVPR 2022): alpha * TCKD + beta * NCKD.
//
//   student, teacher [N, C] logits, labels int64 [N] -> scalar; y = label, p = softmax(z / T)
//   b = [p[y], 1 - p[y]]                         binary target / non-target probabilities
//   p^ = softmax(z / T over the classes c != y)  distribution among the non-targets
//   TCKD = T^2 * mean_n KL(b_t || b_s),  NCKD = T^2 * mean_n KL(p^_t || p^_s)
//   dkd = alpha * TCKD + beta * NCKD
// Matches the authors' dkd_loss() (mdistiller), computed in log space (log(1 - p[y]) as a
// logsumexp over the non-targets) so that it stays finite when p[y] rounds to 1.
// Only rows with has_label count; no labelled row in the batch: 0.
//
// Example: {kind: dkd, temperature: 4, alpha: 1, beta: 8}
#pragma once

#include "kd/losses/loss_term.h"

namespace kd::losses {

class DkdLoss : public LossTerm {
 public:
  using LossTerm::LossTerm;
  torch::Tensor compute(const LossInputs& inputs) const override;
  bool uses_teacher() const override { return true; }
  bool uses_labels() const override { return true; }
  bool supports(Task task) const override { return task == Task::classification; }
  std::vector<LossOption> declared_options() const override {
    return {temperature_option(), LossOption::of_number("alpha", "weight of TCKD", 1.0, OptionRange::at_least(0)),
            LossOption::of_number("beta", "weight of NCKD", 8.0, OptionRange::at_least(0))};
  }
};

}  // namespace kd::losses
