// Several teachers as one: their outputs combined row by row. Members are any models with the
// same outputs (files of different formats included); the ensemble is frozen like any loaded teacher.
//
//   auto teacher = std::make_shared<EnsembleModel>(std::vector<ModelPtr>{a, b, c}, EnsembleCombine::probabilities);
//   teacher->forward(x);  // log of the members' mean softmax: logits of the averaged distribution
#pragma once

#include <string>
#include <vector>

#include "kd/models/model.h"

namespace kd::models {

// probabilities: log of the weighted mean of the members' softmax (an ensemble's usual prediction;
//                its softmax is that mean, and at temperature T the mean's T-th root, renormalised);
// logits:        the weighted mean of the members' outputs (what a regression ensemble predicts);
// confidence:    as probabilities, each row's members weighted by their weight x their confidence
//                on that row (their largest probability), so a member sure of a row speaks louder.
// correctness:   as probabilities, each row's members weighted by their weight x how often they were
//                right on labelled rows when they predicted what they predict on this row (their
//                precision for that class, set_precision), so a member speaks louder where it is reliable.
enum class EnsembleCombine { probabilities, logits, confidence, correctness };

// "probabilities" | "logits" | "confidence" | "correctness", or kd::Error naming `field`.
EnsembleCombine parse_ensemble_combine(const std::string& word, const std::string& field);
std::string to_string(EnsembleCombine combine);

class EnsembleModel : public Model {
 public:
  // `weights`: one per member, positive (only their ratios count); empty: equal.
  EnsembleModel(std::vector<ModelPtr> members, EnsembleCombine combine, std::vector<double> weights = {});

  torch::Tensor forward(const torch::Tensor& input) override;
  // Member m's taps as "m<m>.<tap>" (m from 0, as in state()): feature terms read one member's features.
  std::vector<std::string> tap_names() override;
  TappedForward forward_taps(const torch::Tensor& input, const std::vector<std::string>& taps) override;
  std::vector<torch::Tensor> parameters() override;  // every member's (the ensemble is not trained)
  NamedTensors state() override;                       // member m's tensors as "m<m>.<name>"
  void load_state(const NamedTensors& state) override;
  void set_training(bool training) override;
  void to(torch::Device device) override;
  ModelSummary summary(const std::vector<int64_t>& input_shape) override;  // sums; one line per member's layer
  std::vector<int64_t> declared_input_shape() override;
  std::string kind() const override { return "ensemble"; }

  const std::vector<ModelPtr>& members() const { return members_; }

  // combine: correctness: each member's precision per predicted class on labelled rows `x`, `labels`
  // ((right + 1) / (predicted + 2), so a class a member never predicted counts 1/2); [members, classes].
  torch::Tensor fit_precision(const torch::Tensor& x, const torch::Tensor& labels, int64_t classes, int64_t batch_rows);

 private:
  torch::Tensor combined(const std::vector<torch::Tensor>& outputs) const;  // the members' outputs as one

  std::vector<ModelPtr> members_;
  EnsembleCombine combine_;
  std::vector<double> weights_;
  torch::Tensor precision_;  // [members, classes]; combine: correctness
};

}  // namespace kd::models
