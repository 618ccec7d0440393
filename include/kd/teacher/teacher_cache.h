// The teacher stage of the flow: the teacher of one fold (loaded from a file and fed the way it
// was trained, reused from an earlier run, or trained here) and its outputs on every row it will be
// asked about, computed once and shared by the distilled student, the baseline's validation and
// every trial of a search.
//
//   TeacherCache cache = prepare_teacher(spec.teacher, TeacherRun{}.seed(0), dataset, 0, "runs/x");
//   TrainData data = distill_train_data(dataset.folds[0], cache, options);  // rows + cached teacher outputs
#pragma once

#include <torch/arg.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kd/data/dataset.h"
#include "kd/io/model_file.h"
#include "kd/models/ensemble.h"
#include "kd/models/model.h"
#include "kd/models/zoo.h"
#include "kd/teacher/teacher_input.h"
#include "kd/train/trainer.h"

namespace kd::teacher {

// Labelled training rows on which combine: correctness measures each member's precision per class.
constexpr int64_t kCorrectnessRows = 5000;

struct TeacherSpec {
  std::vector<std::string> paths;          // a model file (.kdm, .pt, .onnx, model.json), or several: an
                                           // ensemble, its outputs combined as `combine` says; or
  std::optional<models::ZooSpec> model;    // a zoo spec that kdistill trains
  std::string output;                      // logits of a multi-output model: index or dict key
  TeacherInputOptions adapt;               // what a loaded teacher is fed and returns (teacher_input.h)
  // A loaded classifier of other classes: for each class of the data, the teacher's outputs (index
  // "3" or class name) whose probabilities make it; empty: the same classes, or mapped by name when
  // the teacher's file names more classes than the data has and all of the data's among them.
  std::vector<std::vector<std::string>> classes;
  bool learned_classes = false;            // teacher.classes: learned (teacher_input.h: learned_classes)
  models::EnsembleCombine combine = models::EnsembleCombine::probabilities;
  std::vector<double> weights;             // an ensemble's weight per member (empty: equal)
  int64_t members = 1;                     // with `model`: train this many (member k with seed + k) as an ensemble
  train::TrainOptions train;               // when trained here
};

// What a call of prepare_teacher belongs to.
struct TeacherRun {
  TORCH_ARG(uint64_t, seed) = 0;           // the training seed of a teacher trained here
  TORCH_ARG(std::string, fingerprint) = "";  // the teacher part of the recipe and the data: a saved teacher is
                                             // reused when its fingerprint file holds the same text
  TORCH_ARG(bool, resume) = false;         // resume the teacher's training from its checkpoint
  // Data-parallel training of a teacher trained here (train::TrainOptions::group); rank 0 alone saves it.
  TORCH_ARG(std::shared_ptr<dist::Group>, group) = nullptr;
  // With a group: each rank caches the outputs of its own training rows only (TeacherCache::train_shards);
  // false: every rank the whole cache (a search, whose trials each run in one process).
  TORCH_ARG(bool, shard_cache) = true;
  // Where a teacher trained here trains and where the teacher computes its outputs (train::TrainOptions::device).
  TORCH_ARG(torch::Device, device) = torch::kCPU;
};

struct TeacherCache {
  models::ModelPtr model;            // in eval mode
  io::ModelInfo info;
  std::string file;                  // the teacher's file (loaded, or where the trained one was saved)
  std::vector<std::string> member_files;  // an ensemble: each member's file (`file` is the first)
  std::optional<train::TrainResult> training;  // when trained in this call
  torch::Tensor train, transfer, val, test;  // outputs per row of the fold's splits (transfer: may be undefined)
  // With a data-parallel group (TeacherRun::group) of W ranks, `train` holds only this rank's rows of
  // the training rows followed by the transfer rows (row % W == rank, in order; train::TrainData's
  // teacher_shards) and `transfer` is undefined: no rank computes or keeps the whole cache.
  int64_t train_shards = 1, train_shard = 0;  // W, and this rank
  nlohmann::json input;              // a loaded teacher: how it is fed and why (AdaptedTeacher::evidence)
  nlohmann::json combine;            // combine: correctness: {"rows", "precision": [member][class]}
  double teacher_seconds = 0.0;      // loading or training
  double cache_seconds = 0.0;        // computing the outputs
};

// The teacher of dataset.folds[fold]. A trained teacher is saved as `dir`/teacher.kdm with a
// fingerprint beside it and reused by any later call with the same run.fingerprint(); the other
// members of a trained ensemble as teacher-2.kdm, teacher-3.kdm, ...
TeacherCache prepare_teacher(const TeacherSpec& spec, const TeacherRun& run, const data::Dataset& dataset, size_t fold,
                             const std::string& dir);

// How the distilled student is taught (metrics.json distill.teaching).
//   cache:  the teacher's outputs on the rows as they are (no augmentation), computed once;
//   bank:   a soft-label bank of `views` augmented views per row (train::SoftLabelBank), computed
//           once: epoch e trains on view e mod views (FKD, Shen & Xing 2022: consistent teaching at
//           the cost of `views` teacher passes);
//   online: the teacher runs on every augmented batch (mixup and cutmix, or views: online).
struct Teaching {
  std::string mode = "cache";
  int64_t views = 0;
  int64_t bytes = 0;         // of the cached outputs or the bank
  double seconds = 0.0;      // teacher passes for the bank
  int64_t top_k = 0;         // bank: logits kept per view (0: all)
  bool mapped = false;       // bank: in a memory-mapped file (larger than BankStorage::memory_limit)
  double max_error = 0;      // bank: its largest storage error (SoftLabelBank::max_error)
  double rest_mass = 0;      // top-k bank: the mean probability outside the kept logits
  int64_t taps_bytes = 0;    // cache: the teacher's features at the feature terms' taps (float16)
  double taps_seconds = 0.0;  // the teacher pass that computed them
  bool taps_mapped = false;   // beyond distill.bank.memory_mb: in memory-mapped files
  nlohmann::json to_json() const;
};

// The distilled student's rows: every training row (labels where allowed) plus the transfer rows,
// with what teaches them: the cached outputs without augmentation; with per-row augmentation a
// bank of `views` views stored as `storage` says (views > 0), or nothing for a live teacher
// (views < 0: feature terms read its taps; views == 0 with augmentation; mixing). `shared`: a bank computed earlier for the same rows, options and views,
// used instead of a new one (the search's trials share one).
// `teacher_taps` (losses::Distiller::teacher_taps()): with cached outputs, the teacher's tensors there
// are cached too (TrainData::teacher_taps, float16; Teaching::taps_bytes); with a live teacher nothing.
train::TrainData distill_train_data(const data::DataFold& fold, const TeacherCache& cache,
                                    const train::TrainOptions& options, int64_t views, Teaching& teaching,
                                    const train::BankStorage& storage = {},
                                    std::shared_ptr<const train::SoftLabelBank> shared = nullptr,
                                    const std::vector<std::string>& teacher_taps = {});

// The teacher's outputs on views 0 .. views - 1 of every row of `x`, as `augmenter` draws them; with
// `shards` > 1, of the rows shard `shard` owns only (train::shard_rows), stored in that order.
std::shared_ptr<train::SoftLabelBank> soft_label_bank(models::Model& teacher, const torch::Tensor& x,
                                                      const data::Augmenter& augmenter, int64_t views,
                                                      int64_t batch_size, const train::BankStorage& storage,
                                                      int64_t shard = 0, int64_t shards = 1);

}  // namespace kd::teacher
