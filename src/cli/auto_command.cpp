#include <spdlog/spdlog.h>

#include <iostream>

#include "cli/commands.h"
#include "kd/recipe/recipe.h"
#include "kd/search/auto.h"
#include "kd/util/error.h"
#include "kd/util/runtime.h"

namespace kd::cli {

namespace {
struct AutoFlags {
  std::string recipe;
  std::string out = "runs/auto";
  std::string budget;
  std::string target;
  std::vector<std::string> overrides;
  int64_t max_params = 0;
  double max_latency_ms = 0;
  int64_t trials = 0;
  bool resume = false;
  bool force = false;
  bool no_final = false;
  int64_t workers = 1;
  int64_t worker = 0;
  double worker_until = 0.0;
};
}  // namespace

void register_auto_command(CLI::App& app, GlobalOptions& global) {
  auto flags = std::make_shared<AutoFlags>();
  auto* command = app.add_subcommand("auto", "search student size and distillation settings under a time budget");
  command->add_option("recipe", flags->recipe, "recipe YAML (its search: section sets the space)")->required();
  command->add_option("--budget", flags->budget, "time for the search, teacher included: 90s, 20m, 1h30m")->required();
  command->add_option("--target", flags->target,
                      "when a student is good enough, e.g. \"accuracy >= teacher - 1.0\" (default: distill.target, else that)");
  command->add_option("--max-params", flags->max_params, "leave out students with more parameters");
  command->add_option("--max-latency-ms", flags->max_latency_ms, "leave out students slower than this at batch 1");
  command->add_option("--trials", flags->trials, "stop after this many trials (same seed and --trials: same search)");
  command->add_option("--out", flags->out, "output folder");
  command->add_option("--set", flags->overrides, "override a recipe key: --set distill.epochs=5");
  command->add_flag("--resume", flags->resume, "continue an interrupted search in --out");
  command->add_flag("--force", flags->force, "overwrite the outputs of an earlier search or run in --out");
  command->add_flag("--no-final", flags->no_final, "stop after the search: no retraining of the chosen student");
  command->add_option("--workers", flags->workers, "run trials in this many processes side by side (threads split between them)");
  command->add_option("--worker", flags->worker)->group("");  // set by the lead for the processes it starts
  command->add_option("--worker-until", flags->worker_until)->group("");
  command->callback([flags, &global] {
    global.exit_status = guarded([&] {
      apply_global_options(global);
      double budget = search::parse_duration(flags->budget, "--budget");
      auto base_overrides = flags->overrides;
      if (global.seed) base_overrides.push_back("seed=" + std::to_string(*global.seed));
      recipe::Recipe recipe = recipe::load_recipe(flags->recipe, base_overrides);
      seed_everything(recipe.seed);
      torch::Device device = chosen_device(global);
      auto group = connect_group(global);
      search::SpecFactory make_spec = [&](const std::vector<std::string>& sets) {
        auto all = base_overrides;
        all.insert(all.end(), sets.begin(), sets.end());
        flow::RunSpec spec = recipe::load_recipe(flags->recipe, all).run;
        spec.data.max_memory(memory_limit(global));
        return spec;
      };
      auto options = search::AutoOptions()
                         .out(flags->out)
                         .budget_seconds(budget)
                         .target(flags->target)
                         .max_params(flags->max_params)
                         .max_latency_ms(flags->max_latency_ms)
                         .trials(flags->trials)
                         .resume(flags->resume)
                         .force(flags->force)
                         .final_run(!flags->no_final)
                         .workers(flags->workers)
                         .worker(flags->worker)
                         .worker_until(flags->worker_until)
                         .search(recipe.search)
                         .group(group)
                         .device(device);
      auto result = search::run_auto(make_spec, options);
      if (flags->worker > 0 || !group->is_root()) return;
      std::cout << result.table << result.final_table << "outputs: " << flags->out
                << "/ (trials.csv, search.json, report.html, metrics.json, the chosen student)\n";
    });
  });
}

}  // namespace kd::cli
