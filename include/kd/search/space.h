// The search space of `kdistill auto`: student size and distillation settings. Each
// dimension maps a point u in [0, 1) to a value; a configuration (one value per dimension)
// becomes recipe overrides (`--set key=value`), so every trial is a recipe that
// `kdistill run` repeats exactly. docs/auto.md lists the dimensions and their defaults.
//
//   SearchSpace space = make_space(spec, SearchOptions());
//   Config config = decode(space, {0.4, 0.9, 0.1, 0.5, 0.7, 0.2});
//   overrides(space, config, spec)  ->  {"student.model.width_multiplier=0.5", "distill.losses=[...]", ...}
#pragma once

#include <nlohmann/json.hpp>
#include <torch/arg.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kd/flow/run.h"

namespace kd::search {

//   real      uniform in [low, high]
//   log_real  log-uniform in [low, high] (temperature, learning rate, width multiplier)
//   integer   one of low, low+1, ..., high (depth)
//   choice    one of `choices` (loss kind, a candidate student's index)
enum class DimensionKind { real, log_real, integer, choice };

struct Dimension {
  std::string name;
  DimensionKind kind = DimensionKind::real;
  double low = 0.0, high = 0.0;
  std::vector<std::string> choices;

  // Number of distinct values of an integer or choice dimension (0 for real ones).
  int64_t cells() const;
  bool fixed() const;
  // u in [0, 1] -> the value (numbers rounded to 4 significant digits, so that the value printed
  // in an override is the value trained with).
  nlohmann::json decode(double u) const;
};

// The dimensions a recipe can set under `search:`, in the order configurations list them.
const std::vector<std::string>& dimension_names();  // student, width, depth, loss, temperature, alpha, lr

// A dimension from the recipe: a range [low, high] or one value (low == high) of a numeric
// dimension; kd::Error naming `field` when the name is unknown, the dimension is a choice, or
// the range is empty or outside the dimension's domain.
Dimension numeric_dimension(const std::string& name, double low, double high, const std::string& field);
// A choice dimension (loss); kd::Error naming `field` on an unknown name or an empty list.
Dimension choice_dimension(const std::string& name, std::vector<std::string> choices, const std::string& field);

// The search: section of a recipe (every key optional).
struct SearchOptions {
  TORCH_ARG(std::vector<Dimension>, dimensions) = {};      // set in the recipe; replace the defaults
  TORCH_ARG(std::vector<std::string>, students) = {};      // candidate zoo specs (YAML flow maps) instead of width and depth
  TORCH_ARG(bool, recipe_losses) = false;  // `loss: recipe`: keep distill.losses; no loss, temperature, alpha
  TORCH_ARG(int64_t, epochs) = 0;          // a trial's epochs at full fidelity; 0 = distill.epochs
  TORCH_ARG(int64_t, min_epochs) = 1;      // the first rung
  TORCH_ARG(int64_t, eta) = 3;             // rungs at min_epochs * eta^k; a third goes on at each
  TORCH_ARG(int64_t, startup_trials) = 10; // random trials before the model-based sampler
  TORCH_ARG(std::string, front) = "params";  // the size axis of the Pareto front: params | macs | latency_ms
};

// kd::Error naming search.KEY on a bad value.
void validate(const SearchOptions& options);

using Config = nlohmann::json;  // {dimension name: value}

struct SearchSpace {
  std::vector<Dimension> dimensions;       // every dimension, fixed ones included
  std::vector<std::string> students;       // the `student` dimension's candidates (YAML flow maps)
  bool regression = false;
};

// The defaults derived from the recipe (width around the recipe's student, its depth and one more,
// temperature 1-20, alpha 0.1-1, the learning rate from a tenth to 4x the recipe's, kl/js/dkd), with
// the recipe's search: settings in place of the defaults they name.
SearchSpace make_space(const flow::RunSpec& base, const SearchOptions& options);

// One value per dimension from unit coordinates (one per dimension, in order).
Config decode(const SearchSpace& space, const std::vector<double>& unit);

// The recipe overrides that make the base recipe train `config`.
std::vector<std::string> overrides(const SearchSpace& space, const Config& config, const flow::RunSpec& base);

// "width=0.5 depth=2 loss=kl ..." for logs and tables.
std::string config_text(const Config& config);

}  // namespace kd::search
