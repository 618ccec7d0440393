#include "kd/losses/kl.h"

#include "term_helpers.h"

namespace kd::losses {

torch::Tensor KlLoss::compute(const LossInputs& inputs) const {
  const torch::Tensor& student = detail::student_of(inputs, name());
  torch::Tensor teacher = detail::teacher_of(inputs, name());
  const double t = options_.temperature();
  torch::Tensor log_p_teacher = torch::log_softmax(teacher / t, 1);
  torch::Tensor log_p_student = torch::log_softmax(student / t, 1);
  return detail::kl_per_row(log_p_teacher, log_p_student).mean() * (t * t);
}

}  // namespace kd::losses
