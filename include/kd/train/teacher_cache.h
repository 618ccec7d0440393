// The TeacherCache of the flow: the teacher of one fold (loaded, reused from an earlier run,
// or trained here) and its outputs on every row it will be asked about, computed once and
// shared by the distilled student, the baseline's validation and every trial of a search.
//
//   TeacherCache cache = prepare_teacher(spec, dataset, 0, "runs/x", false);
//   TrainData data = distill_train_data(dataset.folds[0], cache);  // rows + cached teacher outputs
#pragma once

#include <optional>
#include <string>

#include "kd/data/dataset.h"
#include "kd/io/model_file.h"
#include "kd/models/model.h"
#include "kd/train/pipeline.h"
#include "kd/train/trainer.h"

namespace kd::train {

struct TeacherCache {
  models::ModelPtr model;            // in eval mode
  io::ModelInfo info;
  std::string file;                  // the teacher's file (loaded, or where the trained one was saved)
  std::optional<TrainResult> training;  // when trained in this call
  torch::Tensor train, transfer, val, test;  // outputs per row of the fold's splits (transfer: may be undefined)
  nlohmann::json input;              // a loaded teacher: how it is fed and why (AdaptedTeacher::evidence)
  double teacher_seconds = 0.0;      // loading or training
  double cache_seconds = 0.0;        // computing the outputs
};

// The teacher of dataset.folds[fold]. A trained teacher is saved as `dir`/teacher.kdm with a
// fingerprint beside it and reused by any later call with the same spec.teacher_fingerprint.
// `loaded`: the file spec.teacher.path already loaded (run_distillation loads it while it reads the data);
// teacher_seconds then counts only what is left.
TeacherCache prepare_teacher(const RunSpec& spec, const data::Dataset& dataset, size_t fold, const std::string& dir,
                             bool resume, std::optional<io::LoadedModel> loaded = std::nullopt);

// The distilled student's rows: every training row (labels where allowed) plus the transfer rows,
// with the cached teacher outputs (left undefined when augmentation needs a live teacher).
TrainData distill_train_data(const data::DataFold& fold, const TeacherCache& cache, const TrainOptions& train);

// The folder of fold `fold` in a run folder: `out` itself with one fold, out/fold-K with K folds.
std::string fold_dir(const std::string& out, size_t fold, size_t folds);

// A new student from the spec (zoo spec or trainable TorchScript file), checked against the data.
models::ModelPtr build_student(const StudentSpec& spec, const data::Dataset& dataset);

}  // namespace kd::train
