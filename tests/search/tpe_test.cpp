// The TPE sampler: random start, determinism, and that the model-based phase finds good regions
// faster than random search on known functions.
#include <gtest/gtest.h>

#include <cmath>

#include "kd/search/tpe.h"

namespace kd::test {
namespace {

using search::Dimension;
using search::DimensionKind;
using search::Observation;
using search::TpeOptions;
using search::TpeSampler;

// Best loss found in `trials` trials of f over the unit square with a loss to minimise.
double best_of(const TpeSampler& sampler, int trials, const std::function<double(const std::vector<double>&)>& f) {
  std::vector<Observation> history;
  double best = INFINITY;
  for (int t = 0; t < trials; ++t) {
    auto u = sampler.suggest(history, static_cast<uint64_t>(t));
    double loss = f(u);
    best = std::min(best, loss);
    history.push_back({u, 1, loss});
  }
  return best;
}

TEST(Tpe, SameSeedAndHistoryGiveTheSameSuggestion) {
  std::vector<Dimension> dims = {Dimension{"lr", DimensionKind::log_real, 1e-3, 1, {}},
                                 Dimension{"loss", DimensionKind::choice, 0, 0, {"kl", "js", "dkd"}}};
  TpeSampler a(dims, TpeOptions().seed(7).startup_trials(3)), b(dims, TpeOptions().seed(7).startup_trials(3));
  std::vector<Observation> history = {{{0.1, 0.2}, 1, 3.0}, {{0.5, 0.5}, 1, 1.0}, {{0.9, 0.9}, 1, 2.0}, {{0.4, 0.1}, 1, 0.5}};
  EXPECT_EQ(a.suggest(history, 4), b.suggest(history, 4));
  EXPECT_NE(a.suggest(history, 4), a.suggest(history, 5));
  TpeSampler c(dims, TpeOptions().seed(8).startup_trials(3));
  EXPECT_NE(a.suggest(history, 4), c.suggest(history, 4));
  for (double u : a.suggest(history, 4)) {
    EXPECT_GE(u, 0.0);
    EXPECT_LE(u, 1.0);
  }
}

TEST(Tpe, FixedDimensionsStayInTheMiddle) {
  std::vector<Dimension> dims = {Dimension{"temperature", DimensionKind::log_real, 4, 4, {}},
                                 Dimension{"alpha", DimensionKind::real, 0, 1, {}}};
  TpeSampler sampler(dims, TpeOptions().startup_trials(2));
  std::vector<Observation> history;
  for (int t = 0; t < 6; ++t) {
    auto u = sampler.suggest(history, static_cast<uint64_t>(t));
    EXPECT_EQ(u[0], 0.5);
    history.push_back({u, 1, std::abs(u[1] - 0.3)});
  }
}

TEST(Tpe, BeatsRandomSearchOnAQuadraticBowl) {
  std::vector<Dimension> dims = {Dimension{"a", DimensionKind::real, 0, 1, {}}, Dimension{"b", DimensionKind::real, 0, 1, {}}};
  auto bowl = [](const std::vector<double>& u) { return std::pow(u[0] - 0.73, 2) + std::pow(u[1] - 0.21, 2); };
  double tpe = 0, random = 0;
  for (uint64_t seed = 0; seed < 5; ++seed) {
    tpe += best_of(TpeSampler(dims, TpeOptions().seed(seed).startup_trials(8)), 40, bowl);
    random += best_of(TpeSampler(dims, TpeOptions().seed(seed).startup_trials(1000)), 40, bowl);
  }
  EXPECT_LT(tpe, 0.5 * random) << "TPE mean best " << tpe / 5 << ", random " << random / 5;
}

TEST(Tpe, PrefersTheGoodChoiceAndFidelity) {
  std::vector<Dimension> dims = {Dimension{"loss", DimensionKind::choice, 0, 0, {"kl", "js", "dkd", "reverse_kl"}}};
  TpeSampler sampler(dims, TpeOptions().seed(3).startup_trials(8));
  std::vector<Observation> history;
  int picked_js = 0;
  for (int t = 0; t < 40; ++t) {
    auto u = sampler.suggest(history, static_cast<uint64_t>(t));
    int cell = static_cast<int>(u[0] * 4);
    if (t >= 8 && cell == 1) ++picked_js;
    history.push_back({u, 1, cell == 1 ? 0.0 : 1.0});
  }
  EXPECT_GT(picked_js, 20) << "of 32 model-based suggestions";
  // A low loss at low fidelity ranks behind any loss at full fidelity.
  std::vector<Observation> mixed;
  for (int t = 0; t < 12; ++t) {
    double u = (t % 4 + 0.5) / 4;
    bool js = t % 4 == 1;
    mixed.push_back({{u}, js ? 1 : 10, js ? 0.0 : 1.0});  // js only seen at 1 epoch
  }
  int js_after = 0;
  for (int t = 0; t < 20; ++t) js_after += static_cast<int>(sampler.suggest(mixed, 100 + t)[0] * 4) == 1;
  EXPECT_LT(js_after, 10);
}

}  // namespace
}  // namespace kd::test
