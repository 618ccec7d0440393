// The model-based sampler of the search: the Tree-structured Parzen Estimator (Bergstra et al.
// 2011), independent per dimension, in the unit coordinates of kd/search/space.h. The first
// `startup_trials` are uniform random; after that the observed trials are split into the best
// `gamma` fraction and the rest, a Parzen density is fitted to each (truncated Gaussians with
// neighbour-distance bandwidths for numeric dimensions, smoothed counts for integer and choice
// ones), and of `candidates` draws from the good density the one with the largest ratio
// good/rest is suggested. Deterministic: the same seed, trial number and history give the same
// suggestion.
//
//   TpeSampler sampler(space.dimensions, TpeOptions().seed(0));
//   std::vector<double> unit = sampler.suggest(history, trial_number);
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <vector>

#include "kd/search/space.h"

namespace kd::search {

struct Observation {
  std::vector<double> unit;  // the trial's coordinates, one per dimension
  int64_t fidelity = 0;      // epochs it reached: more trustworthy values rank first
  double loss = 0.0;         // lower is better; infinity for trials that could not run
};

struct TpeOptions {
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(int64_t, startup_trials) = 10;
  TORCH_ARG(int64_t, candidates) = 24;
  TORCH_ARG(double, gamma) = 0.25;
};

class TpeSampler {
 public:
  TpeSampler(std::vector<Dimension> dimensions, TpeOptions options);
  // Coordinates in [0, 1] for trial number `trial` (0-based) given the trials observed so far.
  std::vector<double> suggest(const std::vector<Observation>& history, uint64_t trial) const;

 private:
  std::vector<Dimension> dimensions_;
  TpeOptions options_;
};

}  // namespace kd::search
