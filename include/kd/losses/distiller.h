// The distillation objective: a weighted sum of loss terms (recipe `distill.losses`).
//
//   total = sum_i weight_i * term_i(student, teacher, labels)
//
// Built once from the recipe's list; compute() returns the total (for backward) and each
// unweighted term, detached, for logs. Shapes as in kd/losses/loss_term.h.
//
// A list of kl and ce terms only (the classic objective) on CPU float32/float64 logits is computed in
// one pass over the rows, as one autograd node, instead of each term's ~25 tensor ops each way: the
// same values and gradient (tests/losses/distiller_test.cpp), a small student's step 3-4x faster.
// Any other kind, or inputs of another device or type, take the terms' own compute(). That node's
// gradient is computed with the value, so it is not itself differentiable (no create_graph).
//
// Feature terms (kd/losses/feature_term.h) read tensors at named taps: student_taps() and
// teacher_taps() list them, each once (the outputs, models::kOutputTap, are not among them: a term
// on "output" reads LossInputs::student / teacher). The caller computes them into
// LossInputs::student_taps / teacher_taps in that order, and the terms' own parameters (a hint's
// projection) with make_parameters() into LossInputs::parameters; compute() hands each term its pair.
//
// Example:
//   kd::losses::Distiller distiller({kd::losses::LossTermOptions("kl").weight(0.9).temperature(4),
//                                    kd::losses::LossTermOptions("ce").weight(0.1)},
//                                   kd::Task::classification);
//   auto values = distiller.compute({logits, teacher_logits, labels});  values.total.backward();
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kd/data/task.h"
#include "kd/losses/loss_term.h"

namespace kd::losses {

struct LossValues {
  torch::Tensor total;               // 0-dim, carries the graph
  std::vector<torch::Tensor> terms;  // unweighted, detached, in the order of term_names()
};

class Distiller {
 public:
  // kd::Error naming the entry (`losses[1].temperature: found -1, expected > 0`) when an entry is
  // invalid, the list is empty, all weights are 0, or a kind does not fit `task`.
  Distiller(std::vector<LossTermOptions> terms, Task task);

  LossValues compute(const LossInputs& inputs) const;

  // Whether any term is a feature term (reads taps or has parameters of its own).
  bool reads_features() const;
  const std::vector<std::string>& student_taps() const { return student_taps_; }
  const std::vector<std::string>& teacher_taps() const { return teacher_taps_; }
  // Every term's own parameters, freshly initialised from `seed`, named "losses[i].NAME", for taps of
  // these shapes (no batch dim; in student_taps() / teacher_taps() order, then the outputs' shape
  // last in each). kd::Error naming the term when the shapes do not suit it.
  models::NamedTensors make_parameters(const std::vector<std::vector<int64_t>>& student_shapes,
                                       const std::vector<std::vector<int64_t>>& teacher_shapes, uint64_t seed) const;

  // One label per term for logs: the kind, or "kind_i" when a kind appears more than once.
  const std::vector<std::string>& term_names() const { return names_; }
  const std::vector<LossTermOptions>& options() const { return options_; }
  // Whether any term reads the teacher / the labels (e.g. a baseline has no teacher). Terms of
  // weight 0 are still computed, for the logs, so they count.
  bool needs_teacher() const;
  bool needs_labels() const;
  Task task() const { return task_; }

 private:
  std::vector<LossTermOptions> options_;
  std::vector<std::unique_ptr<LossTerm>> terms_;
  std::vector<std::string> names_;
  std::vector<std::string> student_taps_, teacher_taps_;
  Task task_;
};

}  // namespace kd::losses
