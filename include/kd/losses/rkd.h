// kind "rkd": relational knowledge distillation (Park et al. 2019): the student keeps the teacher's
// distances and angles between the examples of a batch, whatever the features' sizes.
//
//   student [N, ...], teacher [N, ...] (flattened to [N, Ds], [N, Dt]; N >= 2 for distances, 3 for angles)
//   d(x)_ij  = ||x_i - x_j||_2 (0 on the diagonal) / mean of d over i != j
//   a(x)_ijk = <e_ij, e_kj>,  e_ij = (x_i - x_j) / ||x_i - x_j||   (angle at j)
//   rkd = distance_weight * smoothL1(d(s), d(t)) + angle_weight * smoothL1(a(s), a(t))
//       (smooth L1 with beta 1, mean over the N^2 and N^3 entries: the authors' RkdDistance / RKdAngle)
// The angle term holds N^2 x D differences: use it on vector taps (pooled features, outputs).
// The paper's weights are 25 (distance) and 50 (angle): weight 25 with the defaults 1 and 2.
//
// Example: {kind: rkd, weight: 25, student: gap, teacher: gap}
#pragma once

#include "kd/losses/feature_term.h"

namespace kd::losses {

class RkdLoss : public FeatureTerm {
 public:
  using FeatureTerm::FeatureTerm;
  torch::Tensor compute(const LossInputs& inputs) const override;
  std::vector<LossOption> declared_options() const override {
    auto options = tap_options();
    options.push_back(LossOption::of_number("distance_weight", "rkd: weight of the distance term", 1.0,
                                            OptionRange::at_least(0)));
    options.push_back(
        LossOption::of_number("angle_weight", "rkd: weight of the angle term", 2.0, OptionRange::at_least(0)));
    return options;
  }
};

}  // namespace kd::losses
