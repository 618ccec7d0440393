#include "kd/losses/cross_entropy.h"

#include "term_helpers.h"

namespace kd::losses {

torch::Tensor CrossEntropyLoss::compute(const LossInputs& inputs) const {
  const torch::Tensor& student = detail::student_of(inputs, name());
  torch::Tensor rows = detail::labelled_rows(inputs, name());
  if (rows.numel() == 0) return detail::zero_like_loss(student);
  torch::Tensor labels = detail::class_labels(inputs, rows, name());
  namespace F = torch::nn::functional;
  return F::cross_entropy(student.index_select(0, rows), labels,
                          F::CrossEntropyFuncOptions().label_smoothing(options_.label_smoothing()));
}

}  // namespace kd::losses
