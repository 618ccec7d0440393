// kind "ce": cross-entropy with the hard labels, with label smoothing eps.
//
//   student [N, C] logits, labels int64 [N] in [0, C) -> scalar
//   q[n, c] = (1 - eps) * [c == y_n] + eps / C
//   ce = mean over labelled rows n of  - sum_c q[n, c] * log_softmax(s[n])[c]
//   = F.cross_entropy(s[has_label], y[has_label], label_smoothing=eps)
// Only rows with has_label count (transfer-set rows have none); no labelled row in the batch: 0.
// No temperature: the hard-label term is taken at T = 1 (Hinton et al. 2015).
//
// Example: {kind: ce, weight: 0.1, label_smoothing: 0.1}
#pragma once

#include "kd/losses/loss_term.h"

namespace kd::losses {

class CrossEntropyLoss : public LossTerm {
 public:
  using LossTerm::LossTerm;
  torch::Tensor compute(const LossInputs& inputs) const override;
  bool uses_teacher() const override { return false; }
  bool uses_labels() const override { return true; }
  bool supports(Task task) const override { return task == Task::classification; }
  std::vector<LossOption> declared_options() const override {
    return {LossOption::of_number("label_smoothing", "eps", 0.0, OptionRange::up_to_below(0, 1))};
  }
};

}  // namespace kd::losses
