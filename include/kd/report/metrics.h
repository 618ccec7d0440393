// Quality metrics of one model on one set of examples, optionally against the
// teacher's outputs on the same examples.
//
// Classification: logits [N, C], labels int64 [N], teacher_logits [N, C] or undefined.
//   accuracy (fraction), errors (count), top5_accuracy (only when C > 5), macro_f1,
//   ece (15 equal-width confidence bins, Guo et al. 2017), nll (mean -log p(label)),
//   agreement_with_teacher (top-1 match fraction), kl_to_teacher (mean KL(teacher || model)
//   at temperature 1).
// Regression: predictions [N, K], targets [N, K], teacher_predictions [N, K] or undefined,
//   all in the targets' own units: mae, rmse, r2 (1 - SSE/SST, averaged over K), mse_to_teacher.
//
//   auto m = classification_metrics(logits, labels, teacher_logits);  m["accuracy"] -> 0.91
#pragma once

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace kd::report {

using Metrics = std::map<std::string, double>;

Metrics classification_metrics(const torch::Tensor& logits, const torch::Tensor& labels,
                               const torch::Tensor& teacher_logits = {});
Metrics regression_metrics(const torch::Tensor& predictions, const torch::Tensor& targets,
                           const torch::Tensor& teacher_predictions = {});

// Fraction of rows whose label is among the k largest logits.
double top_k_accuracy(const torch::Tensor& logits, const torch::Tensor& labels, int64_t k);

// Per-class counts and scores. precision = TP / predicted, recall = TP / actual,
// f1 = 2 TP / (predicted + actual); 0 where the denominator is 0 (scikit-learn's zero_division=0).
struct PerClass {
  std::vector<double> precision, recall, f1;
  std::vector<int64_t> support;  // rows with that label
};
PerClass per_class_scores(const torch::Tensor& predictions, const torch::Tensor& labels, int64_t classes);

// Macro-averaged F1 over the classes present in labels or predictions.
double macro_f1(const torch::Tensor& predictions, const torch::Tensor& labels, int64_t classes);

// int64 [classes, classes]: row = true label, column = prediction (scikit-learn's layout).
torch::Tensor confusion_matrix(const torch::Tensor& predictions, const torch::Tensor& labels, int64_t classes);

// A reliability diagram: bin b holds top-1 confidences in (b/bins, (b+1)/bins] (0 in bin 0).
// confidence and accuracy are the bin's means (0 for an empty bin).
struct Reliability {
  std::vector<int64_t> count;
  std::vector<double> confidence, accuracy;
};
Reliability reliability_bins(const torch::Tensor& probabilities, const torch::Tensor& labels, int64_t bins = 15);

// Expected calibration error: sum over bins of count/N * |accuracy - confidence|.
double expected_calibration_error(const torch::Tensor& probabilities, const torch::Tensor& labels, int64_t bins = 15);

// {mean, std, folds} of a number measured on each fold (population std: 0 for one fold).
nlohmann::json fold_summary(const std::vector<double>& values);

// A metric as a table shows it: "0.912 ± 0.004" for a fold summary, "0.912" for a number, "-" when
// absent or not a number; scaled first (100 for percent).
std::string metric_cell(const nlohmann::json& test, const std::string& key, double scale = 1, int decimals = 4);

}  // namespace kd::report
