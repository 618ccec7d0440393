// kind "attention": attention transfer (Zagoruyko & Komodakis 2017): the student's spatial attention
// map matches the teacher's.
//
//   student [N, Cs, Hs, Ws], teacher [N, Ct, Ht, Wt] (channels may differ)
//   a(f) = mean_c |f_c|^p  -> [N, H, W]; the larger map average-pooled to the smaller's H x W;
//   q(f) = a(f) flattened to [N, H*W] and scaled to unit L2 norm per row
//   attention = mean over n and positions of (q(s) - q(t))^2
//             = (F.normalize(s.abs().pow(p).mean(1).view(N, -1)) - ...).pow(2).mean()   (the authors' at_loss)
// The mean over positions makes values small: the paper's beta / 2 = 500 (weight 1000 for p = 2 in
// mdistiller) is the usual weight.
//
// Example: {kind: attention, weight: 1000, student: conv2_act, teacher: conv3_act}
#pragma once

#include "kd/losses/feature_term.h"

namespace kd::losses {

class AttentionLoss : public FeatureTerm {
 public:
  using FeatureTerm::FeatureTerm;
  torch::Tensor compute(const LossInputs& inputs) const override;
  std::vector<LossOption> declared_options() const override {
    auto options = tap_options();
    options.push_back(LossOption::of_number("p", "attention: the power p of the activations' magnitude, averaged over channels", 2.0,
                                            OptionRange::at_least(1)));
    return options;
  }
};

}  // namespace kd::losses
