// kdistill's stable C++ API (docs/library.md): the main flows -- a recipe, data from files or memory,
// a distillation run, then loading, scoring, running and exporting models -- in a few calls. What is
// declared or named here keeps its meaning within a minor version (0.1.x); the other headers under
// kd/ are installed because these include them, and may change in any release.
//
//   #include <kd/kdistill.h>
//   kd::setup();
//   kd::Recipe recipe = kd::load_recipe("examples/iris.yaml", {"distill.epochs=5"});
//   kd::RunResult result = kd::distill(recipe, kd::RunOptions().out("runs/iris"));
//   double accuracy = result.metrics["models"]["student"]["test"]["accuracy"];
//
// Every failure is a kd::Error (a std::runtime_error) whose what() is the one-line message the
// command-line program prints: the file, key or line, and what was expected.
#pragma once

#include <nlohmann/json.hpp>
#include <torch/arg.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "kd/flow/run.h"
#include "kd/io/model_file.h"
#include "kd/recipe/recipe.h"
#include "kd/util/error.h"
#include "kd/util/version.h"

namespace kd {

struct SetupOptions {
  TORCH_ARG(int, threads) = 0;                 // intra-op threads; 0 = every core
  TORCH_ARG(std::string, log_level) = "info";  // trace | debug | info | warn | error | off (progress lines: info)
};

// What `kdistill` does at start, for a program (or Python process) of its own: libtorch's threads, the
// OpenBLAS kernels that fit the CPU, kdistill's tensor allocator, TorchScript's simple executor, and the
// log level of the progress lines (on stderr). Call once before the rest; returns the threads in force.
// kd::Error for a log level not in the list.
int setup(const SetupOptions& options = SetupOptions());

// --- Recipes (docs/recipes.md) ---
using recipe::Recipe;
// A recipe file, with `key=value` overrides (the command line's --set) applied; relative paths in it
// are relative to its folder.
using recipe::load_recipe;
// A recipe from YAML text; relative paths are relative to `base_folder`; `name` is what messages call
// it ("recipe:3: task: ...").
Recipe parse_recipe(const std::string& yaml, const std::string& base_folder = ".",
                    const std::vector<std::string>& overrides = {}, const std::string& name = "recipe");

// Trains on arrays in memory instead of the recipe's data files: `x` [N, ...] inputs (uint8 pixels,
// or numbers), `y` [N] class labels (integers) or [N, K] regression targets; `x_test`/`y_test` the test
// rows (undefined: the recipe's data.test_fraction of x is held out). The arrays are read as the same
// arrays from .npy files would be (a run on them gives the numbers of `kdistill run` on those files)
// and are not copied before the folds are made. A saved teacher is reused only for the same arrays.
// kd::Error when the recipe names data files (data.train, data.test) or a data.format as well.
void set_arrays(Recipe& recipe, const torch::Tensor& x, const torch::Tensor& y,
                const torch::Tensor& x_test = torch::Tensor(), const torch::Tensor& y_test = torch::Tensor());

// The data stage alone (what a run starts with): the recipe's files or arrays read, split into train,
// validation and test rows (or K folds), preprocessing fitted on each fold's training rows.
using data::Dataset;
Dataset load_data(const Recipe& recipe);

// --- Distilling ---
using flow::RunOptions;  // out (the run folder), resume, force, device, ...
using flow::RunResult;   // metrics (metrics.json: teacher, baseline, student), table (the summary)
// `kdistill run`: the teacher (loaded or trained), the baseline student and the distilled student,
// each scored on the same test rows; the run folder holds the report, metrics and models
// (options.out()/student.kdm; student.pt with export: torchscript). Seeds from the recipe.
RunResult distill(const Recipe& recipe, const RunOptions& options = RunOptions());

// --- Models ---
using io::LoadedModel;
// Any model file kdistill reads: .kdm, TorchScript .pt, ONNX, a TF.js model.json (docs/interop.md).
// `output`: which output of a multi-output model (index or name; "" = the only or first one).
using io::load_model;

struct PredictOptions {
  TORCH_ARG(bool, normalized) = false;  // the inputs are normalised already (skip the model's normalize)
  TORCH_ARG(bool, softmax) = false;     // class probabilities instead of logits
  TORCH_ARG(std::string, name) = "inputs";  // what the inputs are called in messages (their file)
};
// `kdistill predict`: the outputs [N, outputs] of `model` on raw inputs [N, ...] (uint8 pixels are
// scaled to [0, 1]; the model's own preprocessing is applied, as at training).
torch::Tensor predict(LoadedModel& model, const torch::Tensor& inputs, const PredictOptions& options = PredictOptions());
// The same for a text model, on texts.
torch::Tensor predict(LoadedModel& model, const std::vector<std::string>& texts, const PredictOptions& options = PredictOptions());

struct EvaluateOptions {
  TORCH_ARG(int64_t, fold) = 1;              // with data.folds: which fold's test rows and preprocessing (1-based)
  TORCH_ARG(std::string, teacher) = "";      // also agreement and KL (MSE) to this model file
  TORCH_ARG(std::string, output) = "";       // a multi-output model's logits: index or name
  TORCH_ARG(std::string, input) = "auto";    // auto | raw | normalized (as teacher.input)
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  TORCH_ARG(std::shared_ptr<dist::Group>, group) = nullptr;  // data-parallel: each rank scores a share
};
// `kdistill eval`: the metrics.json entry (test metrics, size, latency, ...) of the model file on the
// test rows of the recipe's data, with "input" (how the model was fed and why).
nlohmann::json evaluate(const std::string& model_path, const Recipe& recipe,
                        const EvaluateOptions& options = EvaluateOptions());

// `kdistill export`: a model kdistill trained (.kdm, or a .pt it wrote) as `format` (torchscript, onnx,
// tfjs; docs/export.md) at `out_path`.
void export_model(const std::string& model_path, const std::string& format, const std::string& out_path);

}  // namespace kd
