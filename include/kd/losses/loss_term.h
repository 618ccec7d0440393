// One distillation loss term: what it reads (LossInputs), how it is configured
// (LossTermOptions, the recipe's `distill.losses[i]` keys) and the interface every
// kind implements. Kinds are listed in kd/losses/registry.h; docs/losses.md has the formulas.
//
// Shapes: N examples, C classes (classification) or K outputs (regression).
//   student   [N, C] logits or [N, K] predictions, float32 or float64, requires grad
//   teacher   same shape as student, no grad; undefined when the batch has no teacher outputs
//   labels    int64 [N] class indices (classification) or float [N] / [N, K] targets (regression)
//   has_label bool [N], false where the example has no label (transfer set); undefined = all labelled
// Every term returns an unweighted scalar (0-dim tensor) of the student's dtype.
//
// Example:
//   auto term = kd::losses::make_loss_term(kd::losses::LossTermOptions("kl").temperature(4));
//   torch::Tensor loss = term->compute({student_logits, teacher_logits});
#pragma once

#include <torch/arg.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "kd/data/task.h"

namespace kd::losses {

// Brace-initialise the leading fields: {student, teacher} or {student, teacher, labels}.
struct LossInputs {
  torch::Tensor student{};
  torch::Tensor teacher{};
  torch::Tensor labels{};
  torch::Tensor has_label{};
};

struct LossTermOptions {
  LossTermOptions() = default;
  /* implicit */ LossTermOptions(std::string kind) : kind_(std::move(kind)) {}

  // Name of the term: see kd::losses::loss_term_kinds().
  TORCH_ARG(std::string, kind);
  // Multiplies the term in the total; >= 0.
  TORCH_ARG(double, weight) = 1.0;
  // Softmax temperature T of the soft-target terms (kl, reverse_kl, js, dkd); > 0.
  TORCH_ARG(double, temperature) = 1.0;
  // Cross-entropy label smoothing (ce), in [0, 1).
  TORCH_ARG(double, label_smoothing) = 0.0;
  // Huber threshold (huber), > 0.
  TORCH_ARG(double, delta) = 1.0;
  // What mse / huber compare the student with: "teacher" or "labels" (regression).
  TORCH_ARG(std::string, target) = "teacher";
  // Decoupled KD weights: alpha * TCKD + beta * NCKD (dkd), >= 0.
  TORCH_ARG(double, alpha) = 1.0;
  TORCH_ARG(double, beta) = 8.0;
};

class LossTerm {
 public:
  explicit LossTerm(LossTermOptions options) : options_(std::move(options)) {}
  virtual ~LossTerm() = default;

  // The unweighted term, a 0-dim tensor; throws kd::Error when an input it needs is absent
  // or shapes disagree.
  virtual torch::Tensor compute(const LossInputs& inputs) const = 0;

  // Label for logs, e.g. "kl".
  virtual std::string name() const { return options_.kind(); }
  // Whether compute() reads the teacher / the labels with the current options.
  virtual bool uses_teacher() const = 0;
  virtual bool uses_labels() const = 0;
  virtual bool supports(Task task) const = 0;
  // The option keys (besides kind and weight) this kind reads; setting any other key away
  // from its default is refused, so that `{kind: ce, temperature: 4}` does not pass silently.
  virtual std::vector<std::string> option_keys() const = 0;

  const LossTermOptions& options() const { return options_; }

 protected:
  LossTermOptions options_;
};

}  // namespace kd::losses
