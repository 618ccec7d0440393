// The one place that owns the training loop: teacher training, the baseline and
// the distilled student all go through Trainer::fit with different loss terms.
//
// Per step: a batch by index_select (kd::data::Batcher), the rows' augmented view
// (kd::data::Augmenter: view e of each row in epoch e, or view e mod V with a bank of V views) and
// mixup or cutmix, the student's forward (optionally under bfloat16 autocast), the teacher's outputs
// from the cache or bank (or a live forward on the augmented batch), the weighted loss,
// backward, gradient clipping, the optimizer step under the LR schedule. Per epoch:
// validation, the best state kept, the target checked, early stopping, a checkpoint.
//
//   Trainer trainer(TrainOptions().epochs(10), distiller, "student");
//   TrainResult r = trainer.fit(model, data, validate);
#pragma once

#include <nlohmann/json.hpp>
#include <torch/arg.h>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kd/data/augment.h"
#include "kd/dist/group.h"
#include "kd/losses/distiller.h"
#include "kd/models/model.h"
#include "kd/report/metrics.h"
#include "kd/train/optim.h"
#include "kd/train/soft_label_bank.h"
#include "kd/train/target.h"

namespace kd::train {

struct TrainOptions {
  TORCH_ARG(int64_t, epochs) = 0;      // 0: sized to the rows (sized_for_rows)
  TORCH_ARG(int64_t, steps) = 0;  // > 0: exactly this many optimizer steps (epochs = ceil(steps / batches))
  TORCH_ARG(int64_t, batch_size) = 0;  // 0: sized to the rows
  TORCH_ARG(OptimizerOptions, optimizer);
  TORCH_ARG(ScheduleOptions, schedule);
  TORCH_ARG(double, grad_clip) = 0.0;          // max global gradient norm; 0 = off
  // A loss (or, with grad_clip, a gradient norm) that is not finite, or parameters that are not at an
  // epoch's end: back to the last good state (Divergence) with a tenth of the learning rate, at most
  // this many times a fit; then kd::Error. 0: kd::Error at once.
  TORCH_ARG(int64_t, divergence_retries) = 3;
  TORCH_ARG(std::string, precision) = "fp32";  // fp32 | bf16 (CPU autocast for the forward passes)
  TORCH_ARG(data::AugmentOptions, augment);   // views of the rows (kd/data/augment.h); default none
  TORCH_ARG(int64_t, patience) = 0;            // stop after this many epochs without improvement; 0 = off
  TORCH_ARG(std::string, selection_metric) = "";  // "" = accuracy (classification) or rmse (regression)
  TORCH_ARG(bool, keep_best) = true;  // end on the best epoch's state; false: the last epoch's (a stage before the last)
  TORCH_ARG(std::optional<Target>, target) = std::nullopt;
  TORCH_ARG(double, teacher_target_value) = 0.0;  // the teacher's value of the target's metric
  TORCH_ARG(std::string, checkpoint) = "";     // file for per-epoch checkpoints ("" = none)
  TORCH_ARG(bool, resume) = false;             // continue from `checkpoint` when it exists
  TORCH_ARG(uint64_t, seed) = 0;
  // Data-parallel training over a group of processes (null or a group of one: this process alone).
  // Each rank trains on its rows of every global batch (Batcher shards), the gradients of the global
  // batch's mean loss are summed over the ranks in one all-reduce a step, and every rank steps the same
  // optimizer with them: the ranks stay equal, and equal to one process with the same batch. Batch
  // norm's statistics are per rank in a step; its running statistics are averaged after each epoch.
  // Terms that are not a mean over rows (ce over the labelled rows only, rkd, correlation, dist) see
  // each rank's rows. Rank 0 alone writes checkpoints; every rank resumes from them.
  TORCH_ARG(std::shared_ptr<dist::Group>, group) = nullptr;
  // Where the model (and a live teacher) train: rows, teacher outputs and the loss's own parameters are
  // moved there a batch at a time; the model is back on the CPU when fit returns. Augmentation runs on
  // the CPU before the move.
  TORCH_ARG(torch::Device, device) = torch::kCPU;
};

void validate(const TrainOptions& options, const std::string& field);

// Epochs and batch size for `rows` training rows where the options leave them at 0:
//   batch_size = the power of two nearest below rows / 8, within [8, 128]  (128 from 1,024 rows on)
//   epochs     = enough for 1,500 optimizer steps, at least 10 and at most 1,000
//   lr         = Adam/AdamW: 1e-3 x sqrt(10,000 / rows), within [1e-3, 1e-2]; SGD: 0.05
//                (a 4-unit student on wine's 128 rows: 1 of 3 seeds short of its best at 1e-3, none at 1e-2)
// On Fashion-MNIST's 54,000 rows that is 10 epochs of 128; on wine's 128 training rows 188 epochs
// of 16, where 10 epochs of 128 were 10 steps: a small student ended at chance.
TrainOptions sized_for_rows(TrainOptions options, int64_t rows);

// Training rows and what the teacher said of them: `teacher`, its outputs on the rows as they are
// (no per-row augmentation; with `teacher_taps`, its features there too), or `bank`, its outputs on V augmented views of each row (epoch e
// trains on view e mod V), or neither (no teacher, or a live one); epoch e trains on view e.
struct TrainData {
  torch::Tensor x;          // float32 [N, ...]
  torch::Tensor y;          // labels; rows without a label hold any value
  torch::Tensor has_label;  // bool [N] or undefined (all labeled)
  torch::Tensor teacher;    // [N, outputs] or undefined
  std::vector<bool> categorical{};  // tables: per feature, a category's encoding (kd::data::DataFold::categorical)
  std::shared_ptr<const SoftLabelBank> bank = nullptr;  // or null
  // The teacher's tensors at the taps `teacher_tap_names` on the rows as they are (float16), beside
  // `teacher`; a Distiller's teacher_taps() among them are read from here, else the live teacher runs.
  std::vector<std::string> teacher_tap_names{};
  std::vector<torch::Tensor> teacher_taps{};
  // > 1: `teacher` and `teacher_taps` hold only this rank's rows of a data-parallel group of this many
  // ranks (shard_rows: rank, rank + W, ...), as TrainOptions::group shards every batch.
  int64_t teacher_shards = 1;
  int64_t bank_shards = 1;  // > 1: `bank` holds this rank's rows only, likewise (row r at r / W)
};

// The rows a rank of `count` owns among `rows`: rank, rank + count, ... (int64).
torch::Tensor shard_rows(int64_t rows, int64_t rank, int64_t count);

struct EpochRecord {
  int64_t epoch = 0;           // 1-based
  double train_loss = 0.0;     // mean total loss over the epoch's batches
  std::vector<double> terms;   // mean of each unweighted term, in Distiller::term_names() order
  double lr = 0.0;             // at the epoch's last step
  report::Metrics val;         // from the validate callback
  double seconds = 0.0;        // training time of the epoch, without validation
};

// A divergence the trainer recovered from: the loss, the gradient norm or the parameters stopped being
// finite; training went back to the last good state (before the first epoch, or after the last epoch
// that bettered the validation metric) with a tenth of the learning rate and the optimizer's state
// (momentum, moments) afresh.
struct Divergence {
  int64_t epoch = 0;  // 1-based
  int64_t step = 0;   // 1-based, within the epoch
  std::string what;   // "the loss became nan", ...
  double lr = 0.0;    // the base learning rate before, and after
  double lr_after = 0.0;
};
// {epoch, step, what, lr, lr_after}: as checkpoints and metrics.json hold it.
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Divergence, epoch, step, what, lr, lr_after)

struct TrainResult {
  std::vector<EpochRecord> history;
  std::vector<Divergence> divergences;
  int64_t best_epoch = 0;      // 1-based; the model holds this epoch's state after fit
  double best_value = 0.0;     // selection metric at best_epoch
  bool target_reached = false;
  std::string stop_reason;     // "epochs", "target", "patience", or what a stop_when hook returned
  int64_t steps = 0;
  int64_t loss_params = 0;     // elements of the loss terms' own parameters (a hint's projection)
};

// The training record (history, best epoch, stop reason, steps, divergences) of a fit that ended with
// `checkpoint` as its last: what a reused model (a teacher trained in an earlier, interrupted run)
// reports. Nothing when the file is missing, damaged or from within an epoch.
std::optional<TrainResult> finished_training(const std::string& checkpoint);

// Validation of the model in its current state (the trainer switches train/eval around it).
using ValidateFn = std::function<report::Metrics(models::Model&)>;
// Called after each epoch's validation: "" goes on; any other text stops training with that stop
// reason (the search prunes trials and honours its time budget through it).
using EpochHook = std::function<std::string(const EpochRecord&)>;

class Trainer {
 public:
  Trainer(TrainOptions options, const losses::Distiller& distiller, std::string name);
  // `live_teacher`: when set and data.teacher is undefined, the teacher runs on every batch.
  TrainResult fit(models::Model& model, const TrainData& data, const ValidateFn& validate,
                  models::Model* live_teacher = nullptr);
  Trainer& stop_when(EpochHook hook) {
    stop_when_ = std::move(hook);
    return *this;
  }

 private:
  TrainOptions options_;
  const losses::Distiller& distiller_;
  std::string name_;
  EpochHook stop_when_;
};

// The tensors of `model` at `taps` on `x` (eval mode, no gradients, in batches of `batch_size`),
// each stored [N, ...] float16: the cached features feature terms read. Beyond `storage`'s
// memory_limit (all taps together) they live in memory-mapped files in its spill_dir (`mapped`).
std::vector<torch::Tensor> predict_taps(models::Model& model, const torch::Tensor& x, const std::vector<std::string>& taps,
                                        int64_t batch_size = 256, const BankStorage& storage = {},
                                        bool* mapped = nullptr);

// Outputs of `model` on `x` in eval mode without gradients, in batches (256: a CNN teacher's activations
// at 1024 rows outgrow the caches and ran 4x slower per row on Fashion-MNIST).
torch::Tensor predict(models::Model& model, const torch::Tensor& x, int64_t batch_size = 256);

// predict's batch for `model` over a whole split: 1024 rows for networks whose MACs per example are
// at most 4x their parameters (dense layers, each weight used about once per row: their products
// ran at 320 against 250 GFLOP/s with 1024 rows instead of 256), else 256 (convolutions, whose
// activations per row are large).
int64_t inference_batch_size(models::Model& model, const std::vector<int64_t>& input_shape);

// The augmenter fit trains with: fitted on data.x, seeded with options.seed(). A soft-label bank for
// the same options and rows must be computed with this one, so that the views match.
data::Augmenter augmenter_for(const TrainOptions& options, const TrainData& data);

}  // namespace kd::train
