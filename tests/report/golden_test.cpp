// Metrics and paired tests against tests/fixtures/report_golden.json, made by
// tests/fixtures/make_report_golden.py with scikit-learn 1.2 and SciPy 1.10.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kd/report/metrics.h"
#include "kd/report/significance.h"
#include "kd/util/fs.h"

namespace kd::report {
namespace {

const nlohmann::json& golden() {
  static const nlohmann::json g =
      nlohmann::json::parse(read_file(std::string(KD_SOURCE_DIR) + "/tests/fixtures/report_golden.json"));
  return g;
}

torch::Tensor matrix(const nlohmann::json& rows) {
  std::vector<torch::Tensor> out;
  for (const auto& r : rows) out.push_back(torch::tensor(r.get<std::vector<double>>(), torch::kDouble));
  return torch::stack(out);
}

void expect_near_all(const std::vector<double>& actual, const nlohmann::json& expected, const char* what) {
  auto e = expected.get<std::vector<double>>();
  ASSERT_EQ(actual.size(), e.size()) << what;
  for (size_t i = 0; i < e.size(); ++i) EXPECT_NEAR(actual[i], e[i], 1e-12) << what << "[" << i << "]";
}

TEST(ReportGolden, ClassificationAgainstScikitLearn) {
  const auto& g = golden()["classification"];
  auto logits = matrix(g["logits"]);
  auto labels = torch::tensor(g["labels"].get<std::vector<int64_t>>(), torch::kLong);
  auto m = classification_metrics(logits, labels);
  EXPECT_NEAR(m["accuracy"], g["accuracy"].get<double>(), 1e-12);
  EXPECT_NEAR(m["top5_accuracy"], g["top5_accuracy"].get<double>(), 1e-12);
  EXPECT_NEAR(m["macro_f1"], g["macro_f1"].get<double>(), 1e-12);
  EXPECT_NEAR(m["nll"], g["nll"].get<double>(), 1e-9);
  EXPECT_NEAR(m["ece"], g["ece"].get<double>(), 1e-12);

  auto predicted = logits.argmax(1);
  auto scores = per_class_scores(predicted, labels, 7);
  expect_near_all(scores.precision, g["precision"], "precision");
  expect_near_all(scores.recall, g["recall"], "recall");
  expect_near_all(scores.f1, g["f1"], "f1");
  EXPECT_EQ(scores.support, g["support"].get<std::vector<int64_t>>());

  auto confusion = confusion_matrix(predicted, labels, 7);
  for (int64_t i = 0; i < 7; ++i) {
    for (int64_t j = 0; j < 7; ++j) EXPECT_EQ(confusion[i][j].item<int64_t>(), g["confusion"][i][j].get<int64_t>());
  }

  auto bins = reliability_bins(torch::softmax(logits, 1), labels, 15);
  EXPECT_EQ(bins.count, g["reliability_count"].get<std::vector<int64_t>>());
  expect_near_all(bins.confidence, g["reliability_confidence"], "confidence");
  expect_near_all(bins.accuracy, g["reliability_accuracy"], "bin accuracy");
}

TEST(ReportGolden, RegressionAgainstScikitLearn) {
  const auto& g = golden()["regression"];
  auto m = regression_metrics(matrix(g["predictions"]), matrix(g["targets"]));
  EXPECT_NEAR(m["mae"], g["mae"].get<double>(), 1e-12);
  EXPECT_NEAR(m["rmse"], g["rmse"].get<double>(), 1e-12);
  EXPECT_NEAR(m["r2"], g["r2"].get<double>(), 1e-12);
}

TEST(ReportGolden, McNemarAgainstScipy) {
  for (const auto& c : golden()["mcnemar"]) {
    int64_t only_a = c["only_a"], only_b = c["only_b"];
    // Rows: only_a (A right, B wrong), only_b (the reverse), then 5 both right and 3 both wrong.
    std::vector<bool> a, b;
    for (int64_t i = 0; i < only_a; ++i) a.push_back(true), b.push_back(false);
    for (int64_t i = 0; i < only_b; ++i) a.push_back(false), b.push_back(true);
    for (int i = 0; i < 5; ++i) a.push_back(true), b.push_back(true);
    for (int i = 0; i < 3; ++i) a.push_back(false), b.push_back(false);
    auto m = mcnemar(a, b);
    EXPECT_EQ(m.only_a, only_a);
    EXPECT_EQ(m.only_b, only_b);
    EXPECT_EQ(m.method, c["method"].get<std::string>()) << only_a << " vs " << only_b;
    EXPECT_NEAR(m.p_value, c["p_value"].get<double>(), 1e-12) << only_a << " vs " << only_b;
    if (c.contains("statistic")) {
      EXPECT_NEAR(m.statistic, c["statistic"].get<double>(), 1e-12);
    }
  }
}

TEST(ReportGolden, PairedBootstrapReplaysThePythonStream) {
  for (const auto& c : golden()["bootstrap"]) {
    auto r = paired_bootstrap(c["a"].get<std::vector<double>>(), c["b"].get<std::vector<double>>(),
                              c["root"].get<bool>() ? Statistic::root_mean : Statistic::mean,
                              BootstrapOptions().resamples(c["resamples"]).seed(c["seed"]));
    EXPECT_NEAR(r.difference, c["difference"].get<double>(), 1e-12);
    EXPECT_NEAR(r.low, c["low"].get<double>(), 1e-12);
    EXPECT_NEAR(r.high, c["high"].get<double>(), 1e-12);
    EXPECT_NEAR(r.fraction_positive, c["fraction_positive"].get<double>(), 1e-12);
    EXPECT_LE(r.low, r.difference);
    EXPECT_GE(r.high, r.difference);
  }
}

TEST(ReportGolden, PairedTAndDistributionsAgainstScipy) {
  for (const auto& c : golden()["paired_t"]) {
    auto r = paired_t_test(c["a"].get<std::vector<double>>(), c["b"].get<std::vector<double>>());
    EXPECT_NEAR(r.t, c["t"].get<double>(), 1e-9);
    EXPECT_NEAR(r.p_value, c["p_value"].get<double>(), 1e-9);
  }
  for (const auto& c : golden()["t_two_sided"]) {
    EXPECT_NEAR(student_t_two_sided(c["t"], c["df"]), c["p"].get<double>(), 1e-10) << c.dump();
  }
  for (const auto& c : golden()["incomplete_beta"]) {
    EXPECT_NEAR(regularized_incomplete_beta(c["a"], c["b"], c["x"]), c["value"].get<double>(), 1e-10) << c.dump();
  }
}

TEST(Significance, EdgeCases) {
  // Identical models: no discordant rows, p = 1; a bootstrap interval of exactly 0.
  std::vector<bool> same = {true, false, true};
  EXPECT_DOUBLE_EQ(mcnemar(same, same).p_value, 1.0);
  std::vector<double> v = {1, 0, 1, 1};
  auto r = paired_bootstrap(v, v, Statistic::mean, BootstrapOptions().resamples(50));
  EXPECT_EQ(r.low, 0.0);
  EXPECT_EQ(r.high, 0.0);
  // A constant shift d: every resample's difference is d.
  auto shifted = paired_bootstrap({2, 3, 4}, {1, 2, 3}, Statistic::mean, BootstrapOptions().resamples(50));
  EXPECT_NEAR(shifted.low, 1.0, 1e-12);
  EXPECT_NEAR(shifted.high, 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(shifted.fraction_positive, 1.0);
  // One fold: no t-test; identical folds: p = 1.
  EXPECT_TRUE(std::isnan(paired_t_test({0.9}, {0.8}).t));
  EXPECT_DOUBLE_EQ(paired_t_test({0.9, 0.8}, {0.9, 0.8}).p_value, 1.0);
  // Exact binomial by hand: 1 of 4 discordant rows, 2 * (1 + 4) / 16 = 0.625.
  EXPECT_NEAR(binomial_two_sided_half(1, 4), 0.625, 1e-15);
}

}  // namespace
}  // namespace kd::report
