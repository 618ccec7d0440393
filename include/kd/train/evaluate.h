// The Evaluator of the flow: a model's metrics on test rows, its size and measured
// latency. `kdistill run` scores its three models with it and `kdistill eval` any
// loadable model, so both print the same numbers for the same model and rows.
//
//   auto fold = dataset.folds[0];
//   nlohmann::json m = evaluate_model(*model, dataset, 0, teacher.get(), EvalOptions().file("m.kdm"));
//   m["test"]["accuracy"] -> 0.91
#pragma once

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "kd/data/dataset.h"
#include "kd/dist/group.h"
#include "kd/io/model_file.h"
#include "kd/losses/loss_term.h"
#include "kd/models/model.h"
#include "kd/report/metrics.h"

namespace kd::train {

// Model outputs (or labels) in the targets' own units: regression targets may be standardised for training.
// The supervised objective of a model trained on labels alone (a teacher trained here, the baseline):
// ce for classification, mse to the labels for regression.
std::vector<losses::LossTermOptions> supervised_losses(Task task);

// kd::Error naming `what` unless `model` maps a batch of `x` to [N, dataset.outputs].
void check_outputs(models::Model& model, const data::Dataset& dataset, const torch::Tensor& x, const std::string& what);

// The ModelInfo of a model trained or loaded for `fold` of `dataset` (its preprocessing, classes,
// input shape); `spec` the zoo spec as JSON (null for a file), `output` the logits of a multi-output model.
io::ModelInfo info_for(const data::Dataset& dataset, const data::DataFold& fold, const nlohmann::json& spec,
                       const std::string& output = "");

torch::Tensor in_target_units(Task task, const data::DataFold& fold, const torch::Tensor& t);

// classification_metrics or regression_metrics (in target units) of outputs against y.
report::Metrics score(Task task, const data::DataFold& fold, const torch::Tensor& outputs, const torch::Tensor& y,
                      const torch::Tensor& teacher_outputs);

// score() of the model's outputs on the fold's validation rows: the validation of every Trainer::fit
// (teacher, baseline, student, search trials). `teacher_val`: the teacher's outputs on them, or undefined.
report::Metrics score_validation(models::Model& model, Task task, const data::DataFold& fold,
                                 const torch::Tensor& teacher_val, dist::Group* group = nullptr);

// The model's outputs on `x` shared out over a data-parallel group: each rank runs its rows (row % W ==
// rank) and the outputs are summed over the ranks into every rank's whole [N, outputs] (plain predict
// without a group). Validation and test scoring in a group cost each rank 1/W of the rows.
torch::Tensor predict_shared(models::Model& model, const torch::Tensor& x, dist::Group* group,
                             int64_t batch_size = 256);

// {params, macs, bytes (of `file`, 0 if none), file, latency_ms: {batch1, batch256, and for each its
// _p10, _p90 and _samples, threads}}: on `rows` (real inputs, repeated to the batch; token ids must be
// ids) or, without them, random numbers, after a warm-up of at least 3 passes and `min_seconds` / 3,
// the median (and 10th and 90th percentiles) of at least `repeats` passes at batch 1 (a quarter as
// many at 256) and of `min_seconds` of them (at most 10,000), so that a burst of other work on the
// machine moves the median little and shows in the spread.
nlohmann::json size_of(models::Model& model, const std::vector<int64_t>& input_shape, const std::string& file,
                       int64_t repeats, const torch::Tensor& rows = torch::Tensor(), double min_seconds = 0.03);

struct EvalOptions {
  TORCH_ARG(std::string, file) = "";           // the model's file, for its size in bytes
  TORCH_ARG(int64_t, latency_repeats) = 20;
  // A data-parallel group: each rank scores its share of the test rows; the size and latency are measured
  // on rank 0 alone (the other ranks' entries leave them out).
  TORCH_ARG(std::shared_ptr<dist::Group>, group) = nullptr;
  TORCH_ARG(torch::Device, device) = torch::kCPU;  // where the test rows run (latency is timed on the CPU)
};

// dataset.folds[fold_index] (0-based), or kd::Error naming --fold when the data has fewer folds.
const data::DataFold& eval_fold(const data::Dataset& dataset, size_t fold_index);

// The metrics.json entry of one model (size, test metrics, per-class scores, confusion, reliability or
// residuals) on the test rows of dataset.folds[fold]; with a teacher, also agreement and KL (or MSE) to it.
nlohmann::json evaluate_model(models::Model& model, const data::Dataset& dataset, size_t fold, models::Model* teacher,
                              const EvalOptions& options = {});

// The model's outputs on raw inputs [N, ...] as a user has them (uint8 pixels are scaled to [0, 1];
// [N, H, W] gets the channel axis): the preprocessing the file still lists (preprocessing.normalize)
// is applied first, unless `inputs_normalized`; regression outputs are mapped back to the targets'
// units (preprocessing.target_normalize). A CSV's categorical encoding is not applied: the inputs are
// the encoded features. kd::Error naming `what` when the shape does not fit the model.
//   auto loaded = io::load_model("student.kdm");
//   torch::Tensor y = predict_raw(loaded, data::read_npy("x.npy"), false, "x.npy");
torch::Tensor predict_raw(io::LoadedModel& loaded, torch::Tensor inputs, bool inputs_normalized, const std::string& what);

// Whether the model was trained on text (its preprocessing holds a tokenizer).
bool reads_text(const io::LoadedModel& loaded);
// The outputs of a model trained on text for raw texts: tokenized as in training (its stored tokenizer
// and max_length). kd::Error naming `what` for a model without a tokenizer.
torch::Tensor predict_texts(io::LoadedModel& loaded, const std::vector<std::string>& texts, const std::string& what);

}  // namespace kd::train
