// `kdistill auto`: the smallest student that meets the distillation target, found under a
// time budget. The data is read and the teacher prepared once (TeacherCache); every trial is
// the base recipe plus overrides from the search space (kd/search/space.h), trained on the
// cached teacher outputs and scored on validation rows only. Trials are pruned at rungs by
// multi-objective successive halving (kd/search/asha.h) and proposed by TPE after a random
// start (kd/search/tpe.h). The chosen student is retrained by `run_distillation` with the
// recipe plus its overrides: the test rows are scored once, for it, and the folder gets every
// `kdistill run` output plus trials.csv, trials.json, search.json and the Pareto front in
// metrics.json ("search") and report.html. docs/auto.md is the user's guide.
//
//   auto make_spec = [&](const std::vector<std::string>& sets) { return recipe::load_recipe(path, sets).run; };
//   AutoResult r = run_auto(make_spec, AutoOptions().out("runs/auto").budget_seconds(1200));
#pragma once

#include <nlohmann/json.hpp>
#include <torch/arg.h>

#include <functional>
#include <string>
#include <vector>

#include "kd/search/space.h"
#include "kd/flow/run.h"

namespace kd::search {

struct AutoOptions {
  TORCH_ARG(std::string, out) = "runs/auto";
  TORCH_ARG(double, budget_seconds) = 1200;  // for the search, teacher included; the final retraining comes after
  TORCH_ARG(std::string, target) = "";       // "" = the recipe's distill.target, else default_target(task)
  TORCH_ARG(int64_t, max_params) = 0;        // 0 = no limit; larger students are not trained
  TORCH_ARG(double, max_latency_ms) = 0;     // batch-1 latency limit, measured before training; 0 = none
  TORCH_ARG(int64_t, trials) = 0;            // at most this many trials; 0 = until the budget ends
  TORCH_ARG(bool, resume) = false;           // continue the search in `out` (trials.json)
  TORCH_ARG(bool, force) = false;            // overwrite an earlier search's or run's outputs in `out`
  TORCH_ARG(bool, final_run) = true;         // retrain the chosen student with every `run` output
  TORCH_ARG(int64_t, latency_repeats) = 10;  // per trial
  TORCH_ARG(int64_t, workers) = 1;           // processes running trials side by side, threads split between them
  TORCH_ARG(int64_t, worker) = 0;            // > 0: this process is worker K of a search (started by the lead)
  TORCH_ARG(double, worker_until) = 0.0;     // a worker's deadline, in seconds since the Unix epoch
  // A data-parallel group (kd/dist/group.h): every rank runs trials side by side on its own threads,
  // sharing the trials through the group's store (rank 0 writes trials.json, search.json and the
  // outputs); the teacher and the chosen student's final run train data-parallel. A rank that dies
  // loses only its running trial.
  TORCH_ARG(std::shared_ptr<dist::Group>, group) = nullptr;
  TORCH_ARG(torch::Device, device) = torch::kCPU;  // where the teacher, the trials and the final run train
  TORCH_ARG(SearchOptions, search);
};

// The run spec of the base recipe plus `overrides` (--set values); kd::Error on a bad value.
using SpecFactory = std::function<flow::RunSpec(const std::vector<std::string>& overrides)>;

struct AutoResult {
  nlohmann::json search;     // what search.json and metrics.json's "search" hold
  bool target_reached = false;
  std::string table;         // the front and the choice, as printed
  std::string final_table;   // the final run's summary table ("" without the final run)
};

AutoResult run_auto(const SpecFactory& make_spec, const AutoOptions& options);

// "accuracy >= teacher - 1.0" (classification) or "rmse <= 1.05 * teacher" (regression).
std::string default_target(Task task);

// Seconds from "90", "90s", "20m", "1h30m", "1.5h"; kd::Error naming `field` otherwise.
double parse_duration(const std::string& text, const std::string& field);
// "20m00s", "1h05m", "42s".
std::string duration_text(double seconds);

}  // namespace kd::search
