#include "kd/losses/js.h"

#include <cmath>

#include "term_helpers.h"

namespace kd::losses {

torch::Tensor JsLoss::compute(const LossInputs& inputs) const {
  const torch::Tensor& student = detail::student_of(inputs, name());
  torch::Tensor teacher = detail::teacher_of(inputs, name());
  const double t = options_.temperature();
  torch::Tensor log_p_teacher = torch::log_softmax(teacher / t, 1);
  torch::Tensor log_p_student = torch::log_softmax(student / t, 1);
  torch::Tensor log_m = torch::logsumexp(torch::stack({log_p_teacher, log_p_student}), 0) - std::log(2.0);
  torch::Tensor per_row =
      0.5 * (detail::kl_per_row(log_p_teacher, log_m) + detail::kl_per_row(log_p_student, log_m));
  return per_row.mean() * (t * t);
}

}  // namespace kd::losses
