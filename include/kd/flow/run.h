// `kdistill run` as a library call: teacher (loaded or trained), a baseline student
// trained without the teacher, the distilled student, all evaluated on the same test
// rows, with metrics.json, epochs.csv, the model files and checkpoints in one folder.
//
//   RunResult r = run_distillation(spec, RunOptions().out("runs/x"));
#pragma once

#include <nlohmann/json.hpp>
#include <torch/arg.h>

#include <optional>
#include <string>
#include <vector>

#include "kd/data/dataset.h"
#include "kd/losses/loss_term.h"
#include "kd/models/init.h"
#include "kd/models/zoo.h"
#include "kd/teacher/teacher_cache.h"
#include "kd/train/trainer.h"

// The flow: the stages put together as the commands run them (run here; auto in search/auto.h).
namespace kd::flow {

using teacher::TeacherSpec;
using train::TrainOptions;

// Training rows on which student.init units: variance measures the teacher's activations.
constexpr int64_t kInitSampleRows = 1000;

struct StudentSpec {
  std::optional<models::ZooSpec> model;    // a zoo spec; or
  std::string path;                        // a trainable TorchScript student (.pt)
  std::string init = "random";             // random | teacher (copy matching teacher tensors)
  models::InitOptions init_options;        // which teacher layers and units (models::copy_from_teacher)
};

// One stage of a staged distillation (recipe `distill.stages`): the student trains `train.epochs()`
// epochs on `losses`, then the next stage continues from its weights (FitNets: hints first).
struct StageSpec {
  std::vector<losses::LossTermOptions> losses;  // default: distill.losses
  TrainOptions train;                           // distill's, with the stage's epochs, optimizer, schedule
};

struct DistillSpec {
  std::vector<losses::LossTermOptions> losses;           // the distilled student's objective
  std::vector<losses::LossTermOptions> baseline_losses;  // default: ce (classification), mse to labels
  bool baseline = true;
  TrainOptions train;
  std::string target;                                    // target expression, "" = none
  int64_t views = -1;  // augmented views in the teacher's soft-label bank; 0 = online (a live teacher);
                       // -1 = auto: online with mixup/cutmix, else min(epochs, 8)
  train::BankStorage bank;  // the bank's storage (top-k, memory limit); its file goes in the run's folder
  std::vector<StageSpec> stages;  // empty: one stage, `losses` for `train`'s epochs
};

// The bank's views for `distill` trained for `epochs` (`epochs` 0: not yet known), resolving auto and
// dropping views past the epochs (epoch e trains on view e mod V); -1 when a feature term reads the
// teacher's taps (the teacher runs live: teacher::distill_train_data). kd::Error naming distill.views
// when a bank is asked to hold mixup or cutmix mixtures.
int64_t bank_views(const DistillSpec& distill, int64_t epochs);

struct RunSpec {
  Task task = Task::classification;
  uint64_t seed = 0;
  data::DataSpec data;
  TeacherSpec teacher;
  StudentSpec student;
  DistillSpec distill;
  std::vector<std::string> exports;        // torchscript, onnx (DIR/student.onnx)
  std::string recipe_text;                 // the recipe as run (written to DIR/recipe.yaml)
  std::string teacher_fingerprint;         // identifies the teacher part + data; a saved teacher is reused when equal
};

struct RunOptions {
  TORCH_ARG(std::string, out) = "runs/latest";
  TORCH_ARG(bool, resume) = false;
  // Overwrite the outputs of an earlier run in `out` (check_out_folder); its teacher is still reused
  // when the teacher part is the same.
  TORCH_ARG(bool, force) = false;
  TORCH_ARG(int64_t, latency_repeats) = 20;
  TORCH_ARG(nlohmann::json, extra_metrics) = nlohmann::json::object();  // merged into metrics.json (e.g. "search")
  // Soft-label banks made earlier for the same recipe, one per fold (null: none); a fold's bank is
  // used when its rows and views are the ones this run needs (auto's final run reuses the trials').
  TORCH_ARG(std::vector<std::shared_ptr<const train::SoftLabelBank>>, banks) = {};
  // Data-parallel over a group of processes: teacher, baseline and student train on every rank's rows
  // (train::TrainOptions::group); rank 0 alone writes the run folder, the others return once the
  // student is trained (RunResult empty). Resuming and reusing a teacher read `out` on every rank.
  TORCH_ARG(std::shared_ptr<dist::Group>, group) = nullptr;
  // Where teacher, baseline and student train and the teacher computes its outputs
  // (train::TrainOptions::device); the test rows are scored on the CPU.
  TORCH_ARG(torch::Device, device) = torch::kCPU;
};

struct RunResult {
  nlohmann::json metrics;   // what metrics.json holds (null on ranks other than 0)
  std::string table;        // the summary table printed at the end
};

RunResult run_distillation(const RunSpec& spec, const RunOptions& options);


// The folder of fold `fold` in a run folder: `out` itself with one fold, out/fold-K with K folds.
std::string fold_dir(const std::string& out, size_t fold, size_t folds);

// A finished run is not overwritten unasked: kd::Error when `out` holds a finished run's or search's
// outputs (metrics.json, search.json) and neither `resume` nor `force` is set. (A run that stopped
// before its end starts again without --resume, as before.)
void check_out_folder(const std::string& out, bool resume, bool force);

// A new student from the spec (zoo spec or trainable TorchScript file), checked against the data.
models::ModelPtr build_student(const StudentSpec& spec, const data::Dataset& dataset);

}  // namespace kd::flow
