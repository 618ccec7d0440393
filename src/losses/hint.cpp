#include "kd/losses/hint.h"

#include <cmath>

#include "kd/util/error.h"
#include "kd/util/shape.h"
#include "kd/util/strings.h"

namespace kd::losses {
namespace {

bool is_map(const std::vector<int64_t>& shape) { return shape.size() == 3; }
// A sequence of vectors [L, D] (a transformer's hidden states): projected token by token.
bool is_sequence(const std::vector<int64_t>& shape) { return shape.size() == 2; }

// A feature as a vector a row: maps averaged over H x W, anything else flattened.
torch::Tensor as_vector(const torch::Tensor& x) { return x.dim() == 4 ? x.mean({2, 3}) : x.flatten(1); }

int64_t vector_size(const std::vector<int64_t>& shape) {
  return is_map(shape) ? shape[0] : element_count(shape);
}

}  // namespace

std::vector<LossOption> HintLoss::declared_options() const {
  auto options = tap_options();
  options.push_back(LossOption::of_words("distance", "hint: how the projected student is compared with the teacher",
                                         {"mse", "smooth_l1"}));
  return options;
}

models::NamedTensors HintLoss::make_parameters(const std::vector<int64_t>& student_shape,
                                               const std::vector<int64_t>& teacher_shape,
                                               at::Generator& generator) const {
  bool maps = is_map(student_shape) && is_map(teacher_shape);
  bool sequences = is_sequence(student_shape) && is_sequence(teacher_shape);
  int64_t in = maps ? student_shape[0] : sequences ? student_shape[1] : vector_size(student_shape);
  int64_t out = maps ? teacher_shape[0] : sequences ? teacher_shape[1] : vector_size(teacher_shape);
  if (in < 1 || out < 1) {
    fail("loss \"hint\": the taps {} {} and {} {} have no features to project", quote(student_tap()),
         shape_text(student_shape), quote(teacher_tap()), shape_text(teacher_shape));
  }
  double bound = 1.0 / std::sqrt(static_cast<double>(in));
  std::vector<int64_t> weight_shape = maps ? std::vector<int64_t>{out, in, 1, 1} : std::vector<int64_t>{out, in};
  torch::Tensor weight = torch::empty(weight_shape).uniform_(-bound, bound, generator);
  torch::Tensor bias = torch::empty({out}).uniform_(-bound, bound, generator);
  return {{"weight", weight.requires_grad_(true)}, {"bias", bias.requires_grad_(true)}};
}

torch::Tensor HintLoss::compute(const LossInputs& inputs) const {
  auto [s, t] = features(inputs);
  if (inputs.parameters.size() != 2) fail("loss \"hint\": its projection (weight, bias) is not given");
  torch::Tensor weight = inputs.parameters[0].to(s.scalar_type()), bias = inputs.parameters[1].to(s.scalar_type());
  torch::Tensor projected;
  if (s.dim() == 4 && t.dim() == 4) {
    if (weight.dim() != 4 || weight.size(1) != s.size(1) || weight.size(0) != t.size(1)) {
      fail("loss \"hint\": the projection {} does not map {} to {}", shape_text(weight.sizes()), tap_text(true, s),
           tap_text(false, t));
    }
    auto [student, teacher] = detail::same_spatial_size(s, t);
    projected = torch::conv2d(student, weight, bias);
    t = teacher;
  } else if (s.dim() == 3 && t.dim() == 3) {
    if (s.size(1) != t.size(1)) {
      fail("loss \"hint\": {} and {} are sequences of different lengths; a hint pairs them token by token",
           tap_text(true, s), tap_text(false, t));
    }
    if (weight.dim() != 2 || weight.size(1) != s.size(2) || weight.size(0) != t.size(2)) {
      fail("loss \"hint\": the projection {} does not map {} to {}", shape_text(weight.sizes()), tap_text(true, s),
           tap_text(false, t));
    }
    projected = torch::matmul(s, weight.t()) + bias;
  } else {
    torch::Tensor student = as_vector(s);
    t = as_vector(t);
    if (weight.dim() != 2 || weight.size(1) != student.size(1) || weight.size(0) != t.size(1)) {
      fail("loss \"hint\": the projection {} does not map {} to {}", shape_text(weight.sizes()), tap_text(true, s),
           tap_text(false, inputs.teacher_feature));
    }
    projected = torch::addmm(bias, student, weight.t());
  }
  if (options_.word("distance") == "smooth_l1") return torch::smooth_l1_loss(projected, t);
  return torch::mse_loss(projected, t);
}

}  // namespace kd::losses
