// The weighted combination: total = sum_i weight_i * term_i, per-term values for logs.
#include "kd/losses/distiller.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kd/losses/registry.h"
#include "loss_test_util.h"

namespace kd::losses {
namespace {

using Options = LossTermOptions;

std::vector<Options> recipe() {
  return {Options("kl").weight(0.7).temperature(4), Options("ce").weight(0.2).label_smoothing(0.1),
          Options("js").weight(0.1).temperature(2), Options("dkd").weight(0.05).temperature(3).beta(2),
          Options("kl").weight(0)};
}

TEST(Distiller, TotalIsTheWeightedSumOfTheTerms) {
  LossInputs inputs = test::golden_inputs("classification", torch::kFloat64);
  Distiller distiller(recipe(), Task::classification);
  LossValues values = distiller.compute(inputs);
  ASSERT_EQ(values.terms.size(), 5u);
  double expected = 0;
  for (size_t i = 0; i < recipe().size(); ++i) {
    double term = make_loss_term(recipe()[i])->compute(inputs).item<double>();
    EXPECT_NEAR(values.terms[i].item<double>(), term, 1e-12) << i;
    EXPECT_FALSE(values.terms[i].requires_grad());
    expected += recipe()[i].weight() * term;
  }
  EXPECT_NEAR(values.total.item<double>(), expected, 1e-12);
  // From loss_golden.json: 0.7 * kl(T=4) + 0.2 * ce(eps=0.1, has_label) + ... checked term by term
  // above; here one hand sum of two golden values as well.
  Distiller two({Options("kl").weight(0.9).temperature(4), Options("ce").weight(0.1)}, Task::classification);
  LossInputs all_labelled = inputs;
  all_labelled.has_label = torch::Tensor();
  EXPECT_NEAR(two.compute(all_labelled).total.item<double>(),
              0.9 * 3.2249864860240605 + 0.1 * 2.564202604965873, 1e-9);
}

TEST(Distiller, GradientOfTheTotalMatchesFiniteDifferences) {
  LossInputs inputs = test::golden_inputs("classification", torch::kFloat64);
  Distiller distiller(recipe(), Task::classification);
  test::expect_gradient_matches(
      [&](const torch::Tensor& student) {
        LossInputs moved = inputs;
        moved.student = student;
        return distiller.compute(moved).total;
      },
      inputs.student);
}

// kl and ce terms alone take the fused path (one pass, one autograd node): its values, terms and
// gradient are those of the terms' own compute() through autograd, in float32 and float64, with a
// mask, label smoothing, two temperatures and a weight-0 term; thread counts do not change a bit.
TEST(Distiller, FusedKlAndCeMatchTheTermsThemselves) {
  std::vector<Options> terms = {Options("kl").weight(0.25).temperature(2), Options("ce").weight(0.75),
                                Options("ce").weight(0.3).label_smoothing(0.1), Options("kl").weight(0),
                                Options("kl").weight(0.5).temperature(7)};
  Distiller distiller(terms, Task::classification);
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    for (bool masked : {false, true}) {
      torch::manual_seed(3);
      const int64_t n = 700, c = 37;  // enough rows for the loop to be split between threads
      LossInputs inputs;
      inputs.student = (torch::randn({n, c}, dtype) * 3).requires_grad_(true);
      inputs.teacher = torch::randn({n, c}, dtype) * 4;
      inputs.teacher.index_put_({0}, -1e4);  // a teacher row with p = 0 in all but one class
      inputs.teacher.index_put_({0, 5}, 1e4);
      // Strided labels and mask (every other element): read through their strides.
      inputs.labels = torch::randint(0, c, {2 * n}, torch::kLong).slice(0, 0, 2 * n, 2);
      if (masked) inputs.has_label = (torch::rand({2 * n}) < 0.6).slice(0, 0, 2 * n, 2);
      LossValues fused = distiller.compute(inputs);
      ASSERT_TRUE(fused.total.requires_grad());
      fused.total.backward();
      torch::Tensor fused_gradient = inputs.student.grad().clone();
      inputs.student.mutable_grad().reset();

      torch::Tensor expected_total = torch::zeros({}, dtype);
      double tolerance = dtype == torch::kFloat32 ? 2e-5 : 1e-11;
      for (size_t i = 0; i < terms.size(); ++i) {
        torch::Tensor term = make_loss_term(terms[i])->compute(inputs);
        EXPECT_NEAR(fused.terms[i].item<double>(), term.item<double>(), tolerance * (1 + term.abs().item<double>()))
            << i << " masked " << masked;
        EXPECT_FALSE(fused.terms[i].requires_grad());
        expected_total = expected_total + term * terms[i].weight();
      }
      EXPECT_NEAR(fused.total.item<double>(), expected_total.item<double>(), tolerance * 10);
      expected_total.backward();
      EXPECT_TRUE(torch::allclose(fused_gradient, inputs.student.grad(), dtype == torch::kFloat32 ? 1e-4 : 1e-9,
                                  dtype == torch::kFloat32 ? 1e-8 : 1e-14))
          << (fused_gradient - inputs.student.grad()).abs().max().item<double>();

      int threads = torch::get_num_threads();
      torch::set_num_threads(1);
      LossValues one = distiller.compute(inputs);
      torch::set_num_threads(threads);
      EXPECT_EQ(one.total.item<double>(), fused.total.item<double>());
    }
  }
}

// The fused float32 path computes its exponentials and logarithms itself (vectorised): on logits far
// apart (differences of thousands, a -inf where the teacher gives the class nothing, classes from 2 to
// 300) its values and gradient are still the terms' own, and a NaN logit still makes the loss NaN.
TEST(Distiller, FusedFloatPathKeepsExtremeLogitsAndNaN) {
  // (No label smoothing: with a -inf logit its uniform part is infinite in either path.)
  Distiller distiller({Options("kl").weight(0.4).temperature(3), Options("ce").weight(0.6)}, Task::classification);
  for (int64_t c : {2, 5, 17, 300}) {
    torch::manual_seed(c);
    const int64_t n = 90;
    LossInputs inputs;
    inputs.student = torch::randn({n, c}) * 30;
    inputs.student.index_put_({3}, inputs.student[3] * 100);
    inputs.student.index_put_({5, 1}, -std::numeric_limits<float>::infinity());
    inputs.student.requires_grad_(true);
    inputs.teacher = torch::randn({n, c}) * 5;
    inputs.teacher.index_put_({5, 1}, -1e4);  // p = 0 where the student says -inf
    inputs.labels = torch::randint(0, c, {n}, torch::kLong);
    inputs.labels.index_put_({5}, 0);
    LossValues fused = distiller.compute(inputs);
    fused.total.backward();
    torch::Tensor fused_gradient = inputs.student.grad().clone();
    inputs.student.mutable_grad().reset();
    ASSERT_TRUE(std::isfinite(fused.total.item<double>())) << c;

    torch::Tensor expected = make_loss_term(Options("kl").temperature(3))->compute(inputs) * 0.4 +
                             make_loss_term(Options("ce"))->compute(inputs) * 0.6;
    EXPECT_NEAR(fused.total.item<double>(), expected.item<double>(), 2e-5 * (1 + std::abs(expected.item<double>())))
        << c;
    expected.backward();
    EXPECT_TRUE(torch::allclose(fused_gradient, inputs.student.grad(), 1e-4, 1e-7))
        << c << ": " << (fused_gradient - inputs.student.grad()).abs().max().item<double>();

    torch::NoGradGuard no_grad;
    LossInputs broken = inputs;
    broken.student = inputs.student.detach().clone();
    broken.student.index_put_({7, c - 1}, std::numeric_limits<float>::quiet_NaN());
    EXPECT_TRUE(std::isnan(distiller.compute(broken).total.item<double>())) << c;
  }
}

TEST(Distiller, FusedPathStillNamesABadLabel) {
  Distiller distiller({Options("kl").temperature(2), Options("ce")}, Task::classification);
  LossInputs inputs{torch::randn({4, 3}), torch::randn({4, 3}), torch::tensor({0, 1, 3, 2}, torch::kLong)};
  KD_EXPECT_ERROR(distiller.compute(inputs), "label 3 is out of range");
}

TEST(Distiller, NamesTellRepeatedKindsApart) {
  Distiller distiller(recipe(), Task::classification);
  EXPECT_EQ(distiller.term_names(), (std::vector<std::string>{"kl_0", "ce", "js", "dkd", "kl_1"}));
}

TEST(Distiller, SaysWhatItNeeds) {
  Distiller baseline({Options("ce")}, Task::classification);
  EXPECT_FALSE(baseline.needs_teacher());
  EXPECT_TRUE(baseline.needs_labels());
  Distiller soft({Options("kl")}, Task::classification);
  EXPECT_TRUE(soft.needs_teacher());
  EXPECT_FALSE(soft.needs_labels());
  Distiller regression({Options("mse").target("labels"), Options("huber").weight(0)}, Task::regression);
  EXPECT_TRUE(regression.needs_teacher());
  EXPECT_TRUE(regression.needs_labels());
  // A baseline trains without any teacher.
  LossInputs inputs = test::golden_inputs("classification", torch::kFloat32);
  inputs.teacher = torch::Tensor();
  EXPECT_NEAR(baseline.compute(inputs).total.item<double>(), 2.309869664650999, 1e-5);
}

TEST(Distiller, TransferBatchWithoutLabelsUsesOnlyTheTeacher) {
  LossInputs inputs = test::golden_inputs("classification", torch::kFloat64);
  inputs.has_label = torch::zeros({inputs.student.size(0)}, torch::kBool);
  inputs.student.requires_grad_(true);
  Distiller distiller({Options("kl").weight(0.5).temperature(4), Options("ce").weight(0.5), Options("dkd")},
                      Task::classification);
  LossValues values = distiller.compute(inputs);
  EXPECT_EQ(values.terms[1].item<double>(), 0.0);
  EXPECT_EQ(values.terms[2].item<double>(), 0.0);
  EXPECT_NEAR(values.total.item<double>(), 0.5 * 3.2249864860240605, 1e-9);
  values.total.backward();
  EXPECT_TRUE(torch::isfinite(inputs.student.grad()).all().item<bool>());
  EXPECT_GT(inputs.student.grad().abs().sum().item<double>(), 0);
}

TEST(Distiller, RegressionCombination) {
  LossInputs inputs = test::golden_inputs("regression", torch::kFloat32);
  Distiller distiller({Options("mse").weight(0.3), Options("huber").weight(0.7).delta(0.5).target("labels")},
                      Task::regression);
  // Golden: regression mse (teacher) and huber (delta 0.5, labels, all rows).
  inputs.has_label = torch::Tensor();
  EXPECT_NEAR(distiller.compute(inputs).total.item<double>(),
              0.3 * 0.5476848507752851 + 0.7 * 0.40906895767213636, 1e-5);
}

}  // namespace
}  // namespace kd::losses
