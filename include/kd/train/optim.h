// Optimisers and learning-rate schedules, as options structs the recipe fills.
//
//   auto optimizer = make_optimizer(model.parameters(), OptimizerOptions().name("sgd").lr(0.05));
//   LrSchedule schedule(ScheduleOptions().name("onecycle"), 0.05, total_steps);
//   schedule.apply(*optimizer, step);   // before each step
#pragma once

#include <torch/arg.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace kd::train {

struct OptimizerOptions {
  TORCH_ARG(std::string, name) = "adam";  // sgd | adam | adamw
  TORCH_ARG(double, lr) = 0.0;            // 0: sized to the rows by the trainer (train::sized_for_rows)
  TORCH_ARG(double, momentum) = 0.9;      // sgd
  TORCH_ARG(bool, nesterov) = false;      // sgd
  TORCH_ARG(double, weight_decay) = 0.0;  // sgd, adam: L2 in the gradient; adamw: decoupled
  TORCH_ARG(double, beta1) = 0.9;         // adam, adamw
  TORCH_ARG(double, beta2) = 0.999;
};

struct ScheduleOptions {
  // none | cosine | onecycle | step | linear (linear decay to 0)
  TORCH_ARG(std::string, name) = "cosine";
  TORCH_ARG(double, warmup_fraction) = 0.0;  // linear warm-up over this fraction of the steps (any schedule)
  TORCH_ARG(int64_t, step_epochs) = 10;      // step: multiply by gamma every step_epochs epochs
  TORCH_ARG(double, gamma) = 0.1;            // step
  TORCH_ARG(double, onecycle_peak_fraction) = 0.3;  // onecycle: where the peak is
  TORCH_ARG(double, min_lr_fraction) = 0.0;  // cosine/onecycle/linear end at lr * this
};

// kd::Error naming the recipe field (distill.optimizer.name, ...) on a bad value.
void validate(const OptimizerOptions& options, const std::string& field);
void validate(const ScheduleOptions& options, const std::string& field);

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& parameters,
                                                        const OptimizerOptions& options);

class LrSchedule {
 public:
  LrSchedule(ScheduleOptions options, double base_lr, int64_t total_steps, int64_t steps_per_epoch);
  double lr_at(int64_t step) const;
  // Sets every parameter group's learning rate for `step` (and onecycle's momentum for SGD).
  void apply(torch::optim::Optimizer& optimizer, int64_t step) const;

 private:
  ScheduleOptions options_;
  double base_lr_;
  int64_t total_steps_;
  int64_t steps_per_epoch_;
};

}  // namespace kd::train
