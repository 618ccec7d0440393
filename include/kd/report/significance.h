// Is a difference between two models on the same test examples real? Paired tests.
//
// McNemar (classification): only_a = rows model A gets right and B wrong, only_b the reverse.
//   Exact two-sided binomial test (p = min(1, 2 P[X <= min(only_a, only_b)]), X ~ Bin(only_a +
//   only_b, 1/2)) when only_a + only_b < exact_below; otherwise chi-square with continuity
//   correction, statistic (|only_a - only_b| - 1)^2 / (only_a + only_b), 1 degree of freedom.
// Paired bootstrap: resample row indices with replacement (the same rows for both models),
//   statistic(A) - statistic(B) per resample, percentile interval. The index stream is
//   splitmix64(seed) taken modulo N, so a few lines of Python reproduce it exactly
//   (tests/fixtures/make_report_golden.py).
// Paired t-test across folds or seeds: mean difference, t = mean / (sd / sqrt(n)), n - 1 df.
//
//   auto m = mcnemar(student_correct, baseline_correct);   // m.p_value -> 0.03
//   auto ci = paired_bootstrap(s, b, Statistic::mean, BootstrapOptions().seed(0));
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kd::report {

struct McNemar {
  int64_t only_a = 0, only_b = 0;
  double statistic = 0.0;  // chi-square statistic; for the exact test, min(only_a, only_b)
  double p_value = 1.0;
  std::string method;      // "exact" | "chi2"
};
McNemar mcnemar(const std::vector<bool>& correct_a, const std::vector<bool>& correct_b, int64_t exact_below = 25);

// What the metric is of the per-row values: their mean (accuracy of 0/1 correctness, MAE of
// absolute errors) or the square root of their mean (RMSE of squared errors).
enum class Statistic { mean, root_mean };
double statistic_of(const std::vector<double>& values, Statistic statistic);

struct BootstrapOptions {
  TORCH_ARG(int64_t, resamples) = 1000;
  TORCH_ARG(double, confidence) = 0.95;
  TORCH_ARG(uint64_t, seed) = 0;
};

struct BootstrapInterval {
  double difference = 0.0;  // statistic(A) - statistic(B) on all rows
  double low = 0.0, high = 0.0;
  double fraction_positive = 0.0;  // resamples with A - B > 0
  int64_t resamples = 0;
  double confidence = 0.0;
};
BootstrapInterval paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b, Statistic statistic,
                                   const BootstrapOptions& options = {});

struct PairedT {
  int64_t n = 0;
  double mean_difference = 0.0, std_difference = 0.0;  // sample std (n - 1)
  double t = 0.0, p_value = 1.0;                        // two-sided; NaN t and p 1 with fewer than 2 pairs
};
PairedT paired_t_test(const std::vector<double>& a, const std::vector<double>& b);

// Building blocks, exposed for their tests (the distributions are Boost.Math's).
double binomial_two_sided_half(int64_t k, int64_t n);      // McNemar's exact p-value
double chi2_survival_1df(double x);                          // P[chi2_1 > x]
double student_t_two_sided(double t, double df);             // P[|T_df| > |t|]
double regularized_incomplete_beta(double a, double b, double x);
uint64_t splitmix64(uint64_t& state);
inline constexpr uint64_t kSplitmixGamma = 0x9E3779B97F4A7C15ULL;  // splitmix64's step of the state

}  // namespace kd::report
