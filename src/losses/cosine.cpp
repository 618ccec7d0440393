#include "kd/losses/cosine.h"

#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::losses {

torch::Tensor CosineLoss::compute(const LossInputs& inputs) const {
  auto [s, t] = features(inputs);
  torch::Tensor student = s.flatten(1), teacher = t.flatten(1);
  if (student.size(1) != teacher.size(1)) {
    fail("loss \"cosine\": {} and {} differ in size; cosine compares features of one size (hint learns a projection)",
         tap_text(true, s), tap_text(false, t));
  }
  return (1 - torch::cosine_similarity(student, teacher, 1, 1e-8)).mean();
}

}  // namespace kd::losses
