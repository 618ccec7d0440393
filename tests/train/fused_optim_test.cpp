#include "kd/train/fused_optim.h"

#include <gtest/gtest.h>

#include <sstream>

#include "kd/train/optim.h"

namespace kd::train {
namespace {

// Two parameters of different sizes (the larger spans several of the fused loop's parallel chunks)
// and one that never gets a gradient.
std::vector<torch::Tensor> make_parameters(torch::ScalarType type = torch::kFloat) {
  torch::manual_seed(3);
  return {torch::randn({37, 5}, type).requires_grad_(true), torch::randn({40000}, type).requires_grad_(true),
          torch::randn({4}, type).requires_grad_(true)};
}

std::vector<torch::Tensor> copies(const std::vector<torch::Tensor>& parameters) {
  std::vector<torch::Tensor> out;
  for (const auto& p : parameters) out.push_back(p.detach().clone().requires_grad_(true));
  return out;
}

// Gives both sets the same gradients (step `step`'s), leaving the last parameter without one.
void set_gradients(std::vector<torch::Tensor>& a, std::vector<torch::Tensor>& b, int step) {
  torch::manual_seed(100 + step);
  for (size_t i = 0; i + 1 < a.size(); ++i) {
    auto g = torch::randn(a[i].sizes(), a[i].options().requires_grad(false)) * static_cast<double>(i + 1);
    a[i].mutable_grad() = g.clone();
    b[i].mutable_grad() = g.clone();
  }
}

double largest_difference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double most = 0;
  for (size_t i = 0; i < a.size(); ++i) most = std::max(most, (a[i] - b[i]).abs().max().item<double>());
  return most;
}

template <class Fused, class Reference, class Options>
void expect_same_steps(const Options& options, torch::ScalarType type = torch::kFloat) {
  auto fused_parameters = make_parameters(type);
  auto reference_parameters = copies(fused_parameters);
  Fused fused(fused_parameters, options);
  Reference reference(reference_parameters, options);
  auto untouched = fused_parameters[2].detach().clone();
  for (int step = 0; step < 6; ++step) {
    set_gradients(fused_parameters, reference_parameters, step);
    fused.step();
    reference.step();
  }
  // libtorch's step in float32, op by op: the fused one rounds in a different order, no more.
  EXPECT_LT(largest_difference(fused_parameters, reference_parameters), 2e-6);
  EXPECT_GT((fused_parameters[0] - make_parameters(type)[0]).abs().max().item<double>(), 1e-3);
  EXPECT_TRUE(torch::equal(fused_parameters[2].detach(), untouched));
  EXPECT_EQ(fused.state().size(), reference.state().size());
}

TEST(FusedOptim, AdamStepsMatchLibtorchAdam) {
  expect_same_steps<FusedAdam, torch::optim::Adam>(torch::optim::AdamOptions(0.01));
  expect_same_steps<FusedAdam, torch::optim::Adam>(
      torch::optim::AdamOptions(0.003).betas({0.8, 0.99}).eps(1e-6).weight_decay(0.05));
}

TEST(FusedOptim, AdamWStepsMatchLibtorchAdamW) {
  expect_same_steps<FusedAdamW, torch::optim::AdamW>(torch::optim::AdamWOptions(0.01).weight_decay(0.1));
  expect_same_steps<FusedAdamW, torch::optim::AdamW>(torch::optim::AdamWOptions(0.002).weight_decay(0));
}

TEST(FusedOptim, OtherTypesAndAmsgradTakeLibtorchsStep) {
  // float64 parameters and amsgrad are not fused: the steps are libtorch's, bit for bit.
  auto fused_parameters = make_parameters(torch::kDouble);
  auto reference_parameters = copies(fused_parameters);
  FusedAdam fused(fused_parameters, torch::optim::AdamOptions(0.01));
  torch::optim::Adam reference(reference_parameters, torch::optim::AdamOptions(0.01));
  for (int step = 0; step < 3; ++step) {
    set_gradients(fused_parameters, reference_parameters, step);
    fused.step();
    reference.step();
  }
  EXPECT_EQ(largest_difference(fused_parameters, reference_parameters), 0.0);
  expect_same_steps<FusedAdam, torch::optim::Adam>(torch::optim::AdamOptions(0.01).amsgrad(true));
}

TEST(FusedOptim, StateSavedByFusedAdamLoadsIntoLibtorchAdamAndBack) {
  auto fused_parameters = make_parameters();
  auto reference_parameters = copies(fused_parameters);
  auto options = torch::optim::AdamOptions(0.01).weight_decay(0.01);
  FusedAdam fused(fused_parameters, options);
  for (int step = 0; step < 3; ++step) {
    set_gradients(fused_parameters, reference_parameters, step);
    fused.step();
  }
  for (size_t i = 0; i < fused_parameters.size(); ++i) {
    torch::NoGradGuard no_grad;
    reference_parameters[i].copy_(fused_parameters[i]);
  }
  std::stringstream saved;
  torch::save(fused, saved);
  torch::optim::Adam reference(reference_parameters, options);
  torch::load(reference, saved);
  // Both continue from step 3 with the same moments: libtorch's Adam has what FusedAdam saved.
  for (int step = 3; step < 6; ++step) {
    set_gradients(fused_parameters, reference_parameters, step);
    fused.step();
    reference.step();
  }
  EXPECT_LT(largest_difference(fused_parameters, reference_parameters), 2e-6);
  std::stringstream saved_back;
  torch::save(reference, saved_back);
  FusedAdam restored(copies(reference_parameters), options);
  torch::load(restored, saved_back);
  auto key = c10::guts::to_string(restored.param_groups()[0].params()[1].unsafeGetTensorImpl());
  auto& state = static_cast<torch::optim::AdamParamState&>(*restored.state().at(key));
  EXPECT_EQ(state.step(), 6);
}

TEST(FusedOptim, MakeOptimizerUsesTheFusedAdams) {
  auto parameters = make_parameters();
  EXPECT_NE(dynamic_cast<FusedAdam*>(make_optimizer(parameters, OptimizerOptions().name("adam").lr(1e-3)).get()), nullptr);
  EXPECT_NE(dynamic_cast<FusedAdamW*>(make_optimizer(parameters, OptimizerOptions().name("adamw").lr(1e-3)).get()), nullptr);
}

}  // namespace
}  // namespace kd::train
