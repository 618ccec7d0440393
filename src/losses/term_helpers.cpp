#include "term_helpers.h"

#include <fmt/format.h>

#include "kd/util/error.h"
#include "kd/util/shape.h"

namespace kd::losses::detail {
const torch::Tensor& student_of(const LossInputs& inputs, const std::string& kind) {
  const torch::Tensor& s = inputs.student;
  if (!s.defined()) fail("loss \"{}\": no student outputs given", kind);
  if (!s.is_floating_point() || s.dim() != 2 || s.size(0) == 0) {
    fail("loss \"{}\": student outputs are {} of {}, expected a float tensor [N, C] with N >= 1", kind,
         shape_text(s.sizes()), std::string(c10::toString(s.scalar_type())));
  }
  return s;
}

torch::Tensor teacher_of(const LossInputs& inputs, const std::string& kind) {
  const torch::Tensor& s = student_of(inputs, kind);
  if (!inputs.teacher.defined()) {
    fail("loss \"{}\" needs the teacher's outputs, but this batch has none", kind);
  }
  if (inputs.teacher.sizes() != s.sizes()) {
    fail("loss \"{}\": teacher outputs are {}, expected the student's shape {}", kind,
         shape_text(inputs.teacher.sizes()), shape_text(s.sizes()));
  }
  return inputs.teacher.detach().to(s.scalar_type());
}

torch::Tensor labelled_rows(const LossInputs& inputs, const std::string& kind) {
  const torch::Tensor& s = student_of(inputs, kind);
  const int64_t n = s.size(0);
  if (!inputs.labels.defined()) fail("loss \"{}\" needs labels, but this batch has none", kind);
  if (inputs.labels.dim() == 0 || inputs.labels.size(0) != n) {
    fail("loss \"{}\": labels are {}, expected {} rows like the student", kind, shape_text(inputs.labels.sizes()), n);
  }
  auto all = torch::arange(n, torch::TensorOptions().dtype(torch::kLong).device(s.device()));
  if (!inputs.has_label.defined()) return all;
  const torch::Tensor& mask = inputs.has_label;
  if (mask.scalar_type() != torch::kBool || mask.dim() != 1 || mask.size(0) != n) {
    fail("loss \"{}\": has_label is {} of {}, expected bool [{}]", kind, shape_text(mask.sizes()),
         std::string(c10::toString(mask.scalar_type())), n);
  }
  return all.masked_select(mask.to(s.device()));
}

torch::Tensor class_labels(const LossInputs& inputs, const torch::Tensor& rows, const std::string& kind) {
  const torch::Tensor& s = student_of(inputs, kind);
  const torch::Tensor& labels = inputs.labels;
  if (labels.dim() != 1 || labels.is_floating_point() || labels.scalar_type() == torch::kBool) {
    fail("loss \"{}\": labels are {} of {}, expected int64 class indices [N]", kind, shape_text(labels.sizes()),
         std::string(c10::toString(labels.scalar_type())));
  }
  torch::Tensor y = labels.to(s.device()).index_select(0, rows).to(torch::kLong);
  if (y.numel() > 0) {
    const int64_t classes = s.size(1);
    const int64_t low = y.min().item<int64_t>();
    const int64_t high = y.max().item<int64_t>();
    if (low < 0 || high >= classes) {
      fail("loss \"{}\": label {} is out of range, expected a class index in [0, {})", kind,
           low < 0 ? low : high, classes);
    }
  }
  return y;
}

torch::Tensor regression_labels(const LossInputs& inputs, const torch::Tensor& rows,
                                const std::string& kind) {
  const torch::Tensor& s = student_of(inputs, kind);
  const torch::Tensor& labels = inputs.labels;
  const int64_t k = s.size(1);
  bool shape_ok = (labels.dim() == 2 && labels.size(1) == k) || (labels.dim() == 1 && k == 1);
  if (!labels.is_floating_point() || !shape_ok) {
    fail("loss \"{}\": labels are {} of {}, expected float targets [N, {}]{}", kind, shape_text(labels.sizes()),
         std::string(c10::toString(labels.scalar_type())), k, k == 1 ? " or [N]" : "");
  }
  return labels.to(s.device(), s.scalar_type()).index_select(0, rows).reshape({rows.size(0), k});
}

torch::Tensor kl_per_row(const torch::Tensor& log_p, const torch::Tensor& log_q) {
  torch::Tensor p = log_p.exp();
  // Select the difference, not the product: where() passes a zero gradient to the branch it drops,
  // and p * 0 then gives a zero gradient for p as well.
  torch::Tensor diff = torch::where(p > 0, log_p - log_q, torch::zeros_like(log_p));
  return (p * diff).sum(1);
}

torch::Tensor zero_like_loss(const torch::Tensor& student) { return (student * 0).sum(); }

}  // namespace kd::losses::detail
