// A loaded teacher fed the way it was trained. The run's inputs are normalised with the run's own
// preprocessing; a teacher file may expect raw inputs (an export with the normalisation folded in,
// a user's model trained on the data as read) or another normalisation (a .kdm from another run).
// The adapter undoes the run's normalisation, applies the teacher's, and maps regression outputs
// from the teacher's target units to the run's.
//
//   input  "auto":        the file's own preprocessing when it carries kdistill's metadata, else "normalized"
//          "raw":         the data as read (pixels in [0, 1], CSV columns after encoding; regression
//                         outputs in the targets' own units)
//          "normalized":  the run's normalisation (the teacher was trained on the same one)
//
// Classification outputs: "logits", "probabilities" (a Keras-style softmax head: their logarithms,
// which give back the same softmax, become the logits), or "auto": probabilities when every row of
// the teacher's outputs on `sample` (up to 64 training rows) is in [0, 1] and sums to 1.
//
//   AdaptedTeacher t = adapt_teacher(loaded, fold.preprocessing, Task::regression,
//                                    TeacherInputOptions().input("auto"), fold.train.x);
//   t.model->forward(fold.train.x)   // -> outputs in the run's (standardised) target units
#pragma once

#include <nlohmann/json.hpp>
#include <torch/arg.h>

#include <string>

#include "kd/data/task.h"
#include "kd/io/model_file.h"
#include "kd/models/model.h"

namespace kd::train {

struct AdaptedTeacher {
  models::ModelPtr model;   // the loaded model itself when nothing needs adapting
  std::string description;  // for the log, e.g. "raw inputs (its metadata: normalisation folded in)"
};

struct TeacherInputOptions {
  TORCH_ARG(std::string, input) = "auto";    // auto | raw | normalized
  TORCH_ARG(std::string, outputs) = "auto";  // auto | logits | probabilities (classification)
};

// kd::Error naming teacher.input or teacher.outputs when a word is not one of the above.
AdaptedTeacher adapt_teacher(const io::LoadedModel& loaded, const nlohmann::json& run_preprocessing, Task task,
                             const TeacherInputOptions& options, const torch::Tensor& sample);

// Checks the options' words; kd::Error naming the recipe field otherwise.
void validate(const TeacherInputOptions& options);

}  // namespace kd::train
