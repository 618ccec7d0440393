#include "kd/search/tpe.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

namespace kd::search {

namespace {

constexpr double kPi = 3.14159265358979323846;

double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

// A mixture of Gaussians truncated to [0, 1], one per observed coordinate plus a broad prior N(0.5, 1).
struct Parzen {
  std::vector<double> mu, sigma;

  explicit Parzen(std::vector<double> points) {
    std::sort(points.begin(), points.end());
    size_t n = points.size();
    double min_sigma = 1.0 / std::min(100.0, static_cast<double>(n) + 1.0);
    for (size_t i = 0; i < n; ++i) {
      double left = points[i] - (i == 0 ? 0.0 : points[i - 1]);
      double right = (i + 1 == n ? 1.0 : points[i + 1]) - points[i];
      mu.push_back(points[i]);
      sigma.push_back(std::clamp(std::max(left, right), min_sigma, 1.0));
    }
    mu.push_back(0.5);
    sigma.push_back(1.0);
  }

  double density(double u) const {
    double sum = 0.0;
    for (size_t i = 0; i < mu.size(); ++i) {
      double mass = normal_cdf((1.0 - mu[i]) / sigma[i]) - normal_cdf(-mu[i] / sigma[i]);
      double z = (u - mu[i]) / sigma[i];
      sum += std::exp(-0.5 * z * z) / (sigma[i] * std::sqrt(2.0 * kPi) * mass);
    }
    return sum / static_cast<double>(mu.size());
  }

  double sample(std::mt19937_64& rng) const {
    std::uniform_int_distribution<size_t> pick(0, mu.size() - 1);
    size_t i = pick(rng);
    std::normal_distribution<double> normal(mu[i], sigma[i]);
    for (int attempt = 0; attempt < 100; ++attempt) {
      double u = normal(rng);
      if (u >= 0.0 && u <= 1.0) return u;
    }
    return std::clamp(mu[i], 0.0, 1.0);
  }
};

// Laplace-smoothed frequencies over the cells of an integer or choice dimension.
std::vector<double> cell_probabilities(const std::vector<double>& points, int64_t cells) {
  std::vector<double> p(static_cast<size_t>(cells), 1.0);
  for (double u : points) p[static_cast<size_t>(std::min<int64_t>(cells - 1, static_cast<int64_t>(u * cells)))] += 1.0;
  double total = std::accumulate(p.begin(), p.end(), 0.0);
  for (double& v : p) v /= total;
  return p;
}

}  // namespace

TpeSampler::TpeSampler(std::vector<Dimension> dimensions, TpeOptions options)
    : dimensions_(std::move(dimensions)), options_(options) {}

std::vector<double> TpeSampler::suggest(const std::vector<Observation>& history, uint64_t trial) const {
  std::seed_seq seq{options_.seed(), trial, uint64_t{0x6b64}};
  std::mt19937_64 rng(seq);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  size_t dims = dimensions_.size();
  std::vector<double> unit(dims, 0.5);

  if (static_cast<int64_t>(history.size()) < options_.startup_trials()) {
    for (size_t d = 0; d < dims; ++d) {
      double u = uniform(rng);
      if (!dimensions_[d].fixed()) unit[d] = u;
    }
    return unit;
  }

  std::vector<size_t> order(history.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (history[a].fidelity != history[b].fidelity) return history[a].fidelity > history[b].fidelity;
    return history[a].loss < history[b].loss;
  });
  size_t good_count = std::max<size_t>(1, static_cast<size_t>(std::ceil(options_.gamma() * static_cast<double>(history.size()))));

  std::vector<std::vector<double>> good(dims), bad(dims);
  for (size_t rank = 0; rank < order.size(); ++rank) {
    const auto& o = history[order[rank]];
    bool is_good = rank < good_count && std::isfinite(o.loss);
    for (size_t d = 0; d < dims; ++d) (is_good ? good : bad)[d].push_back(o.unit[d]);
  }

  std::vector<std::vector<double>> candidates(static_cast<size_t>(options_.candidates()), unit);
  std::vector<double> scores(candidates.size(), 0.0);
  for (size_t d = 0; d < dims; ++d) {
    const Dimension& dimension = dimensions_[d];
    if (dimension.fixed()) continue;
    int64_t cells = dimension.cells();
    if (cells > 0) {
      auto l = cell_probabilities(good[d], cells);
      auto g = cell_probabilities(bad[d], cells);
      std::discrete_distribution<size_t> pick(l.begin(), l.end());
      for (size_t c = 0; c < candidates.size(); ++c) {
        size_t cell = pick(rng);
        candidates[c][d] = (static_cast<double>(cell) + 0.5) / static_cast<double>(cells);
        scores[c] += std::log(l[cell]) - std::log(g[cell]);
      }
    } else {
      Parzen l(good[d]), g(bad[d]);
      for (size_t c = 0; c < candidates.size(); ++c) {
        double u = l.sample(rng);
        candidates[c][d] = u;
        scores[c] += std::log(l.density(u)) - std::log(g.density(u));
      }
    }
  }
  size_t best = static_cast<size_t>(std::max_element(scores.begin(), scores.end()) - scores.begin());
  return candidates[best];
}

}  // namespace kd::search
