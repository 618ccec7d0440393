// From a CSV table to tensors: labels, then features encoded with everything fitted on the training rows.
//
// Step 1, label_table(), on the whole table before splitting: resolves the target, drop and categorical
// columns (a name, or an index where negative counts from the end), applies data.missing == "drop", and
// maps the labels. Classification labels may be integers or text: mapped to 0..C-1 (integers in numeric
// order, "1.0" read as 1; text sorted), with the label text of class i kept in class_names.
// Regression targets are float32.
//
// Step 2, TabularEncoder::fit() on the training rows only, then transform() on any table labelled with the
// same feature columns (the training table itself, a test file):
// - a column is numeric when every non-missing cell is a finite number, and categorical when forced
//   (data.categorical) or when no cell is a number; anything in between is an error naming the cell.
//   The kind of a column is decided on every row of the table given to fit(), so that a bad cell anywhere
//   is reported at once; the values (categories, means, modes) come from the training rows only.
// - numeric: the value itself (scaling is a separate step). Categorical, "onehot": one feature per
//   category seen in the training rows, named "column=value", sorted by value; a category not seen there
//   is all zeros. "index": one feature holding the category's position in that sorted list; a category not
//   seen there gets the reserved index C (the number of training categories).
// - missing cells (data.missing_values): "error" fails naming file:line and column, "drop" removed their
//   rows in step 1, "impute" fills the training mean (numeric) or the most frequent training category
//   (categorical; the first in sorted order on a tie). A missing target is never imputed.
//
// Shapes: transform() -> float32 [N, F] with F = feature_names().size(); labels int64 [N] or float32 [N].
// Example:
//   LabeledTable data = label_table(read_csv("adult.csv"), TabularOptions().target("income").drop({"id"}));
//   TabularEncoder encoder = TabularEncoder::fit(data, train_rows, options);
//   torch::Tensor x = encoder.transform(data);  // [N, F]
#pragma once

#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "kd/data/csv.h"
#include "kd/data/task.h"

namespace kd::data {

struct TabularOptions {
  TORCH_ARG(kd::Task, task) = kd::Task::classification;
  // column name or index (negative from the end); "" = last column
  TORCH_ARG(std::string, target) = "";
  // names or indices of columns to leave out
  TORCH_ARG(std::vector<std::string>, drop) = {};
  // force these columns categorical; others auto-detected. Naming the target or a dropped column is allowed
  // and has no effect.
  TORCH_ARG(std::vector<std::string>, categorical) = {};
  // onehot | index
  TORCH_ARG(std::string, categorical_encoding) = "onehot";
  // error | drop | impute (mean for numeric, mode for categorical)
  TORCH_ARG(std::string, missing) = "error";
  TORCH_ARG(std::vector<std::string>, missing_values) = {"",  "NA",   "N/A",  "NaN", "nan",
                                                         "?", "null", "NULL", "None"};
};

struct LabeledTable {
  CsvTable table;                        // rows kept (missing-drop applied); the features' table
  torch::Tensor labels;                  // int64 [N] (classification) or float32 [N] (regression)
  std::vector<std::string> class_names;  // classification: label text for class i
  std::vector<size_t> feature_columns;   // column indices of `table` used as features, in order
  std::string target_column;             // the target's column name (in its own file for the two-file form)
};

// Labels the table by its own target column. With `known_classes` (the class_names of the training
// table), labels are mapped to those classes and a label outside them is an error: use it for a separate
// test file so that class i means the same thing in both.
LabeledTable label_table(CsvTable table, const TabularOptions& options,
                         const std::vector<std::string>& known_classes = {});

// Labels from a separate file with the same number of rows (diabetes_data_raw.csv.gz +
// diabetes_target.csv.gz): options.target selects the column of `targets` ("" = its last column);
// options.drop and options.categorical refer to the columns of `features`, all of which are features.
LabeledTable label_table(CsvTable features, const CsvTable& targets, const TabularOptions& options,
                         const std::vector<std::string>& known_classes = {});

class TabularEncoder {
 public:
  // train_rows: row indices of data.table (0 .. num_rows() - 1).
  static TabularEncoder fit(const LabeledTable& data, const std::vector<int64_t>& train_rows,
                            const TabularOptions& options);
  torch::Tensor transform(const LabeledTable& data) const;  // float32 [N, F]
  std::vector<std::string> feature_names() const;           // after one-hot expansion: "color=red", ...
  std::vector<bool> categorical_features() const;            // per feature name: part of a category's encoding
  const std::vector<std::string>& class_names() const { return class_names_; }
  kd::Task task() const { return task_; }

  // Stored with models, so that a prediction encodes its input as training did.
  nlohmann::json to_json() const;
  static TabularEncoder from_json(const nlohmann::json& json);

 private:
  struct Column {
    std::string name;
    bool categorical = false;
    double mean = 0.0;                    // numeric: training mean, for imputation
    std::vector<std::string> categories;  // categorical: training categories, sorted
    std::string mode;                     // categorical: most frequent training category
  };

  std::vector<Column> columns_;
  std::string categorical_encoding_ = "onehot";
  std::string missing_ = "error";
  std::vector<std::string> missing_values_;
  kd::Task task_ = kd::Task::classification;
  std::string target_column_;
  std::vector<std::string> class_names_;
};

}  // namespace kd::data
