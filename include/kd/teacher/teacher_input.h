// A loaded teacher fed the way it was trained. The run's inputs are normalised with the run's own
// preprocessing; a teacher file may expect raw inputs (an export with the normalisation folded in,
// a user's model trained on the data as read) or another normalisation (a .kdm from another run).
// The adapter undoes the run's normalisation, applies the teacher's, and maps regression outputs
// from the teacher's target units to the run's.
//
//   input  "auto":        the file's own preprocessing when it carries kdistill's metadata; for a file
//                         from another tool, "raw" or "normalized", whichever scores better on up to
//                         kInputSampleRows labelled rows (lower NLL; regression: lower MSE), both
//                         scores kept in AdaptedTeacher::evidence; "normalized" when there are no labels
//          "raw":         the data as read (pixels in [0, 1], CSV columns after encoding; regression
//                         outputs in the targets' own units)
//          "normalized":  the run's normalisation (the teacher was trained on the same one)
//
// Classification outputs: "logits", "probabilities" (a Keras-style softmax head: their logarithms,
// which give back the same softmax, become the logits), or "auto": probabilities when every row of
// the teacher's outputs on up to 64 sample rows is in [0, 1] and sums to 1.
//
//   AdaptedTeacher t = adapt_teacher(loaded, fold.preprocessing, Task::regression,
//                                    TeacherInputOptions().input("auto"), fold.train.x, fold.train.y);
//   t.model->forward(fold.train.x)   // -> outputs in the run's (standardised) target units
#pragma once

#include <nlohmann/json.hpp>
#include <torch/arg.h>

#include <string>

#include "kd/data/dataset.h"
#include "kd/data/task.h"
#include "kd/io/model_file.h"
#include "kd/models/model.h"

namespace kd::teacher {

struct AdaptedTeacher {
  models::ModelPtr model;   // the loaded model itself when nothing needs adapting
  std::string description;  // for the log, e.g. "raw inputs (its metadata: normalisation folded in)"
  // For metrics.json: {"setting", "fed" (raw | normalized | its own normalisation), "outputs", "why"}, and
  // with input auto on a file from another tool "sample_rows" and both forms' "sample_accuracy" and
  // "sample_nll" (regression: "sample_mse").
  nlohmann::json evidence;
};

// Rows of the labelled sample on which input "auto" compares the two forms.
constexpr int64_t kInputSampleRows = 1000;

struct TeacherInputOptions {
  TORCH_ARG(std::string, input) = "auto";    // auto | raw | normalized
  TORCH_ARG(std::string, outputs) = "auto";  // auto | logits | probabilities (classification)
  // Classification with a teacher of other classes: for each class of the run, the teacher's outputs
  // that make it (their probabilities summed: logsumexp of their logits); empty: the same classes.
  TORCH_ARG(std::vector<std::vector<int64_t>>, class_groups) = {};
  TORCH_ARG(int64_t, teacher_classes) = 0;   // the teacher's own number of outputs, with class_groups
  // > 0: the run's classes (this many) are a projection of the teacher's log-probabilities learned on the
  // labelled sample (a multinomial logistic regression); evidence "class_projection" says how well it fits.
  TORCH_ARG(int64_t, learned_classes) = 0;
};

// kd::Error naming teacher.input or teacher.outputs when a word is not one of the above.
AdaptedTeacher adapt_teacher(const io::LoadedModel& loaded, const nlohmann::json& run_preprocessing, Task task,
                             const TeacherInputOptions& options, const torch::Tensor& sample_x,
                             const torch::Tensor& sample_y = torch::Tensor());

// adapt_teacher for a fold: its preprocessing, and up to kInputSampleRows of its labelled training rows
// (spread evenly over the split) as the sample. `run` and `eval` feed every loaded model through this.
AdaptedTeacher adapt_to_fold(const io::LoadedModel& loaded, const data::DataFold& fold, Task task,
                             const TeacherInputOptions& options);

// The indices of up to `rows` labelled training rows of `fold`, spread evenly over the split.
torch::Tensor labelled_sample(const data::DataFold& fold, int64_t rows);

// Whether every row of `outputs` [N, classes >= 2] is a probability distribution (in [0, 1], sums to 1
// within 1e-3): the outputs of a model that ends in a softmax.
bool looks_like_probabilities(const torch::Tensor& outputs);

// Checks the options' words; kd::Error naming the recipe field otherwise.
void validate(const TeacherInputOptions& options);

}  // namespace kd::teacher
