// Feature terms: losses between intermediate tensors of the student and of the teacher ("taps": a zoo
// layer, an ONNX value, a TF.js layer, by name; `kdistill inspect MODEL` lists a model's), or their
// outputs (tap "output"). Each reads the student's tensor at its `student` tap and the teacher's at
// its `teacher` tap (LossInputs::student_feature / teacher_feature, [N, ...]); the Distiller collects
// the taps, the trainer computes them. Kinds: hint, attention, rkd, cosine, correlation.
//
// Example: {kind: hint, weight: 1, student: conv2_pool, teacher: conv3_pool}
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "kd/losses/loss_term.h"

namespace kd::losses {

class FeatureTerm : public LossTerm {
 public:
  using LossTerm::LossTerm;
  bool uses_teacher() const override { return true; }
  bool uses_labels() const override { return false; }
  bool supports(Task) const override { return true; }
  std::string student_tap() const override { return options_.word("student"); }
  std::string teacher_tap() const override { return options_.word("teacher"); }

 protected:
  // The two taps' options, which every feature kind declares first.
  static std::vector<LossOption> tap_options();
  // student_feature, and teacher_feature detached in its dtype: both floating with the same N >= 1
  // rows; kd::Error naming the term and the taps otherwise.
  std::pair<torch::Tensor, torch::Tensor> features(const LossInputs& inputs) const;
  // "student tap \"conv2\" [N, 16, 7, 7]": for messages.
  std::string tap_text(bool student, const torch::Tensor& feature) const;
};

namespace detail {

// Feature maps [N, C, H, W] brought to the same H x W: the larger pooled (adaptive average) to the
// smaller's size, per dimension.
std::pair<torch::Tensor, torch::Tensor> same_spatial_size(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace detail
}  // namespace kd::losses
