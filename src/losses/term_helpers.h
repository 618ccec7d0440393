// Input checks and numerics shared by the loss terms (private to src/losses).
#pragma once

#include <torch/torch.h>

#include <string>

#include "kd/losses/loss_term.h"

namespace kd::losses::detail {

// The student, checked: a defined floating tensor [N, C] with N >= 1.
const torch::Tensor& student_of(const LossInputs& inputs, const std::string& kind);
// The teacher, detached, in the student's dtype; kd::Error when absent or of another shape.
torch::Tensor teacher_of(const LossInputs& inputs, const std::string& kind);

// Indices (int64 [M]) of the labelled rows; kd::Error when the batch has no labels.
torch::Tensor labelled_rows(const LossInputs& inputs, const std::string& kind);
// Class labels of `rows`, checked against the student's C classes.
torch::Tensor class_labels(const LossInputs& inputs, const torch::Tensor& rows, const std::string& kind);
// Regression labels of `rows`, shaped like student.index_select(0, rows), in the student's dtype.
torch::Tensor regression_labels(const LossInputs& inputs, const torch::Tensor& rows, const std::string& kind);

// sum_c p * (log_p - log_q) per row, p = exp(log_p), with 0 where p = 0 (no 0 * inf = NaN, in the
// value or the gradient).
torch::Tensor kl_per_row(const torch::Tensor& log_p, const torch::Tensor& log_q);

// A zero that keeps the student in the graph, so backward() works when no row counts.
torch::Tensor zero_like_loss(const torch::Tensor& student);

}  // namespace kd::losses::detail
