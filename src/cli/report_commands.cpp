// kdistill report / eval: a run folder's report re-rendered; any model scored on a recipe's test rows.
#include <spdlog/spdlog.h>

#include <iostream>

#include "cli/commands.h"
#include "kd/kdistill.h"
#include "kd/io/model_file.h"
#include "kd/recipe/recipe.h"
#include "kd/report/html.h"
#include "kd/train/evaluate.h"
#include "kd/teacher/teacher_input.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/runtime.h"

namespace kd::cli {

namespace {
struct ReportFlags {
  std::string dir;
};
struct EvalFlags {
  std::string model;
  std::string data;
  std::string teacher;
  std::string output;
  std::string input = "auto";
  std::string json;
  std::vector<std::string> overrides;
  size_t fold = 1;
};

std::string eval_text(const std::string& model, const nlohmann::json& m) {
  std::string out = fmt::format("{}: {} test rows, {} params, {} MACs, {:.3f} ms at batch 1, {:.3f} ms at batch 256 (threads: {})\n",
                                model, m["test_rows"].get<int64_t>(), m["params"].get<int64_t>(), m["macs"].get<int64_t>(),
                                m["latency_ms"]["batch1"].get<double>(), m["latency_ms"]["batch256"].get<double>(),
                                m["latency_ms"]["threads"].get<int64_t>());
  for (const auto& [key, value] : m["test"].items()) out += fmt::format("  {:<24} {:.6g}\n", key, value.get<double>());
  return out;
}
}  // namespace

void register_report_commands(CLI::App& app, GlobalOptions& global) {
  auto report_flags = std::make_shared<ReportFlags>();
  auto* report = app.add_subcommand("report", "re-render DIR/report.html from a run folder (no retraining)");
  report->add_option("dir", report_flags->dir, "a folder `kdistill run --out` wrote")->required();
  report->callback([report_flags, &global] {
    global.exit_status = guarded([&] {
      apply_global_options(global);
      auto file = report::write_report(report_flags->dir);
      std::cout << "wrote " << file.string() << "\n";
    });
  });

  auto eval_flags = std::make_shared<EvalFlags>();
  auto* eval = app.add_subcommand("eval", "score a model on the test rows of a recipe's data (the metrics of `run`)");
  eval->add_option("model", eval_flags->model, "model file: " + io::model_formats_text())->required();
  eval->add_option("--data", eval_flags->data, "a recipe YAML: its task and data: section give the test rows")->required();
  eval->add_option("--set", eval_flags->overrides, "override a recipe key: --set data.test_limit=500");
  eval->add_option("--fold", eval_flags->fold, "with data.folds: which fold's preprocessing (1-based; default 1)");
  eval->add_option("--teacher", eval_flags->teacher, "also report agreement and KL (MSE) to this model");
  eval->add_option("--output", eval_flags->output, "the logits of a multi-output model: index or name");
  eval->add_option("--input", eval_flags->input,
                   "what a model file is fed, as teacher.input in a recipe: auto (default: a kdistill file's own "
                   "preprocessing; another tool's file raw or normalised, whichever scores better on training rows), "
                   "raw, normalized");
  eval->add_option("--json", eval_flags->json, "also write the metrics as JSON to this file");
  eval->callback([eval_flags, &global] {
    global.exit_status = guarded([&] {
      apply_global_options(global);
      torch::Device device = chosen_device(global);
      auto group = connect_group(global);
      auto overrides = eval_flags->overrides;
      if (global.seed) overrides.push_back("seed=" + std::to_string(*global.seed));
      recipe::Recipe recipe = recipe::load_recipe(eval_flags->data, overrides);
      recipe.data.max_memory(memory_limit(global));
      auto out = kd::evaluate(eval_flags->model, recipe,
                              EvaluateOptions().fold(eval_flags->fold).teacher(eval_flags->teacher).output(eval_flags->output)
                                  .input(eval_flags->input).device(device).group(group));
      if (!group->is_root()) return;  // rank 0 prints and writes what the ranks scored together
      if (!eval_flags->json.empty()) write_file_atomic(eval_flags->json, out.dump(2) + "\n");
      const nlohmann::json& m = out["metrics"];
      std::cout << eval_text(eval_flags->model, m);
    });
  });
}

}  // namespace kd::cli
