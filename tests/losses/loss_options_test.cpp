// Bad loss options and bad inputs: each is refused with a message naming the field.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "kd/losses/distiller.h"
#include "kd/losses/registry.h"
#include "loss_test_util.h"

namespace kd::losses {
namespace {

using Options = LossTermOptions;

Distiller classification(std::vector<Options> terms) {
  return Distiller(std::move(terms), Task::classification);
}

TEST(LossOptions, KindsAreListedInTableOrder) {
  EXPECT_EQ(loss_term_kinds(),
            (std::vector<std::string>{"kl", "reverse_kl", "js", "mse", "huber", "ce", "dkd", "dist", "hint",
                                      "attention", "rkd", "cosine", "correlation", "attention_map"}));
  for (const auto& kind : loss_term_kinds()) EXPECT_EQ(make_loss_term(Options(kind))->name(), kind);
}

// docs/losses.md's key table is what the kinds declare: one row a key, in table order.
TEST(LossOptions, DocsTableIsTheDeclarations) {
  std::ifstream file(std::string(KD_SOURCE_DIR) + "/docs/losses.md");
  std::string docs((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(docs.empty());
  std::string rows;
  for (const auto& use : loss_option_table()) {
    const LossOption& o = use.option;
    std::string kinds;
    for (const auto& kind : use.kinds) kinds += (kinds.empty() ? "" : ", ") + kind;
    std::string meaning = o.help + "; ";
    if (o.any_word) {
      meaning += "a tap name";
    } else if (o.is_word()) {
      for (size_t i = 0; i < o.words.size(); ++i) meaning += (i ? " or `" : "`") + o.words[i] + "`";
    } else {
      meaning += o.range.text();
    }
    rows += fmt::format("| `{}` | {} | {} | {} |\n", o.key, o.is_word() ? o.words.front() : fmt::format("{}", o.number),
                        kinds, meaning);
  }
  EXPECT_NE(docs.find(rows), std::string::npos) << "expected in docs/losses.md:\n" << rows;
}

TEST(LossOptions, TheKindsOwnOptionsAreReadAndChecked) {
  // A declared key with its default; a set key; one another kind declares, refused unless at its default.
  EXPECT_EQ(Options("dkd").beta(), 8.0);
  EXPECT_EQ(Options("dkd").set("beta", 2.0).beta(), 2.0);
  EXPECT_EQ(Options("ce").temperature(), 1.0);
  EXPECT_EQ(Options("mse").target(), "teacher");
  EXPECT_NO_THROW(make_loss_term(Options("ce").temperature(1)));
  KD_EXPECT_ERROR(make_loss_term(Options("dkd").set("beta", -1.0)), "beta: found -1, expected a number >= 0");
  KD_EXPECT_ERROR(make_loss_term(Options("mse").set("target", 3.0)), "target: found 3, expected \"teacher\" or \"labels\"");
  KD_EXPECT_ERROR(make_loss_term(Options("kl").set("gamma", 2.0)), "gamma: no loss kind has this option");
}

TEST(LossOptions, UnknownKindSuggestsTheNearest) {
  KD_EXPECT_ERROR(
      make_loss_term(Options("kdl")),
      "kind: \"kdl\" is not a loss kind (did you mean \"kl\"?); expected one of kl, reverse_kl, "
      "js, mse, huber, ce, dkd, dist, hint, attention, rkd, cosine, correlation");
  KD_EXPECT_ERROR(classification({Options("kl"), Options("reverse-kl")}),
                       "losses[1].kind: \"reverse-kl\" is not a loss kind (did you mean \"reverse_kl\"?)");
  KD_EXPECT_ERROR(make_loss_term(Options("focal_loss")),
                       "kind: \"focal_loss\" is not a loss kind; expected one of");
  KD_EXPECT_ERROR(make_loss_term(Options("")), "kind: \"\" is not a loss kind");
}

TEST(LossOptions, TemperatureMustBePositive) {
  KD_EXPECT_ERROR(make_loss_term(Options("kl").temperature(0)),
                       "temperature: found 0, expected a number > 0");
  KD_EXPECT_ERROR(classification({Options("ce"), Options("js").temperature(-2)}),
                       "losses[1].temperature: found -2, expected a number > 0");
  KD_EXPECT_ERROR(make_loss_term(Options("dkd").temperature(std::numeric_limits<double>::infinity())),
                       "temperature: found inf, expected a number > 0");
}

TEST(LossOptions, WeightMustBeNonNegativeAndNotAllZero) {
  KD_EXPECT_ERROR(make_loss_term(Options("kl").weight(-0.5)),
                       "weight: found -0.5, expected a number >= 0");
  KD_EXPECT_ERROR(make_loss_term(Options("kl").weight(std::nan(""))),
                       "weight: found nan, expected a number >= 0");
  KD_EXPECT_ERROR(classification({Options("kl").weight(0), Options("ce").weight(0)}),
                       "losses: all weights are 0, expected at least one weight > 0");
  KD_EXPECT_ERROR(classification({}), "losses: empty, expected at least one term such as {kind: kl}");
}

TEST(LossOptions, LabelSmoothingMustBeInUnitInterval) {
  KD_EXPECT_ERROR(make_loss_term(Options("ce").label_smoothing(1)),
                       "label_smoothing: found 1, expected a number in [0, 1)");
  KD_EXPECT_ERROR(make_loss_term(Options("ce").label_smoothing(-0.1)),
                       "label_smoothing: found -0.1, expected a number in [0, 1)");
  EXPECT_NO_THROW(make_loss_term(Options("ce").label_smoothing(0.99)));
}

TEST(LossOptions, DeltaTargetAlphaBeta) {
  KD_EXPECT_ERROR(make_loss_term(Options("huber").delta(0)), "delta: found 0, expected a number > 0");
  KD_EXPECT_ERROR(make_loss_term(Options("mse").target("student")),
                       "target: found \"student\", expected \"teacher\" or \"labels\"");
  KD_EXPECT_ERROR(make_loss_term(Options("dkd").alpha(-1)), "alpha: found -1, expected a number >= 0");
  KD_EXPECT_ERROR(make_loss_term(Options("dkd").beta(-8)), "beta: found -8, expected a number >= 0");
}

TEST(LossOptions, KeysAKindDoesNotReadAreRefused) {
  KD_EXPECT_ERROR(
      make_loss_term(Options("ce").temperature(4)),
      "temperature: loss \"ce\" does not use temperature (found 4); its keys are kind, weight, "
      "label_smoothing");
  KD_EXPECT_ERROR(
      classification({Options("kl").delta(2)}),
      "losses[0].delta: loss \"kl\" does not use delta (found 2); its keys are kind, weight, "
      "temperature");
  KD_EXPECT_ERROR(make_loss_term(Options("kl").target("labels")),
                       "target: loss \"kl\" does not use target (found \"labels\")");
  KD_EXPECT_ERROR(make_loss_term(Options("mse").temperature(2)), "its keys are kind, weight, target");
  // The default value is not "set": a recipe may spell it out.
  EXPECT_NO_THROW(make_loss_term(Options("ce").temperature(1)));
}

TEST(LossOptions, KindMustFitTheTask) {
  KD_EXPECT_ERROR(
      Distiller({Options("mse"), Options("kl")}, Task::regression),
      "losses[1].kind: \"kl\" is for classification (logits over classes), the task is regression");
  KD_EXPECT_ERROR(Distiller({Options("ce")}, Task::regression),
                       "losses[0].kind: \"ce\" is for classification");
  KD_EXPECT_ERROR(
      classification({Options("huber").target("labels")}),
      "losses[0].target: \"huber\" with target \"labels\" needs real-valued labels (regression); "
      "for class labels use kind \"ce\"");
  EXPECT_NO_THROW(classification({Options("mse"), Options("huber")}));  // logit matching
  EXPECT_NO_THROW(Distiller({Options("mse").target("labels"), Options("huber")}, Task::regression));
}

LossInputs batch(int64_t n = 4, int64_t c = 5) {
  torch::manual_seed(3);
  return {torch::randn({n, c}), torch::randn({n, c}), torch::randint(0, c, {n}), torch::Tensor()};
}

TEST(LossInputsCheck, TermsThatNeedTheTeacherSayWhenItIsAbsent) {
  LossInputs inputs = batch();
  inputs.teacher = torch::Tensor();
  for (const char* kind : {"kl", "reverse_kl", "js", "mse", "huber", "dkd"}) {
    KD_EXPECT_ERROR(
        make_loss_term(Options(kind))->compute(inputs),
        fmt::format("loss \"{}\" needs the teacher's outputs, but this batch has none", kind));
  }
  KD_EXPECT_ERROR(classification({Options("ce"), Options("kl")}).compute(inputs),
                       "losses[1]: loss \"kl\" needs the teacher's outputs, but this batch has none");
}

TEST(LossInputsCheck, TermsThatNeedLabelsSayWhenTheyAreAbsent) {
  LossInputs inputs = batch();
  inputs.labels = torch::Tensor();
  KD_EXPECT_ERROR(make_loss_term(Options("ce"))->compute(inputs),
                       "loss \"ce\" needs labels, but this batch has none");
  KD_EXPECT_ERROR(make_loss_term(Options("dkd"))->compute(inputs),
                       "loss \"dkd\" needs labels, but this batch has none");
  KD_EXPECT_ERROR(make_loss_term(Options("mse").target("labels"))->compute(inputs),
                       "loss \"mse\" needs labels, but this batch has none");
  EXPECT_NO_THROW(make_loss_term(Options("kl"))->compute(inputs));
}

TEST(LossInputsCheck, ShapesAndTypesAreChecked) {
  LossInputs inputs = batch();
  inputs.teacher = torch::randn({4, 3});
  KD_EXPECT_ERROR(make_loss_term(Options("kl"))->compute(inputs),
                       "loss \"kl\": teacher outputs are [4, 3], expected the student's shape [4, 5]");
  inputs = batch();
  inputs.labels = torch::tensor({0, 1, 7, 2}, torch::kLong);
  KD_EXPECT_ERROR(make_loss_term(Options("ce"))->compute(inputs),
                       "loss \"ce\": label 7 is out of range, expected a class index in [0, 5)");
  // An unlabelled row may hold any placeholder.
  inputs.has_label = torch::tensor({true, true, false, true});
  EXPECT_NO_THROW(make_loss_term(Options("ce"))->compute(inputs));
  inputs.has_label = torch::tensor({1, 1, 0, 1}, torch::kLong);
  KD_EXPECT_ERROR(make_loss_term(Options("ce"))->compute(inputs),
                       "loss \"ce\": has_label is [4] of Long, expected bool [4]");
  inputs = batch();
  inputs.labels = torch::rand({4});
  KD_EXPECT_ERROR(make_loss_term(Options("ce"))->compute(inputs),
                       "loss \"ce\": labels are [4] of Float, expected int64 class indices [N]");
  inputs.labels = torch::randint(0, 5, {3});
  KD_EXPECT_ERROR(make_loss_term(Options("ce"))->compute(inputs),
                       "loss \"ce\": labels are [3], expected 4 rows like the student");
  inputs = batch(4, 3);
  inputs.labels = torch::rand({4, 2});
  KD_EXPECT_ERROR(make_loss_term(Options("mse").target("labels"))->compute(inputs),
                       "loss \"mse\": labels are [4, 2] of Float, expected float targets [N, 3]");
  inputs.student = torch::randn({4});
  KD_EXPECT_ERROR(
      make_loss_term(Options("kl"))->compute(inputs),
      "loss \"kl\": student outputs are [4] of Float, expected a float tensor [N, C] with N >= 1");
  inputs = batch(4, 1);
  inputs.labels = torch::zeros({4}, torch::kLong);
  KD_EXPECT_ERROR(make_loss_term(Options("dkd"))->compute(inputs),
                       "loss \"dkd\": student has 1 class, expected at least 2");
}

}  // namespace
}  // namespace kd::losses
