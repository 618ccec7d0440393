// Feature terms in the Distiller: which taps it asks for, the parameters it makes, how it hands each
// term its pair of tensors, and the errors of tensors that do not suit a term.
#include <gtest/gtest.h>

#include <limits>

#include "kd/losses/distiller.h"
#include "kd/losses/registry.h"
#include "loss_test_util.h"

namespace kd::losses {
namespace {

using Options = LossTermOptions;

TEST(FeatureTerms, TheDistillerAsksForEachTapOnceAndHandsEachTermItsPair) {
  Distiller distiller({Options("kl").weight(0.5).temperature(2),
                       Options("hint").set("student", "conv2").set("teacher", "conv3"),
                       Options("rkd").weight(25).set("student", "output").set("teacher", "gap"),
                       Options("attention").weight(1000).set("student", "conv2").set("teacher", "conv3")},
                      Task::classification);
  EXPECT_TRUE(distiller.reads_features());
  EXPECT_TRUE(distiller.needs_teacher());
  EXPECT_FALSE(distiller.needs_labels());
  EXPECT_EQ(distiller.student_taps(), (std::vector<std::string>{"conv2"}));
  EXPECT_EQ(distiller.teacher_taps(), (std::vector<std::string>{"conv3", "gap"}));
  // Shapes: the taps in order, the outputs last.
  auto parameters = distiller.make_parameters({{6, 7, 7}, {10}}, {{16, 3, 3}, {16}, {10}}, 3);
  ASSERT_EQ(parameters.size(), 2u);
  EXPECT_EQ(parameters[0].first, "losses[1].weight");
  EXPECT_EQ(parameters[0].second.sizes(), (std::vector<int64_t>{16, 6, 1, 1}));
  EXPECT_EQ(parameters[1].first, "losses[1].bias");
  EXPECT_TRUE(parameters[0].second.requires_grad());
  // PyTorch's default initialisation: uniform in +-1/sqrt(fan_in), the same from the same seed.
  EXPECT_LE(parameters[0].second.abs().max().item<double>(), 1 / std::sqrt(6.0));
  auto again = distiller.make_parameters({{6, 7, 7}, {10}}, {{16, 3, 3}, {16}, {10}}, 3);
  EXPECT_TRUE(torch::equal(parameters[0].second, again[0].second));

  torch::manual_seed(1);
  LossInputs inputs;
  inputs.student = torch::randn({4, 10}, torch::requires_grad());
  inputs.teacher = torch::randn({4, 10});
  inputs.student_taps = {torch::randn({4, 6, 7, 7}, torch::requires_grad())};
  inputs.teacher_taps = {torch::randn({4, 16, 3, 3}), torch::randn({4, 16})};
  inputs.named_parameters = parameters;
  auto values = distiller.compute(inputs);
  ASSERT_EQ(values.terms.size(), 4u);
  auto term = [](const Options& o) { return make_loss_term(o); };
  LossInputs hint;
  hint.student_feature = inputs.student_taps[0];
  hint.teacher_feature = inputs.teacher_taps[0];
  hint.parameters = {parameters[0].second, parameters[1].second};
  EXPECT_NEAR(values.terms[1].item<double>(),
              term(Options("hint").set("student", "conv2"))->compute(hint).item<double>(), 1e-6);
  LossInputs rkd;
  rkd.student_feature = inputs.student;
  rkd.teacher_feature = inputs.teacher_taps[1];
  EXPECT_NEAR(values.terms[2].item<double>(), term(Options("rkd"))->compute(rkd).item<double>(), 1e-6);
  // The total reaches the student's features and the projection.
  values.total.backward();
  EXPECT_GT(inputs.student_taps[0].grad().abs().sum().item<double>(), 0.0);
  EXPECT_GT(parameters[0].second.grad().abs().sum().item<double>(), 0.0);
}

// d hint / d projection weight and bias by central differences, in float64 (the golden cases check
// d hint / d student feature).
TEST(FeatureTerms, HintGradientReachesTheProjection) {
  torch::manual_seed(2);
  auto hint = make_loss_term(Options("hint"));
  for (bool maps : {true, false}) {
    SCOPED_TRACE(maps ? "1x1 convolution" : "linear");
    LossInputs inputs;
    inputs.student_feature = maps ? torch::randn({3, 2, 4, 4}, torch::kFloat64) : torch::randn({3, 5}, torch::kFloat64);
    inputs.teacher_feature = maps ? torch::randn({3, 3, 2, 2}, torch::kFloat64) : torch::randn({3, 4}, torch::kFloat64);
    auto generator = at::make_generator<at::CPUGeneratorImpl>(4);
    auto parameters = hint->make_parameters(maps ? std::vector<int64_t>{2, 4, 4} : std::vector<int64_t>{5},
                                            maps ? std::vector<int64_t>{3, 2, 2} : std::vector<int64_t>{4}, generator);
    ASSERT_EQ(parameters.size(), 2u);
    std::vector<torch::Tensor> projection;  // weight, bias
    for (const auto& item : parameters) projection.push_back(item.second.detach().to(torch::kFloat64));
    for (size_t i = 0; i < projection.size(); ++i) {
      SCOPED_TRACE(parameters[i].first);
      test::expect_gradient_matches(
          [&](const torch::Tensor& p) {
            LossInputs moved = inputs;
            moved.parameters = projection;
            moved.parameters[i] = p;
            return hint->compute(moved);
          },
          projection[i]);
    }
  }
}

// Hidden states [N, L, D] (TinyBERT): the projection maps each token's vector; value by hand, gradient
// by central differences, and sequences of different lengths refused.
TEST(FeatureTerms, HintOnSequencesProjectsEachToken) {
  torch::manual_seed(3);
  auto hint = make_loss_term(Options("hint").set("student", "layer1").set("teacher", "layer2"));
  auto generator = at::make_generator<at::CPUGeneratorImpl>(5);
  auto parameters = hint->make_parameters({6, 4}, {6, 8}, generator);
  ASSERT_EQ(parameters[0].second.sizes(), (std::vector<int64_t>{8, 4}));
  LossInputs inputs;
  inputs.student_feature = torch::randn({3, 6, 4}, torch::kFloat64);
  inputs.teacher_feature = torch::randn({3, 6, 8}, torch::kFloat64);
  std::vector<torch::Tensor> projection;
  for (const auto& item : parameters) projection.push_back(item.second.detach().to(torch::kFloat64));
  inputs.parameters = projection;
  torch::Tensor by_hand = (torch::einsum("nld,ed->nle", {inputs.student_feature, projection[0]}) + projection[1] -
                           inputs.teacher_feature).pow(2).mean();
  EXPECT_NEAR(hint->compute(inputs).item<double>(), by_hand.item<double>(), 1e-12);
  test::expect_gradient_matches(
      [&](const torch::Tensor& p) {
        LossInputs moved = inputs;
        moved.parameters[0] = p;
        return hint->compute(moved);
      },
      projection[0]);
  LossInputs shorter = inputs;
  shorter.teacher_feature = torch::randn({3, 5, 8}, torch::kFloat64);
  KD_EXPECT_ERROR(hint->compute(shorter), "are sequences of different lengths; a hint pairs them token by token");
}

// attention_map: 0 for equal maps whatever the head counts; a padding position's query row (which a
// model computes but nothing reads) does not count, a real token's does.
TEST(FeatureTerms, AttentionMapLeavesPaddingQueriesOut) {
  torch::Tensor scores = torch::randn({2, 4, 5, 5});
  scores.slice(0, 1, 2).slice(3, 3, 5).fill_(-std::numeric_limits<float>::infinity());  // text 2: 3 tokens
  LossInputs same;
  same.teacher_feature = torch::softmax(scores, -1);
  same.student_feature = same.teacher_feature.reshape({2, 2, 2, 5, 5}).mean(2);  // 2 heads: the pairs' mean
  // Averaged heads agree only when both sides average (4 vs 2 heads); head by head they would not.
  auto term = make_loss_term(Options("attention_map"));
  EXPECT_NEAR(term->compute(same).item<double>(), 0.0, 1e-6);
  for (const char* measure : {"kl", "mse"}) {
    auto changed = [&](int64_t query) {
      LossInputs moved = same;
      moved.student_feature = same.student_feature.clone();
      // 0.8 on the token the row gave least (at most 1/3), 0.1 on the other two: a change of at least
      // 0.47 in one value, whatever the random scores.
      auto row = torch::full({5}, 0.1f);
      row.slice(0, 3, 5).zero_();
      row[same.student_feature[1][0][query].slice(0, 0, 3).argmin().item<int64_t>()] = 0.8f;
      moved.student_feature[1][0][query] = row;
      return make_loss_term(Options("attention_map").set("measure", measure))->compute(moved).item<double>();
    };
    EXPECT_NEAR(changed(4), 0.0, 1e-6) << measure;  // a padding position's row
    EXPECT_GT(changed(1), 1e-4) << measure;         // a token's row
  }
}

TEST(FeatureTerms, TensorsThatDoNotSuitATermAreNamed) {
  LossInputs vectors;
  vectors.student_feature = torch::randn({4, 8});
  vectors.teacher_feature = torch::randn({4, 6});
  KD_EXPECT_ERROR(make_loss_term(Options("attention").set("student", "fc1"))->compute(vectors),
                  "loss \"attention\": student tap \"fc1\" [N, 8] is not a feature map [N, C, H, W]");
  KD_EXPECT_ERROR(make_loss_term(Options("cosine").set("teacher", "fc2"))->compute(vectors),
                  "loss \"cosine\": student tap \"output\" [N, 8] and teacher tap \"fc2\" [N, 6] differ in size; "
                  "cosine compares features of one size (hint learns a projection)");
  KD_EXPECT_ERROR(make_loss_term(Options("hint"))->compute(vectors), "loss \"hint\": its projection (weight, bias) is not given");
  KD_EXPECT_ERROR(make_loss_term(Options("attention_map").set("student", "layer1"))->compute(vectors),
                  "loss \"attention_map\": student tap \"layer1\" [N, 8] is not an attention map [N, heads, L, L] "
                  "(tap a transformer layer's attention, e.g. layer1.attention)");
  LossInputs maps;
  maps.student_feature = torch::softmax(torch::randn({4, 2, 6, 6}), -1);
  maps.teacher_feature = torch::softmax(torch::randn({4, 4, 7, 7}), -1);
  KD_EXPECT_ERROR(make_loss_term(Options("attention_map"))->compute(maps),
                  "loss \"attention_map\": student tap \"output\" [N, 2, 6, 6] and teacher tap \"output\" [N, 4, 7, 7] "
                  "attend over different lengths; both models must read the same tokens");
  LossInputs rows;
  rows.student_feature = torch::randn({4, 8});
  rows.teacher_feature = torch::randn({3, 8});
  KD_EXPECT_ERROR(make_loss_term(Options("correlation"))->compute(rows),
                  "loss \"correlation\": teacher tap \"output\" [N, 8] does not have the student's 4 rows");
  KD_EXPECT_ERROR(Distiller({Options("hint").set("student", "")}, Task::classification),
                  "losses[0].student: empty, expected a name");
  KD_EXPECT_ERROR(Distiller({Options("ce"), Options("kl").set("student", "fc1")}, Task::classification),
                  "losses[1].student: loss \"kl\" does not use student (found \"fc1\")");
}

}  // namespace
}  // namespace kd::losses
