// kind "attention_map": the student's self-attention distributions match the teacher's, transformer
// layer to transformer layer (MiniLM, Wang et al. 2020: KL of each head's attention distributions;
// TinyBERT, Jiao et al. 2020: mean squared error of the attention matrices).
//
//   student [N, Hs, L, L], teacher [N, Ht, L, L]: attention probabilities, each row (a query) a
//   distribution over the L keys, as the taps `layerK.attention` give them (or an ONNX teacher's
//   Softmax output). Head counts may differ.
//   heads: auto = head by head when Hs == Ht, else each side averaged over its heads (-> 1 head);
//          mean = always averaged
//   measure: kl   per query row  sum_j t_j (log t_j - log s_j)  (0 log 0 = 0)
//             mse per query row  mean_j (s_j - t_j)^2
//   attention_map = the mean over rows n, heads and the query positions that hold a token; a padding
//   position is a key that no query attends to in the teacher (its column is all zero).
//
// Example: {kind: attention_map, weight: 1, student: layer1.attention, teacher: layer4.attention}
#pragma once

#include "kd/losses/feature_term.h"

namespace kd::losses {

class AttentionMapLoss : public FeatureTerm {
 public:
  using FeatureTerm::FeatureTerm;
  torch::Tensor compute(const LossInputs& inputs) const override;
  std::vector<LossOption> declared_options() const override {
    auto options = tap_options();
    options.push_back(LossOption::of_words(
        "heads", "attention_map: auto (head by head when the counts match, else averaged) or mean (always averaged)",
        {"auto", "mean"}));
    options.push_back(LossOption::of_words(
        "measure", "attention_map: kl (MiniLM) or mse (TinyBERT) between the attention rows", {"kl", "mse"}));
    return options;
  }
};

}  // namespace kd::losses
