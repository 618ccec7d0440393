#include "kd/report/metrics.h"

#include <fmt/format.h>

#include <cmath>

#include "kd/util/error.h"
#include "kd/util/shape.h"

namespace kd::report {

namespace {

std::vector<double> to_doubles(const torch::Tensor& t) {
  auto c = t.to(torch::kDouble).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

std::vector<int64_t> to_longs(const torch::Tensor& t) {
  auto c = t.to(torch::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

// Per-bin sums of the top-1 confidence and of correctness, and the counts.
struct BinSums {
  torch::Tensor count, confidence, correct;
};

BinSums bin_sums(const torch::Tensor& probabilities, const torch::Tensor& labels, int64_t bins) {
  auto [confidence, predicted] = probabilities.to(torch::kDouble).max(1);
  auto correct = predicted.eq(labels).to(torch::kDouble);
  auto bin = (confidence * bins).ceil().to(torch::kLong).sub(1).clamp(0, bins - 1);
  auto sum = [&](const torch::Tensor& v) { return torch::zeros({bins}, torch::kDouble).index_add_(0, bin, v); };
  return {sum(torch::ones_like(confidence)), sum(confidence), sum(correct)};
}

}  // namespace

double expected_calibration_error(const torch::Tensor& probabilities, const torch::Tensor& labels, int64_t bins) {
  auto s = bin_sums(probabilities, labels, bins);
  double n = static_cast<double>(labels.size(0));
  return ((s.confidence - s.correct).abs().sum() / n).item<double>();
}

Reliability reliability_bins(const torch::Tensor& probabilities, const torch::Tensor& labels, int64_t bins) {
  auto s = bin_sums(probabilities, labels, bins);
  auto count = s.count.clamp_min(1);
  return {to_longs(s.count), to_doubles(s.confidence / count), to_doubles(s.correct / count)};
}

double top_k_accuracy(const torch::Tensor& logits, const torch::Tensor& labels, int64_t k) {
  auto top = std::get<1>(logits.topk(std::min<int64_t>(k, logits.size(1)), 1));
  return top.eq(labels.unsqueeze(1)).any(1).to(torch::kDouble).mean().item<double>();
}

PerClass per_class_scores(const torch::Tensor& predictions, const torch::Tensor& labels, int64_t classes) {
  auto p = predictions.to(torch::kLong);
  auto y = labels.to(torch::kLong);
  auto true_positive = torch::bincount(y.masked_select(p.eq(y)), {}, classes).to(torch::kDouble);
  auto predicted = torch::bincount(p, {}, classes).to(torch::kDouble);
  auto actual = torch::bincount(y, {}, classes).to(torch::kDouble);
  auto ratio = [](const torch::Tensor& a, const torch::Tensor& b) {
    return torch::where(b > 0, a / b.clamp_min(1), torch::zeros_like(b));
  };
  return {to_doubles(ratio(true_positive, predicted)), to_doubles(ratio(true_positive, actual)),
          to_doubles(ratio(2 * true_positive, predicted + actual)), to_longs(actual)};
}

double macro_f1(const torch::Tensor& predictions, const torch::Tensor& labels, int64_t classes) {
  auto scores = per_class_scores(predictions, labels, classes);
  auto predicted = torch::bincount(predictions.to(torch::kLong), {}, classes);
  double sum = 0;
  int64_t present = 0;
  for (int64_t c = 0; c < classes; ++c) {
    if (scores.support[c] + predicted[c].item<int64_t>() == 0) continue;
    sum += scores.f1[c];
    ++present;
  }
  return present == 0 ? 0.0 : sum / static_cast<double>(present);
}

torch::Tensor confusion_matrix(const torch::Tensor& predictions, const torch::Tensor& labels, int64_t classes) {
  auto cell = labels.to(torch::kLong) * classes + predictions.to(torch::kLong);
  return torch::bincount(cell, {}, classes * classes).view({classes, classes});
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
  if (logits.size(1) > 5) m["top5_accuracy"] = top_k_accuracy(z, labels, 5);
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

nlohmann::json fold_summary(const std::vector<double>& values) {
  KD_CHECK(!values.empty(), "fold_summary of no folds");
  double mean = 0;
  for (double v : values) mean += v;
  mean /= static_cast<double>(values.size());
  double var = 0;
  for (double v : values) var += (v - mean) * (v - mean);
  return {{"mean", mean}, {"std", std::sqrt(var / static_cast<double>(values.size()))}, {"folds", values}};
}

std::string metric_cell(const nlohmann::json& test, const std::string& key, double scale, int decimals) {
  if (!test.contains(key)) return "-";
  const auto& v = test.at(key);
  if (v.is_object()) {
    return fmt::format("{:.{}f} ± {:.{}f}", v.at("mean").get<double>() * scale, decimals,
                       v.at("std").get<double>() * scale, decimals);
  }
  return v.is_number() ? fmt::format("{:.{}f}", v.get<double>() * scale, decimals) : "-";
}

}  // namespace kd::report
