#include "kd/losses/dist.h"

#include "term_helpers.h"

namespace kd::losses {
namespace {

// Pearson correlation of each row of a with the same row of b ([M, K] -> [M]).
torch::Tensor row_pearson(const torch::Tensor& a, const torch::Tensor& b) {
  torch::Tensor ac = a - a.mean(1, true), bc = b - b.mean(1, true);
  return (ac * bc).sum(1) / (ac.norm(2, 1) * bc.norm(2, 1) + 1e-8);
}

}  // namespace

torch::Tensor DistLoss::compute(const LossInputs& inputs) const {
  const torch::Tensor& student = detail::student_of(inputs, name());
  torch::Tensor teacher = detail::teacher_of(inputs, name());
  const double t = options_.temperature();
  torch::Tensor p_s = torch::softmax(student / t, 1), p_t = torch::softmax(teacher / t, 1);
  torch::Tensor inter = 1 - row_pearson(p_s, p_t).mean();
  torch::Tensor intra = 1 - row_pearson(p_s.t(), p_t.t()).mean();
  return (options_.number("inter") * inter + options_.number("intra") * intra) * (t * t);
}

}  // namespace kd::losses
