// kind "dist": DIST, "Knowledge Distillation from A Stronger Teacher" (Huang et al., NeurIPS 2022):
// match the teacher's relations rather than its probabilities, which tolerates a teacher far larger
// than the student (the capacity gap that exact KL matching suffers from).
//
//   student, teacher [N, C] logits -> scalar; p = softmax(z / T)
//   pearson(a, b) = <a - mean a, b - mean b> / (|a - mean a| |b - mean b| + 1e-8)
//   inter = 1 - mean over rows n of pearson(p_s[n, :], p_t[n, :])      (each row's class ranking)
//   intra = 1 - mean over classes c of pearson(p_s[:, c], p_t[:, c])   (each class across the batch)
//   dist = T^2 * (inter_weight * inter + intra_weight * intra)
// Matches the authors' DIST module (beta = inter, gamma = intra, tau = T). Every row counts (no labels).
//
// Example: {kind: dist, temperature: 4, inter: 1, intra: 1}
#pragma once

#include "kd/losses/loss_term.h"

namespace kd::losses {

class DistLoss : public LossTerm {
 public:
  using LossTerm::LossTerm;
  torch::Tensor compute(const LossInputs& inputs) const override;
  bool uses_teacher() const override { return true; }
  bool uses_labels() const override { return false; }
  bool supports(Task task) const override { return task == Task::classification; }
  std::vector<LossOption> declared_options() const override {
    return {temperature_option(),
            LossOption::of_number("inter", "weight of the inter-class (per row) relation", 1.0, OptionRange::at_least(0)),
            LossOption::of_number("intra", "weight of the intra-class (per class) relation", 1.0, OptionRange::at_least(0))};
  }
};

}  // namespace kd::losses
