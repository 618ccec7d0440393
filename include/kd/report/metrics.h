// Quality metrics of one model on one set of examples, optionally against the
// teacher's outputs on the same examples.
//
// Classification: logits [N, C], labels int64 [N], teacher_logits [N, C] or undefined.
//   accuracy (fraction), errors (count), macro_f1, ece (15 equal-width confidence bins,
//   Guo et al. 2017), nll (mean -log p(label)), agreement_with_teacher (top-1 match
//   fraction), kl_to_teacher (mean KL(teacher || model) at temperature 1).
// Regression: predictions [N, K], targets [N, K], teacher_predictions [N, K] or undefined,
//   all in the targets' own units: mae, rmse, r2 (1 - SSE/SST, averaged over K), mse_to_teacher.
//
//   auto m = classification_metrics(logits, labels, teacher_logits);  m["accuracy"] -> 0.91
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>

namespace kd::report {

using Metrics = std::map<std::string, double>;

Metrics classification_metrics(const torch::Tensor& logits, const torch::Tensor& labels,
                               const torch::Tensor& teacher_logits = {});
Metrics regression_metrics(const torch::Tensor& predictions, const torch::Tensor& targets,
                           const torch::Tensor& teacher_predictions = {});

// Expected calibration error with `bins` equal-width confidence bins.
double expected_calibration_error(const torch::Tensor& probabilities, const torch::Tensor& labels, int64_t bins = 15);
// Macro-averaged F1 over the classes present in labels or predictions.
double macro_f1(const torch::Tensor& predictions, const torch::Tensor& labels, int64_t classes);

}  // namespace kd::report
