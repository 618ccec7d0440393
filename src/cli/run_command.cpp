#include <spdlog/spdlog.h>

#include <iostream>

#include "cli/commands.h"
#include "kd/kdistill.h"
#include "kd/flow/run.h"
#include "kd/recipe/recipe.h"
#include "kd/util/error.h"
#include "kd/util/runtime.h"

namespace kd::cli {

namespace {
struct RunFlags {
  std::string recipe;
  std::string out = "runs/latest";
  std::vector<std::string> overrides;
  bool resume = false;
  bool force = false;
};
}  // namespace

void register_run_command(CLI::App& app, GlobalOptions& global) {
  auto flags = std::make_shared<RunFlags>();
  auto* command = app.add_subcommand("run", "train the teacher, a baseline and the distilled student");
  command->add_option("recipe", flags->recipe, "recipe YAML")->required();
  command->add_option("--out", flags->out, "output folder");
  command->add_option("--set", flags->overrides, "override a recipe key: --set distill.epochs=5");
  command->add_flag("--resume", flags->resume, "continue an interrupted run in --out");
  command->add_flag("--force", flags->force, "overwrite the outputs of an earlier run in --out");
  command->callback([flags, &global] {
    global.exit_status = guarded([&] {
      apply_global_options(global);
      auto overrides = flags->overrides;
      if (global.seed) overrides.push_back("seed=" + std::to_string(*global.seed));
      recipe::Recipe recipe = recipe::load_recipe(flags->recipe, overrides);
      recipe.run.data.max_memory(memory_limit(global));
      torch::Device device = chosen_device(global);
      auto group = connect_group(global);
      auto result = kd::distill(
          recipe, RunOptions().out(flags->out).resume(flags->resume).force(flags->force).group(group).device(device));
      if (!group->is_root()) return;  // the others are done once the student is trained; rank 0 writes
      std::cout << result.table << "outputs: " << flags->out << "/ (report.html, metrics.json, epochs.csv, models, tensorboard/)\n";
    });
  });
}

}  // namespace kd::cli
