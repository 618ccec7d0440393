// The data stage of the flow: the recipe's data section in, ready tensors out.
//
// Files (IDX, CSV, NPY/NPZ, image folders) are read once; train and test rows are
// pooled so that labels and categories map the same way in both; the test rows are
// held out (a file, or a stratified fraction); the rest is split into train/val
// (holdout) or K folds. Everything fitted -- category vocabularies, imputation,
// normalisation -- is fitted on each fold's training rows only, and kept as
// `preprocessing` JSON with every model so that inference applies the same transform.
//
//   Dataset d = load_dataset(DataSpec().task(Task::classification).train({...}));
//   d.folds[0].train.x  float32 [N, 1, 28, 28];  d.folds[0].train.y  int64 [N]
#pragma once

#include <nlohmann/json.hpp>
#include <torch/arg.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "kd/data/csv.h"
#include "kd/data/image_folder.h"
#include "kd/data/normalize.h"
#include "kd/data/tabular.h"
#include "kd/data/text.h"
#include "kd/data/task.h"

namespace kd::data {

// One split's files. `path` is a single file or folder (CSV, NPZ with arrays x and y,
// image folder); `inputs` and `labels` are a pair (IDX or NPY; for CSV, `labels` is an
// optional separate target file). Or arrays in memory (format "arrays": the library and the
// Python module): `x` [N, ...] and `y` [N] or [N, K], read as the same arrays from .npy files
// would be (uint8 pixels stay pixels), and not copied until a fold is made.
struct DataFiles {
  std::string path;
  std::string inputs;
  std::string labels;
  torch::Tensor x{};
  torch::Tensor y{};
  bool empty() const { return path.empty() && inputs.empty() && !x.defined(); }
};

struct DataSpec {
  TORCH_ARG(Task, task) = Task::classification;
  TORCH_ARG(std::string, format) = "";  // idx | csv | npy | npz | images | text | arrays; "" = from the file names
  TORCH_ARG(DataFiles, train);
  TORCH_ARG(DataFiles, test);           // empty: test_fraction of the training file is held out
  TORCH_ARG(std::string, transfer) = "";  // unlabeled inputs for distillation (same format as train inputs;
                                          // text: a plain text file, one example a line)
  TORCH_ARG(double, test_fraction) = 0.2;
  TORCH_ARG(double, val_fraction) = 0.1;
  TORCH_ARG(int64_t, folds) = 0;          // >= 2: K-fold instead of one train/val split
  TORCH_ARG(int64_t, labeled) = 0;        // > 0: the students see only this many training labels
  TORCH_ARG(int64_t, train_limit) = 0;    // > 0: a seeded stratified subset of the training pool
  TORCH_ARG(int64_t, test_limit) = 0;     // > 0: likewise for the test rows
  TORCH_ARG(NormalizeOptions, normalize);
  TORCH_ARG(bool, normalize_target) = true;  // regression: standardise targets (metrics stay in their units)
  TORCH_ARG(CsvOptions, csv);
  TORCH_ARG(TabularOptions, tabular);
  TORCH_ARG(ImageFolderOptions, images);
  TORCH_ARG(TextOptions, text);
  TORCH_ARG(uint64_t, seed) = 0;
  // > 0: load_dataset refuses, before reading, a data set it estimates (estimate_memory) to need more
  // bytes than this in memory; the CLI's --max-memory, by default 80 % of the machine's or cgroup's.
  TORCH_ARG(int64_t, max_memory) = 0;
};

struct Examples {
  torch::Tensor x;  // float32 [N, ...input_shape], preprocessed
  torch::Tensor y;  // int64 [N] classes, or float32 [N, K] (normalised when normalize_target)
  int64_t size() const { return x.defined() ? x.size(0) : 0; }
};

// One train/val partition with everything fitted on its training rows.
struct DataFold {
  Examples train;
  Examples val;
  Examples test;
  torch::Tensor labeled;     // bool [train rows]: rows whose labels the students may use
  torch::Tensor transfer_x;  // float32 [M, ...]: extra unlabeled inputs (may be undefined)
  Normalizer target_normalizer;  // regression targets; identity for classification
  nlohmann::json preprocessing;  // everything needed to turn raw inputs into model inputs
  // Tables: per feature, whether it encodes a category (one-hot or index column); empty otherwise.
  std::vector<bool> categorical;
};

// What text models need to know of the token ids (data.format: text); vocab 0 for other data.
struct TextInfo {
  int64_t vocab = 0;       // ids are in [0, vocab): the largest of the folds' tokenizers
  int64_t pad_id = 0;
  int64_t max_length = 0;  // ids per text
  std::string tokenizer;   // wordpiece | sentencepiece
};

struct Dataset {
  Task task = Task::classification;
  std::vector<int64_t> input_shape;  // one example, e.g. {1, 28, 28} or {30}
  int64_t outputs = 0;               // classes, or regression targets
  std::vector<std::string> class_names;
  std::vector<std::string> feature_names;  // tabular only
  TextInfo text;                           // text only
  std::vector<DataFold> folds;             // one for holdout, K for K-fold
  std::string source;                      // what was read, for the report

  // A few lines for the terminal: sizes, classes and their counts, splits.
  std::string summary() const;
};

Dataset load_dataset(const DataSpec& spec);

// The bytes load_dataset will take in memory, from the files' headers and sizes before reading them:
// the arrays as read, then a float32 copy of every row in each fold. `what`, when given, says what the
// figure is made of. kd::Error for a file that cannot be read.
int64_t estimate_memory(const DataSpec& spec, std::string* what = nullptr);
// kd::Error, with the figure and what it is made of, when estimate_memory is over spec.max_memory()
// (> 0); load_dataset checks it first, and a run before it writes anything.
void check_memory(const DataSpec& spec);

// Model inputs from stored ones: uint8 pixels become float32 in [0, 1], anything else float32 (the
// same tensor when it is float32 already).
torch::Tensor float_inputs(const torch::Tensor& x);

}  // namespace kd::data
