// Numerics: no NaN where probabilities underflow or are exactly 0, float32 and float64, limits.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <cmath>

#include "kd/losses/registry.h"
#include "loss_test_util.h"

namespace kd::losses {
namespace {

using Options = LossTermOptions;
const std::vector<std::string> kSoftKinds = {"kl", "reverse_kl", "js", "dkd"};

bool all_finite(const torch::Tensor& t) { return torch::isfinite(t).all().item<bool>(); }

// Value and gradient of `term` on `inputs` (student made a leaf that requires grad).
std::pair<torch::Tensor, torch::Tensor> value_and_grad(const LossTerm& term, LossInputs inputs) {
  inputs.student = inputs.student.detach().clone().requires_grad_(true);
  torch::Tensor value = term.compute(inputs);
  value.backward();
  return {value.detach(), inputs.student.grad()};
}

TEST(LossNumerics, HugeLogitsStayFiniteInFloat32) {
  torch::manual_seed(11);
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    LossInputs inputs{torch::randn({6, 10}, dtype) * 1000, torch::randn({6, 10}, dtype) * 1000,
                      torch::randint(0, 10, {6}), torch::Tensor()};
    for (const auto& kind : {"kl", "reverse_kl", "js", "dkd", "ce", "mse", "huber"}) {
      auto [value, grad] = value_and_grad(*make_loss_term(Options(kind)), inputs);
      EXPECT_TRUE(all_finite(value)) << kind << " " << value;
      EXPECT_TRUE(all_finite(grad)) << kind;
    }
  }
}

TEST(LossNumerics, ZeroTeacherProbabilitiesGiveNoNaN) {
  // Class 2 is masked out of the teacher (logit -inf, probability exactly 0); dkd's target is class 0.
  const double inf = std::numeric_limits<double>::infinity();
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    torch::Tensor teacher = torch::tensor({{2.0, 1.0, -inf, 0.5}, {0.1, 3.0, -inf, -1.0}}, dtype);
    torch::Tensor student = torch::tensor({{1.0, 0.0, 0.3, 0.2}, {0.5, 2.0, -1.0, 0.0}}, dtype);
    LossInputs inputs{student, teacher, torch::tensor({0, 1}, torch::kLong), torch::Tensor()};
    for (const auto& kind : {"kl", "js", "dkd"}) {
      auto [value, grad] = value_and_grad(*make_loss_term(Options(kind).temperature(2)), inputs);
      EXPECT_TRUE(all_finite(value)) << kind << " " << value;
      EXPECT_TRUE(all_finite(grad)) << kind;
    }
    // KL(student || teacher) is truly infinite when the teacher gives 0 where the student does not.
    auto reverse = make_loss_term(Options("reverse_kl"))->compute(inputs);
    EXPECT_TRUE(std::isinf(reverse.item<double>()));
  }
}

TEST(LossNumerics, ZeroStudentProbabilitiesGiveNoNaN) {
  // Both put probability 0 on class 1: reverse KL's 0 * log(0 / 0) must count as 0.
  const double inf = std::numeric_limits<double>::infinity();
  torch::Tensor student = torch::tensor({{1.0, -inf, 0.0}}, torch::kFloat64);
  torch::Tensor teacher = torch::tensor({{0.0, -inf, 1.0}}, torch::kFloat64);
  LossInputs inputs{student, teacher, torch::Tensor(), torch::Tensor()};
  auto [value, grad] = value_and_grad(*make_loss_term(Options("reverse_kl")), inputs);
  // KL([e, 1] / (1 + e) || [1, e] / (1 + e)) = (e - 1) / (e + 1) * 1 = tanh(1/2).
  EXPECT_NEAR(value.item<double>(), std::tanh(0.5), 1e-12);
  EXPECT_TRUE(all_finite(grad));
}

TEST(LossNumerics, IdenticalDistributionsGiveZero) {
  torch::manual_seed(5);
  torch::Tensor logits = torch::randn({5, 6}, torch::kFloat64);
  LossInputs inputs{logits, logits, torch::randint(0, 6, {5}), torch::Tensor()};
  for (const auto& kind : kSoftKinds) {
    auto [value, grad] = value_and_grad(*make_loss_term(Options(kind).temperature(3)), inputs);
    EXPECT_NEAR(value.item<double>(), 0.0, 1e-12) << kind;
    EXPECT_NEAR(grad.abs().max().item<double>(), 0.0, 1e-12) << kind;
  }
  // Shifting every logit of a row by a constant changes no probability.
  inputs.teacher = logits + 7.5;
  EXPECT_NEAR(make_loss_term(Options("kl"))->compute(inputs).item<double>(), 0.0, 1e-12);
}

TEST(LossNumerics, JensenShannonIsSymmetricAndBounded) {
  torch::manual_seed(8);
  torch::Tensor a = torch::randn({4, 5}, torch::kFloat64) * 3;
  torch::Tensor b = torch::randn({4, 5}, torch::kFloat64) * 3;
  auto js = make_loss_term(Options("js").temperature(2));
  double ab = js->compute({a, b}).item<double>();
  double ba = js->compute({b, a}).item<double>();
  EXPECT_NEAR(ab, ba, 1e-12);
  // Disjoint supports reach the bound T^2 log 2.
  torch::Tensor one_hot_a = torch::tensor({{100.0, -100.0}}, torch::kFloat64);
  torch::Tensor one_hot_b = torch::tensor({{-100.0, 100.0}}, torch::kFloat64);
  EXPECT_NEAR(js->compute({one_hot_a, one_hot_b}).item<double>(), 4 * std::log(2.0), 1e-12);
}

TEST(LossNumerics, KlGradientIsHintonsFormula) {
  // d/ds [T^2 KL(p_t || p_s)] = T (p_s - p_t) / N   (Hinton et al. 2015, eq. 2, times T^2).
  torch::manual_seed(2);
  const double t = 3;
  torch::Tensor s = torch::randn({3, 4}, torch::kFloat64);
  torch::Tensor teacher = torch::randn({3, 4}, torch::kFloat64);
  auto [value, grad] = value_and_grad(*make_loss_term(Options("kl").temperature(t)), {s, teacher});
  torch::Tensor expected = t * (torch::softmax(s / t, 1) - torch::softmax(teacher / t, 1)) / 3;
  EXPECT_LT((grad - expected).abs().max().item<double>(), 1e-12);
}

TEST(LossNumerics, DkdSplitsIntoTargetAndNonTargetParts) {
  torch::manual_seed(4);
  LossInputs inputs{torch::randn({5, 6}, torch::kFloat64), torch::randn({5, 6}, torch::kFloat64),
                    torch::randint(0, 6, {5}), torch::Tensor()};
  auto dkd = [&](double alpha, double beta) {
    return make_loss_term(Options("dkd").temperature(2).alpha(alpha).beta(beta))
        ->compute(inputs)
        .item<double>();
  };
  double tckd = dkd(1, 0), nckd = dkd(0, 1);
  EXPECT_GT(tckd, 0);
  EXPECT_GT(nckd, 0);
  EXPECT_NEAR(dkd(0.5, 3), 0.5 * tckd + 3 * nckd, 1e-12);
  // Zhao et al. eq. 1: KD = TCKD + (1 - p_t[y]) NCKD per example; with one example it is exact.
  LossInputs one{inputs.student.slice(0, 0, 1), inputs.teacher.slice(0, 0, 1), inputs.labels.slice(0, 0, 1),
                 torch::Tensor()};
  auto term = [&](const char* kind, double alpha, double beta) {
    return make_loss_term(Options(kind).temperature(2).alpha(alpha).beta(beta))->compute(one).item<double>();
  };
  const int64_t y = one.labels[0].item<int64_t>();
  double teacher_target = torch::softmax(one.teacher / 2, 1)[0][y].item<double>();
  EXPECT_NEAR(make_loss_term(Options("kl").temperature(2))->compute(one).item<double>(),
              term("dkd", 1, 0) + (1 - teacher_target) * term("dkd", 0, 1), 1e-12);
}

TEST(LossNumerics, GradientCheckCatchesAWrongGradient) {
  // The helper itself must fail on a loss whose autograd is wrong: value x^2, autograd x (not 2x).
  torch::Tensor x = torch::tensor({{0.5}}, torch::kFloat64);
  EXPECT_NONFATAL_FAILURE(
      test::expect_gradient_matches([](const torch::Tensor& s) { return (s.detach() * s).sum(); }, x),
      "numeric");
}

}  // namespace
}  // namespace kd::losses
