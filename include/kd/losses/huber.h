// kind "huber": Huber loss with threshold delta between the student and the teacher or the labels.
//
//   student [N, K], target [N, K] -> scalar; r = s - target
//   huber = mean( |r| <= delta ? 0.5 * r^2 : delta * (|r| - 0.5 * delta) )
//   = F.huber_loss(s, target, delta=delta); targets and labelled rows as for "mse".
//
// Example: {kind: huber, delta: 0.5, target: labels}
#pragma once

#include "kd/losses/loss_term.h"

namespace kd::losses {

class HuberLoss : public LossTerm {
 public:
  using LossTerm::LossTerm;
  torch::Tensor compute(const LossInputs& inputs) const override;
  bool uses_teacher() const override { return options_.target() == "teacher"; }
  bool uses_labels() const override { return options_.target() == "labels"; }
  bool supports(Task task) const override {
    return task == Task::regression || options_.target() == "teacher";
  }
  std::vector<LossOption> declared_options() const override {
    return {target_option(), LossOption::of_number("delta", "threshold", 1.0, OptionRange::above(0))};
  }
};

}  // namespace kd::losses
