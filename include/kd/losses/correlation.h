// kind "correlation": correlation congruence (Peng et al. 2019, CCKD, with its bilinear kernel): the
// student keeps the teacher's similarities between the examples of a batch, whatever the features' sizes.
//
//   student [N, ...], teacher [N, ...] (flattened to [N, Ds], [N, Dt])
//   C(x) = x^ x^T, x^ = x with each row scaled to unit L2 norm   ([N, N], cosine similarities)
//   correlation = mean over the N^2 entries of (C(s) - C(t))^2
//
// Example: {kind: correlation, weight: 1, student: gap, teacher: gap}
#pragma once

#include "kd/losses/feature_term.h"

namespace kd::losses {

class CorrelationLoss : public FeatureTerm {
 public:
  using FeatureTerm::FeatureTerm;
  torch::Tensor compute(const LossInputs& inputs) const override;
  std::vector<LossOption> declared_options() const override { return tap_options(); }
};

}  // namespace kd::losses
