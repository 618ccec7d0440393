// Loss values against real PyTorch.
//
// The expected numbers come from tests/fixtures/loss_golden.json, written by
//   /usr/bin/python3 tests/fixtures/make_loss_golden.py
// (torch.nn.functional for kl, reverse_kl, mse, ce, huber; the papers' formulas in torch ops for js
// and dkd, dkd being the DKD authors' own dkd_loss(); the feature terms after their reference code).
// Rerun the script to regenerate it.
#include <gtest/gtest.h>

#include "kd/losses/registry.h"
#include "loss_test_util.h"

namespace kd::losses {
namespace {

std::string describe(const nlohmann::json& c) {
  return c.at("input").get<std::string>() + " " + c.at("options").dump();
}

LossInputs case_inputs(const nlohmann::json& c, torch::ScalarType dtype) {
  LossInputs inputs = test::golden_inputs(c.at("input").get<std::string>(), dtype);
  if (!c.at("options").at("use_has_label").get<bool>()) inputs.has_label = torch::Tensor();
  return inputs;
}

TEST(LossGolden, FixtureCoversEveryKind) {
  std::set<std::string> covered;
  for (const auto& c : test::golden().at("cases"))
    covered.insert(c.at("options").at("kind").get<std::string>());
  for (const auto& kind : loss_term_kinds()) EXPECT_EQ(covered.count(kind), 1u) << kind;
}

TEST(LossGolden, MatchesPyTorchInFloat64) {
  for (const auto& c : test::golden().at("cases")) {
    auto term = make_loss_term(test::golden_options(c.at("options")));
    torch::Tensor value = term->compute(case_inputs(c, torch::kFloat64));
    const double expected = c.at("expected").get<double>();
    EXPECT_EQ(value.scalar_type(), torch::kFloat64);
    EXPECT_NEAR(value.item<double>(), expected, 1e-5 * std::max(1.0, std::abs(expected))) << describe(c);
  }
}

TEST(LossGolden, MatchesPyTorchInFloat32) {
  for (const auto& c : test::golden().at("cases")) {
    auto term = make_loss_term(test::golden_options(c.at("options")));
    torch::Tensor value = term->compute(case_inputs(c, torch::kFloat32));
    const double expected = c.at("expected").get<double>();
    EXPECT_EQ(value.scalar_type(), torch::kFloat32);
    // Inputs rounded to float32 move the value by ~1e-7 relative; the sums add a little more.
    EXPECT_NEAR(value.item<double>(), expected, 1e-5 * std::max(1.0, std::abs(expected))) << describe(c);
  }
}

// Every golden case: d loss / d student by central differences against autograd, in float64.
TEST(LossGradient, MatchesFiniteDifferencesForEveryGoldenCase) {
  double worst = 0;
  for (const auto& c : test::golden().at("cases")) {
    SCOPED_TRACE(describe(c));
    auto term = make_loss_term(test::golden_options(c.at("options")));
    LossInputs inputs = case_inputs(c, torch::kFloat64);
    bool feature = inputs.student_feature.defined();  // d loss / d student feature
    double error = test::expect_gradient_matches(
        [&](const torch::Tensor& student) {
          LossInputs moved = inputs;
          (feature ? moved.student_feature : moved.student) = student;
          return term->compute(moved);
        },
        feature ? inputs.student_feature : inputs.student);
    worst = std::max(worst, error);
  }
  std::printf("largest |numeric - autograd| / tolerance over %zu cases: %.3g\n",
              test::golden().at("cases").size(), worst);
}

}  // namespace
}  // namespace kd::losses
