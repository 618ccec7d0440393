#include "kd/losses/dkd.h"

#include <limits>

#include "kd/util/error.h"
#include "term_helpers.h"

namespace kd::losses {
namespace {

// log of [p[y], 1 - p[y]] ([M, 2]) and log_softmax over the non-target classes ([M, C], -inf at y).
std::pair<torch::Tensor, torch::Tensor> split_log_probs(const torch::Tensor& scaled_logits,
                                                        const torch::Tensor& target_mask) {
  torch::Tensor log_p = torch::log_softmax(scaled_logits, 1);
  torch::Tensor non_target_logits =
      scaled_logits.masked_fill(target_mask, -std::numeric_limits<double>::infinity());
  torch::Tensor log_target = log_p.masked_select(target_mask).unsqueeze(1);
  // log(1 - p[y]) = logsumexp over c != y of z_c - logsumexp over all c: no cancellation when p[y] ~ 1.
  torch::Tensor log_rest =
      (torch::logsumexp(non_target_logits, 1, true) - torch::logsumexp(scaled_logits, 1, true));
  torch::Tensor binary = torch::cat({log_target, log_rest}, 1);
  return {binary, torch::log_softmax(non_target_logits, 1)};
}

}  // namespace

torch::Tensor DkdLoss::compute(const LossInputs& inputs) const {
  const torch::Tensor& student = detail::student_of(inputs, name());
  torch::Tensor teacher = detail::teacher_of(inputs, name());
  if (student.size(1) < 2) fail("loss \"dkd\": student has {} class, expected at least 2", student.size(1));
  torch::Tensor rows = detail::labelled_rows(inputs, name());
  if (rows.numel() == 0) return detail::zero_like_loss(student);
  torch::Tensor labels = detail::class_labels(inputs, rows, name());
  const double t = options_.temperature();
  torch::Tensor target_mask =
      torch::zeros({rows.size(0), student.size(1)},
                   torch::TensorOptions().dtype(torch::kBool).device(student.device()))
          .scatter_(1, labels.unsqueeze(1), true);
  auto [binary_s, rest_s] = split_log_probs(student.index_select(0, rows) / t, target_mask);
  auto [binary_t, rest_t] = split_log_probs(teacher.index_select(0, rows) / t, target_mask);
  torch::Tensor tckd = detail::kl_per_row(binary_t, binary_s).mean();
  torch::Tensor nckd = detail::kl_per_row(rest_t, rest_s).mean();
  return (options_.alpha() * tckd + options_.beta() * nckd) * (t * t);
}

}  // namespace kd::losses
