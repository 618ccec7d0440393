#include "kd/losses/mse.h"

#include "term_helpers.h"

namespace kd::losses {

torch::Tensor MseLoss::compute(const LossInputs& inputs) const {
  const torch::Tensor& student = detail::student_of(inputs, name());
  if (options_.target() == "teacher") {
    return torch::mse_loss(student, detail::teacher_of(inputs, name()));
  }
  torch::Tensor rows = detail::labelled_rows(inputs, name());
  if (rows.numel() == 0) return detail::zero_like_loss(student);
  torch::Tensor labels = detail::regression_labels(inputs, rows, name());
  return torch::mse_loss(student.index_select(0, rows), labels);
}

}  // namespace kd::losses
