#include "kd/losses/huber.h"

#include "term_helpers.h"

namespace kd::losses {

torch::Tensor HuberLoss::compute(const LossInputs& inputs) const {
  const torch::Tensor& student = detail::student_of(inputs, name());
  const double delta = options_.delta();
  if (options_.target() == "teacher") {
    return torch::huber_loss(student, detail::teacher_of(inputs, name()), at::Reduction::Mean, delta);
  }
  torch::Tensor rows = detail::labelled_rows(inputs, name());
  if (rows.numel() == 0) return detail::zero_like_loss(student);
  torch::Tensor labels = detail::regression_labels(inputs, rows, name());
  return torch::huber_loss(student.index_select(0, rows), labels, at::Reduction::Mean, delta);
}

}  // namespace kd::losses
