#include "kd/losses/rkd.h"

#include "kd/util/error.h"

namespace kd::losses {
namespace {

// Pairwise distances over the mean of the off-diagonal ones; 0 on the diagonal. The squared
// distances are clamped away from 0 before the root so that its gradient stays finite.
torch::Tensor normalised_distances(const torch::Tensor& x) {
  torch::Tensor square = x.pow(2).sum(1);
  torch::Tensor d2 = (square.unsqueeze(1) + square.unsqueeze(0) - 2 * x.mm(x.t())).clamp_min(1e-12);
  torch::Tensor off_diagonal = 1 - torch::eye(x.size(0), x.options());
  torch::Tensor d = d2.sqrt() * off_diagonal;
  return d / (d.sum() / off_diagonal.sum()).clamp_min(1e-12);
}

// <e_ij, e_kj> for all i, j, k, flattened.
torch::Tensor angles(const torch::Tensor& x) {
  torch::Tensor differences = x.unsqueeze(0) - x.unsqueeze(1);  // [j, i] = x_i - x_j
  torch::Tensor unit = differences / differences.norm(2, 2, /*keepdim=*/true).clamp_min(1e-12);
  return torch::bmm(unit, unit.transpose(1, 2)).flatten();
}

}  // namespace

torch::Tensor RkdLoss::compute(const LossInputs& inputs) const {
  auto [s, t] = features(inputs);
  torch::Tensor student = s.flatten(1), teacher = t.flatten(1);
  torch::Tensor value = torch::zeros({}, student.options());
  const double distance_weight = options_.number("distance_weight"), angle_weight = options_.number("angle_weight");
  if (distance_weight > 0 && student.size(0) >= 2) {
    value = value + distance_weight * torch::smooth_l1_loss(normalised_distances(student), normalised_distances(teacher));
  }
  if (angle_weight > 0 && student.size(0) >= 3) {
    value = value + angle_weight * torch::smooth_l1_loss(angles(student), angles(teacher));
  }
  return value;
}

}  // namespace kd::losses
