// kind "cosine": the student's feature points the teacher's way (DistilBERT's cosine loss on hidden
// states, Sanh et al. 2019).
//
//   student [N, ...], teacher [N, ...] with as many elements a row (flattened to [N, D])
//   cosine = mean_n (1 - cos(s_n, t_n)), cos as torch.cosine_similarity computes it (eps 1e-8)
//          = F.cosine_embedding_loss(s, t, torch.ones(N)) = (1 - F.cosine_similarity(s, t)).mean()
// Features of different sizes need a projection: use hint.
//
// Example: {kind: cosine, weight: 1, student: fc1, teacher: fc1}
#pragma once

#include "kd/losses/feature_term.h"

namespace kd::losses {

class CosineLoss : public FeatureTerm {
 public:
  using FeatureTerm::FeatureTerm;
  torch::Tensor compute(const LossInputs& inputs) const override;
  std::vector<LossOption> declared_options() const override { return tap_options(); }
};

}  // namespace kd::losses
