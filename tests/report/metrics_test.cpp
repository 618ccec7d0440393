#include "kd/report/metrics.h"

#include <gtest/gtest.h>

#include <cmath>

namespace kd::report {
namespace {

// Expected values computed by hand, as shown in each test.
TEST(Metrics, ClassificationByHand) {
  // Predictions: 0, 1, 1, 2 ; labels: 0, 1, 2, 2.
  auto logits = torch::tensor({{2.0, 0.0, 0.0}, {0.0, 2.0, 0.0}, {0.0, 1.0, 0.0}, {0.0, 0.0, 3.0}});
  auto labels = torch::tensor({0, 1, 2, 2}, torch::kLong);
  auto m = classification_metrics(logits, labels);
  EXPECT_DOUBLE_EQ(m["accuracy"], 0.75);
  EXPECT_DOUBLE_EQ(m["errors"], 1.0);
  // F1: class 0 = 1, class 1 = 2*1/(2+1) = 2/3, class 2 = 2*1/(1+2) = 2/3 -> mean 7/9.
  EXPECT_NEAR(m["macro_f1"], 7.0 / 9.0, 1e-12);
  // NLL = -mean log softmax(label): rows give e^2/(e^2+2) twice, 1/(e+2), e^3/(e^3+2).
  double e = std::exp(1.0);
  double nll = -(2 * std::log(e * e / (e * e + 2)) + std::log(1 / (e + 2)) + std::log(e * e * e / (e * e * e + 2))) / 4;
  EXPECT_NEAR(m["nll"], nll, 1e-6);
  EXPECT_EQ(m.count("agreement_with_teacher"), 0u);
}

TEST(Metrics, EceByHand) {
  // Confidences 0.9 (correct), 0.9 (wrong), 0.6 (correct), 0.4 (correct).
  auto p = torch::tensor({{0.9, 0.1, 0.0}, {0.9, 0.1, 0.0}, {0.4, 0.6, 0.0}, {0.3, 0.3, 0.4}}, torch::kDouble);
  auto labels = torch::tensor({0, 1, 1, 2}, torch::kLong);
  // Bins: {0.9, 0.9}: |1.8 - 1| = 0.8 ; {0.6}: |0.6 - 1| = 0.4 ; {0.4}: |0.4 - 1| = 0.6 -> 1.8 / 4.
  EXPECT_NEAR(expected_calibration_error(p, labels, 15), 0.45, 1e-12);
}

TEST(Metrics, AgreementAndKlToTeacher) {
  auto logits = torch::tensor({{1.0, 0.0}, {0.0, 1.0}});
  auto teacher = torch::tensor({{1.0, 0.0}, {1.0, 0.0}});
  auto m = classification_metrics(logits, torch::tensor({0, 1}, torch::kLong), teacher);
  EXPECT_DOUBLE_EQ(m["agreement_with_teacher"], 0.5);
  // Row 0 is identical (KL 0); row 1 swaps the two probabilities q0 = e/(e+1), q1 = 1/(e+1).
  double q0 = std::exp(1.0) / (std::exp(1.0) + 1), q1 = 1 - q0;
  double kl = q0 * std::log(q0 / q1) + q1 * std::log(q1 / q0);
  EXPECT_NEAR(m["kl_to_teacher"], kl / 2, 1e-6);
}

TEST(Metrics, RegressionByHand) {
  auto p = torch::tensor({1.0, 2.0, 4.0}).unsqueeze(1);
  auto y = torch::tensor({1.0, 3.0, 5.0}).unsqueeze(1);
  auto m = regression_metrics(p, y, y);
  EXPECT_NEAR(m["mae"], 2.0 / 3.0, 1e-7);
  EXPECT_NEAR(m["rmse"], std::sqrt(2.0 / 3.0), 1e-7);
  // SST = (1-3)^2 + 0 + (5-3)^2 = 8 ; SSE = 2 -> r2 = 0.75.
  EXPECT_NEAR(m["r2"], 0.75, 1e-7);
  EXPECT_NEAR(m["mse_to_teacher"], 2.0 / 3.0, 1e-7);
}

}  // namespace
}  // namespace kd::report
