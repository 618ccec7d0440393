// kind "mse": mean squared error between the student and the teacher or the labels.
//
//   student [N, K] (logits or predictions), target [N, K] -> scalar
//   target "teacher": mse = mean((s - t)^2) over N*K            (logit matching, Ba & Caruana 2014)
//   target "labels":  mse = mean((s - y)^2) over labelled rows  (regression only; y [N] when K = 1)
//   = F.mse_loss(s, target)
// No labelled row in the batch: 0.
//
// Example: {kind: mse, target: labels, weight: 0.5}
#pragma once

#include "kd/losses/loss_term.h"

namespace kd::losses {

class MseLoss : public LossTerm {
 public:
  using LossTerm::LossTerm;
  torch::Tensor compute(const LossInputs& inputs) const override;
  bool uses_teacher() const override { return options_.target() == "teacher"; }
  bool uses_labels() const override { return options_.target() == "labels"; }
  bool supports(Task task) const override {
    return task == Task::regression || options_.target() == "teacher";
  }
  std::vector<LossOption> declared_options() const override {
    return {target_option()};
  }
};

}  // namespace kd::losses
