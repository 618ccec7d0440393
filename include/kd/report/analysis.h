// The analysis behind the report, from each model's outputs on the test rows:
// per-class scores, confusion matrices, reliability bins, paired tests of the student
// against the baseline and the teacher, and the rows where student and teacher
// disagree most. Pure functions of the outputs, so `kdistill report DIR` recomputes
// exactly what `kdistill run` wrote.
//
// The outputs are kept in the run folder (test_outputs/ of DIR, or of DIR/fold-K with
// K folds) as .npy files, so a report can be re-rendered without retraining:
//   labels.npy   int64 [N] (classification) or float32 [N, K] in the targets' units
//   teacher.npy, baseline.npy, student.npy   float32 [N, C] logits or [N, K] predictions
//
//   auto folds = read_test_outputs("runs/x", 1);
//   add_analysis(metrics, folds);   // metrics.json gains per_class, confusion, comparison, ...
#pragma once

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "kd/data/task.h"

namespace kd::report {

// One fold's test rows: labels and each model's outputs, keyed teacher/baseline/student.
struct TestOutputs {
  torch::Tensor labels;
  std::map<std::string, torch::Tensor> models;
};

// DIR/test_outputs (one fold) or DIR/fold-K/test_outputs.
std::filesystem::path test_outputs_dir(const std::filesystem::path& run_dir, size_t fold, size_t folds);
void write_test_outputs(const std::filesystem::path& dir, const TestOutputs& outputs);
// Every fold's outputs; an empty list when the run folder has none (a run from an older kdistill).
std::vector<TestOutputs> read_test_outputs(const std::filesystem::path& run_dir, size_t folds);

struct AnalysisOptions {
  TORCH_ARG(int64_t, bootstrap_resamples) = 1000;
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(int64_t, disagreements) = 10;  // rows listed
  TORCH_ARG(int64_t, reliability_bins) = 15;
};

// One model's entry from its outputs pooled over folds: per_class, confusion, reliability
// (classification) or residuals (regression), as add_analysis puts under models.X.
nlohmann::json model_analysis(Task task, const std::vector<TestOutputs>& folds, const std::string& name,
                              const AnalysisOptions& options = {});

// Adds to metrics (the metrics.json object; "task" and "models" must be there):
//   models.X.per_class {precision, recall, f1, support}, models.X.confusion [C][C],
//   models.X.reliability {count, confidence, accuracy}      (classification; pooled over folds)
//   models.X.residuals {mean, std, max_abs}                 (regression; pooled over folds)
//   models.X.compression_vs_teacher, models.X.speedup_vs_teacher {batch1, batch256},
//   models.X.throughput_per_s {batch1, batch256}
//   comparison.{student_vs_baseline, student_vs_teacher} = {metric, folds: [{mcnemar, bootstrap}],
//     across_folds: {n, mean_difference, std_difference, t, p_value}}
//   disagreements: [{fold, row, label, teacher, student, ...}], largest first
void add_analysis(nlohmann::json& metrics, const std::vector<TestOutputs>& folds, const AnalysisOptions& options = {});

}  // namespace kd::report
