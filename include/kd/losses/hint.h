// kind "hint": FitNets (Romero et al. 2015): the student's feature, through a learned projection P,
// regressed onto the teacher's.
//
//   maps    student [N, Cs, Hs, Ws], teacher [N, Ct, Ht, Wt]: P = 1x1 convolution Cs -> Ct (with bias);
//           where the sizes differ the larger map is average-pooled to the smaller's H x W
//   sequences student [N, L, Ds], teacher [N, L, Dt] (a transformer's hidden states, TinyBERT):
//           P = linear Ds -> Dt applied to each token; the lengths must agree
//   vectors otherwise: a map is first averaged over H x W (-> [N, C]), any other shape flattened;
//           P = linear Ds -> Dt (with bias)
//   hint = mean over the elements of d(P(s), t), d = (a - b)^2 (distance mse) or smooth L1 with beta 1
//        = F.mse_loss(P(s), t)   /   F.smooth_l1_loss(P(s), t)
// P is initialised as PyTorch initialises Conv2d and Linear (uniform in +-1/sqrt(fan_in)), trains with
// the student and is not part of the exported student (LossInputs::parameters: weight, bias).
//
// Example: {kind: hint, weight: 1, student: conv2_pool, teacher: conv3_pool}
//          {kind: hint, student: layer1, teacher: layer2}   (transformers: hidden states, token by token)
#pragma once

#include "kd/losses/feature_term.h"

namespace kd::losses {

class HintLoss : public FeatureTerm {
 public:
  using FeatureTerm::FeatureTerm;
  torch::Tensor compute(const LossInputs& inputs) const override;
  std::vector<LossOption> declared_options() const override;
  models::NamedTensors make_parameters(const std::vector<int64_t>& student_shape,
                                       const std::vector<int64_t>& teacher_shape,
                                       at::Generator& generator) const override;
};

}  // namespace kd::losses
