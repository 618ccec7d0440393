#include "kd/train/optim.h"

#include <cmath>

#include "kd/train/fused_optim.h"
#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::train {

namespace {

void require_one_of(const std::string& value, const std::vector<std::string>& allowed, const std::string& field) {
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return;
  auto suggestion = nearest(value, allowed);
  fail("{}: {} is not one of {}{}", field, quote(value), join(allowed, ", "),
       suggestion ? " (did you mean " + *suggestion + "?)" : "");
}

}  // namespace

void validate(const OptimizerOptions& options, const std::string& field) {
  require_one_of(options.name(), {"sgd", "adam", "adamw"}, field + ".name");
  if (!(options.lr() >= 0.0) || !std::isfinite(options.lr())) fail("{}.lr: {} is not a positive number", field, options.lr());
  if (options.momentum() < 0.0 || options.momentum() >= 1.0) fail("{}.momentum: {} is outside [0, 1)", field, options.momentum());
  if (options.weight_decay() < 0.0) fail("{}.weight_decay: {} is negative", field, options.weight_decay());
  if (options.nesterov() && options.momentum() == 0.0) fail("{}.nesterov: needs momentum > 0", field);
}

void validate(const ScheduleOptions& options, const std::string& field) {
  require_one_of(options.name(), {"none", "cosine", "onecycle", "step", "linear"}, field + ".name");
  if (options.warmup_fraction() < 0.0 || options.warmup_fraction() >= 1.0) {
    fail("{}.warmup_fraction: {} is outside [0, 1)", field, options.warmup_fraction());
  }
  if (options.step_epochs() < 1) fail("{}.step_epochs: {} is not a positive number", field, options.step_epochs());
  if (options.onecycle_peak_fraction() <= 0.0 || options.onecycle_peak_fraction() >= 1.0) {
    fail("{}.onecycle_peak_fraction: {} is outside (0, 1)", field, options.onecycle_peak_fraction());
  }
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& parameters,
                                                        const OptimizerOptions& options) {
  KD_CHECK(options.lr() > 0.0, "make_optimizer: lr 0 (auto) is resolved by the trainer (sized_for_rows)");
  validate(options, "optimizer");
  if (options.name() == "sgd") {
    return std::make_unique<torch::optim::SGD>(parameters, torch::optim::SGDOptions(options.lr())
                                                               .momentum(options.momentum())
                                                               .nesterov(options.nesterov())
                                                               .weight_decay(options.weight_decay()));
  }
  auto betas = std::make_tuple(options.beta1(), options.beta2());
  if (options.name() == "adam") {
    return std::make_unique<FusedAdam>(
        parameters, torch::optim::AdamOptions(options.lr()).betas(betas).weight_decay(options.weight_decay()));
  }
  return std::make_unique<FusedAdamW>(
      parameters, torch::optim::AdamWOptions(options.lr()).betas(betas).weight_decay(options.weight_decay()));
}

LrSchedule::LrSchedule(ScheduleOptions options, double base_lr, int64_t total_steps, int64_t steps_per_epoch)
    : options_(std::move(options)), base_lr_(base_lr), total_steps_(std::max<int64_t>(1, total_steps)),
      steps_per_epoch_(std::max<int64_t>(1, steps_per_epoch)) {
  validate(options_, "schedule");
}

double LrSchedule::lr_at(int64_t step) const {
  const double pi = 3.14159265358979323846;
  double t = static_cast<double>(step) / static_cast<double>(total_steps_);  // progress in [0, 1)
  double floor_lr = base_lr_ * options_.min_lr_fraction();
  const std::string& name = options_.name();
  if (name == "onecycle") {
    // Smith & Topping 2019 as in torch.optim.lr_scheduler.OneCycleLR (cosine annealing,
    // div_factor 25): from lr/25 up to lr at the peak, then down to the floor.
    double peak = options_.onecycle_peak_fraction();
    double start = base_lr_ / 25.0;
    if (t < peak) return start + (base_lr_ - start) * (1 - std::cos(pi * t / peak)) / 2;
    double u = (t - peak) / (1 - peak);
    return floor_lr + (base_lr_ - floor_lr) * (1 + std::cos(pi * u)) / 2;
  }
  double warmup = options_.warmup_fraction();
  if (t < warmup) return base_lr_ * (step + 1) / (warmup * total_steps_);
  double u = warmup > 0 ? (t - warmup) / (1 - warmup) : t;
  if (name == "cosine") return floor_lr + (base_lr_ - floor_lr) * (1 + std::cos(pi * u)) / 2;
  if (name == "linear") return floor_lr + (base_lr_ - floor_lr) * (1 - u);
  if (name == "step") {
    int64_t epoch = step / steps_per_epoch_;
    return base_lr_ * std::pow(options_.gamma(), static_cast<double>(epoch / options_.step_epochs()));
  }
  return base_lr_;
}

void LrSchedule::apply(torch::optim::Optimizer& optimizer, int64_t step) const {
  double lr = lr_at(step);
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

}  // namespace kd::train
