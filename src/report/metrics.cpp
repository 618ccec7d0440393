#include "kd/report/metrics.h"

#include "kd/util/error.h"
#include "kd/util/shape.h"

namespace kd::report {

double expected_calibration_error(const torch::Tensor& probabilities, const torch::Tensor& labels, int64_t bins) {
  auto [confidence, predicted] = probabilities.to(torch::kDouble).max(1);
  auto correct = predicted.eq(labels).to(torch::kDouble);
  // Bin b holds confidences in (b/bins, (b+1)/bins]; confidence 0 falls in bin 0.
  auto bin = (confidence * bins).ceil().to(torch::kLong).sub(1).clamp(0, bins - 1);
  auto count = torch::zeros({bins}, torch::kDouble).index_add_(0, bin, torch::ones_like(confidence));
  auto confidence_sum = torch::zeros({bins}, torch::kDouble).index_add_(0, bin, confidence);
  auto correct_sum = torch::zeros({bins}, torch::kDouble).index_add_(0, bin, correct);
  double n = static_cast<double>(labels.size(0));
  return ((confidence_sum - correct_sum).abs().sum() / n).item<double>();
}

double macro_f1(const torch::Tensor& predictions, const torch::Tensor& labels, int64_t classes) {
  auto p = predictions.to(torch::kLong);
  auto y = labels.to(torch::kLong);
  auto true_positive = torch::bincount(y.masked_select(p.eq(y)), {}, classes).to(torch::kDouble);
  auto predicted = torch::bincount(p, {}, classes).to(torch::kDouble);
  auto actual = torch::bincount(y, {}, classes).to(torch::kDouble);
  auto denominator = predicted + actual;
  auto present = denominator > 0;
  auto f1 = torch::where(present, 2 * true_positive / denominator.clamp_min(1), torch::zeros_like(denominator));
  return (f1.sum() / present.sum().clamp_min(1)).item<double>();
}

Metrics classification_metrics(const torch::Tensor& logits, const torch::Tensor& labels,
                               const torch::Tensor& teacher_logits) {
  KD_CHECK(logits.dim() == 2 && labels.dim() == 1 && logits.size(0) == labels.size(0),
           "logits {} and labels {}", shape_text(logits.sizes()), shape_text(labels.sizes()));
  Metrics m;
  auto z = logits.to(torch::kDouble);
  auto log_p = torch::log_softmax(z, 1);
  auto predicted = z.argmax(1);
  double n = static_cast<double>(labels.size(0));
  auto correct = predicted.eq(labels).sum().item<int64_t>();
  m["accuracy"] = correct / n;
  m["errors"] = n - correct;
  m["macro_f1"] = macro_f1(predicted, labels, logits.size(1));
  m["nll"] = -log_p.gather(1, labels.unsqueeze(1)).mean().item<double>();
  m["ece"] = expected_calibration_error(log_p.exp(), labels);
  if (teacher_logits.defined()) {
    auto t = teacher_logits.to(torch::kDouble);
    auto log_q = torch::log_softmax(t, 1);
    m["agreement_with_teacher"] = predicted.eq(t.argmax(1)).to(torch::kDouble).mean().item<double>();
    m["kl_to_teacher"] = (log_q.exp() * (log_q - log_p)).sum(1).mean().item<double>();
  }
  return m;
}

Metrics regression_metrics(const torch::Tensor& predictions, const torch::Tensor& targets,
                           const torch::Tensor& teacher_predictions) {
  auto p = predictions.to(torch::kDouble).reshape({predictions.size(0), -1});
  auto y = targets.to(torch::kDouble).reshape({targets.size(0), -1});
  KD_CHECK(p.sizes() == y.sizes(), "predictions {} and targets {}", shape_text(p.sizes()),
           shape_text(y.sizes()));
  Metrics m;
  auto error = p - y;
  m["mae"] = error.abs().mean().item<double>();
  m["rmse"] = std::sqrt(error.pow(2).mean().item<double>());
  auto sse = error.pow(2).sum(0);
  auto sst = (y - y.mean(0, true)).pow(2).sum(0);
  m["r2"] = (1 - sse / sst.clamp_min(1e-300)).mean().item<double>();
  if (teacher_predictions.defined()) {
    auto t = teacher_predictions.to(torch::kDouble).reshape_as(p);
    m["mse_to_teacher"] = (p - t).pow(2).mean().item<double>();
  }
  return m;
}

}  // namespace kd::report
