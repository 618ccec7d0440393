#include "kd/losses/feature_term.h"

#include <fmt/format.h>

#include <algorithm>

#include "kd/util/error.h"
#include "kd/util/shape.h"
#include "kd/util/strings.h"

namespace kd::losses {

std::vector<LossOption> FeatureTerm::tap_options() {
  return {LossOption::of_name("student", "the student's tap a feature term reads (`kdistill inspect`)", models::kOutputTap),
          LossOption::of_name("teacher", "the teacher's tap a feature term reads (`kdistill inspect`)", models::kOutputTap)};
}

std::string FeatureTerm::tap_text(bool student, const torch::Tensor& feature) const {
  std::vector<std::string> dims = {"N"};
  for (int64_t d = 1; d < feature.dim(); ++d) dims.push_back(std::to_string(feature.size(d)));
  return fmt::format("{} tap {} [{}]", student ? "student" : "teacher", quote(student ? student_tap() : teacher_tap()),
                     join(dims, ", "));
}

std::pair<torch::Tensor, torch::Tensor> FeatureTerm::features(const LossInputs& inputs) const {
  const torch::Tensor& s = inputs.student_feature;
  const torch::Tensor& t = inputs.teacher_feature;
  if (!s.defined()) fail("loss {}: no tensor at the student tap {}", quote(name()), quote(student_tap()));
  if (!t.defined()) fail("loss {}: no tensor at the teacher tap {}", quote(name()), quote(teacher_tap()));
  if (!s.is_floating_point() || s.dim() < 2 || s.size(0) == 0) {
    fail("loss {}: {} is not a float tensor of at least one row with features", quote(name()), tap_text(true, s));
  }
  if (t.dim() < 2 || t.size(0) != s.size(0)) {
    fail("loss {}: {} does not have the student's {} rows", quote(name()), tap_text(false, t), s.size(0));
  }
  return {s, t.detach().to(s.scalar_type())};
}

namespace detail {

std::pair<torch::Tensor, torch::Tensor> same_spatial_size(const torch::Tensor& a, const torch::Tensor& b) {
  int64_t h = std::min(a.size(2), b.size(2)), w = std::min(a.size(3), b.size(3));
  auto fit = [&](const torch::Tensor& x) {
    return x.size(2) == h && x.size(3) == w ? x : torch::adaptive_avg_pool2d(x, {h, w});
  };
  return {fit(a), fit(b)};
}

}  // namespace detail
}  // namespace kd::losses
