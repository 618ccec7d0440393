#include "kd/report/significance.h"

#include <ATen/Parallel.h>

#include <boost/math/distributions/binomial.hpp>
#include <boost/math/distributions/students_t.hpp>
#include <boost/math/special_functions/beta.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kd/util/error.h"

namespace kd::report {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += kSplitmixGamma);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

double binomial_two_sided_half(int64_t k, int64_t n) {
  if (n == 0) return 1.0;
  auto tail = boost::math::cdf(boost::math::binomial_distribution<double>(static_cast<double>(n), 0.5), static_cast<double>(k));
  return std::min(1.0, 2.0 * tail);
}

double chi2_survival_1df(double x) { return x <= 0 ? 1.0 : std::erfc(std::sqrt(x / 2.0)); }

namespace {

// numpy.percentile's default (linear interpolation between order statistics) of sorted values.
double percentile_sorted(const std::vector<double>& sorted, double q) {
  double position = q * static_cast<double>(sorted.size() - 1);
  auto below = static_cast<size_t>(std::floor(position));
  size_t above = std::min(below + 1, sorted.size() - 1);
  double weight = position - static_cast<double>(below);
  return sorted[below] + weight * (sorted[above] - sorted[below]);
}

}  // namespace

double regularized_incomplete_beta(double a, double b, double x) {
  if (x <= 0) return 0.0;
  if (x >= 1) return 1.0;
  return boost::math::ibeta(a, b, x);
}

double student_t_two_sided(double t, double df) {
  if (std::isnan(t)) return 1.0;
  if (std::isinf(t)) return 0.0;
  return 2.0 * boost::math::cdf(boost::math::complement(boost::math::students_t_distribution<double>(df), std::abs(t)));
}

McNemar mcnemar(const std::vector<bool>& correct_a, const std::vector<bool>& correct_b, int64_t exact_below) {
  KD_CHECK(correct_a.size() == correct_b.size(), "{} and {} rows", correct_a.size(), correct_b.size());
  McNemar m;
  for (size_t i = 0; i < correct_a.size(); ++i) {
    if (correct_a[i] && !correct_b[i]) ++m.only_a;
    if (!correct_a[i] && correct_b[i]) ++m.only_b;
  }
  int64_t discordant = m.only_a + m.only_b;
  if (discordant < exact_below) {
    m.method = "exact";
    m.statistic = static_cast<double>(std::min(m.only_a, m.only_b));
    m.p_value = binomial_two_sided_half(std::min(m.only_a, m.only_b), discordant);
  } else {
    m.method = "chi2";
    double gap = std::abs(static_cast<double>(m.only_a - m.only_b)) - 1.0;
    m.statistic = gap * gap / static_cast<double>(discordant);
    m.p_value = chi2_survival_1df(m.statistic);
  }
  return m;
}

double statistic_of(const std::vector<double>& values, Statistic statistic) {
  double sum = 0;
  for (double v : values) sum += v;
  double mean = values.empty() ? 0.0 : sum / static_cast<double>(values.size());
  return statistic == Statistic::mean ? mean : std::sqrt(mean);
}

BootstrapInterval paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b, Statistic statistic,
                                   const BootstrapOptions& options) {
  KD_CHECK(a.size() == b.size() && !a.empty(), "{} and {} rows", a.size(), b.size());
  KD_CHECK(options.resamples() > 1 && options.confidence() > 0 && options.confidence() < 1, "resamples {} confidence {}",
           options.resamples(), options.confidence());
  BootstrapInterval out;
  out.difference = statistic_of(a, statistic) - statistic_of(b, statistic);
  out.resamples = options.resamples();
  out.confidence = options.confidence();
  const uint64_t n = a.size();
  // Resample r reads the stream from draw r * n on (splitmix64's state after k draws is seed + k * gamma),
  // so resamples run on any number of threads and give the one-thread values.
  std::vector<double> differences(static_cast<size_t>(options.resamples()));
  at::parallel_for(0, options.resamples(), 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      uint64_t state = options.seed() + static_cast<uint64_t>(r) * n * kSplitmixGamma;
      double sum_a = 0, sum_b = 0;
      for (uint64_t i = 0; i < n; ++i) {
        uint64_t row = splitmix64(state) % n;
        sum_a += a[row];
        sum_b += b[row];
      }
      double mean_a = sum_a / static_cast<double>(n), mean_b = sum_b / static_cast<double>(n);
      differences[static_cast<size_t>(r)] =
          statistic == Statistic::mean ? mean_a - mean_b : std::sqrt(mean_a) - std::sqrt(mean_b);
    }
  });
  int64_t positive = std::count_if(differences.begin(), differences.end(), [](double d) { return d > 0; });
  std::sort(differences.begin(), differences.end());
  double tail = (1.0 - options.confidence()) / 2.0;
  out.low = percentile_sorted(differences, tail);
  out.high = percentile_sorted(differences, 1.0 - tail);
  out.fraction_positive = static_cast<double>(positive) / static_cast<double>(options.resamples());
  return out;
}

PairedT paired_t_test(const std::vector<double>& a, const std::vector<double>& b) {
  KD_CHECK(a.size() == b.size(), "{} and {} values", a.size(), b.size());
  PairedT out;
  out.n = static_cast<int64_t>(a.size());
  if (out.n == 0) return out;
  double mean = 0;
  for (size_t i = 0; i < a.size(); ++i) mean += a[i] - b[i];
  mean /= static_cast<double>(out.n);
  out.mean_difference = mean;
  if (out.n < 2) {
    out.t = std::numeric_limits<double>::quiet_NaN();
    return out;
  }
  double var = 0;
  for (size_t i = 0; i < a.size(); ++i) var += (a[i] - b[i] - mean) * (a[i] - b[i] - mean);
  out.std_difference = std::sqrt(var / static_cast<double>(out.n - 1));
  if (out.std_difference == 0) {
    out.t = mean == 0 ? std::numeric_limits<double>::quiet_NaN() : std::copysign(INFINITY, mean);
  } else {
    out.t = mean / (out.std_difference / std::sqrt(static_cast<double>(out.n)));
  }
  out.p_value = student_t_two_sided(out.t, static_cast<double>(out.n - 1));
  return out;
}

}  // namespace kd::report
