#include "kd/models/ensemble.h"

#include <gtest/gtest.h>

#include "kd/models/zoo.h"
#include "test_util.h"

namespace kd::models {
namespace {

std::vector<ModelPtr> two_members() {
  torch::manual_seed(1);
  auto a = build_zoo_model(ZooSpec().arch("mlp").hidden({6}), {5}, 4);
  torch::manual_seed(2);
  auto b = build_zoo_model(ZooSpec().arch("mlp").hidden({3}), {5}, 4);
  return {a, b};
}

TEST(Ensemble, AveragesProbabilitiesOrLogits) {
  auto members = two_members();
  auto x = torch::randn({7, 5});
  auto za = members[0]->forward(x), zb = members[1]->forward(x);
  EnsembleModel by_probability(members, EnsembleCombine::probabilities);
  auto mean = (torch::softmax(za, 1) + torch::softmax(zb, 1)) / 2;
  auto out = by_probability.forward(x);
  EXPECT_TRUE(torch::allclose(torch::softmax(out, 1), mean, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(out.exp().sum(1), torch::ones({7}), 1e-5, 1e-5));  // log-probabilities
  EnsembleModel by_logit(members, EnsembleCombine::logits);
  EXPECT_TRUE(torch::allclose(by_logit.forward(x), (za + zb) / 2, 1e-5, 1e-6));
  // Weights 3 : 1, normalised.
  EnsembleModel weighted(members, EnsembleCombine::probabilities, {3, 1});
  auto expected = 0.75 * torch::softmax(za, 1) + 0.25 * torch::softmax(zb, 1);
  EXPECT_TRUE(torch::allclose(torch::softmax(weighted.forward(x), 1), expected, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(EnsembleModel(members, EnsembleCombine::logits, {3, 1}).forward(x), 0.75 * za + 0.25 * zb,
                              1e-5, 1e-6));
  // Per row, each member weighted by its largest probability on that row.
  auto pa = torch::softmax(za, 1), pb = torch::softmax(zb, 1);
  auto ca = std::get<0>(pa.max(1, true)), cb = std::get<0>(pb.max(1, true));
  EnsembleModel confident(members, EnsembleCombine::confidence);
  EXPECT_TRUE(torch::allclose(torch::softmax(confident.forward(x), 1), (ca * pa + cb * pb) / (ca + cb), 1e-5, 1e-6));
}

// combine: correctness: member a always right, member b right only when it predicts class 0; each row's
// weights are the members' smoothed precision for the class each predicts there.
TEST(Ensemble, CorrectnessWeighsEachRowByTheMembersPrecision) {
  auto members = two_members();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({40, 5});
  auto za = members[0]->forward(x), zb = members[1]->forward(x);
  torch::Tensor labels = za.argmax(1);  // a is right on every row
  EnsembleModel ensemble(members, EnsembleCombine::correctness);
  torch::Tensor precision = ensemble.fit_precision(x, labels, 4, 16);  // in batches of 16: 16, 16, 8
  ASSERT_EQ(precision.sizes(), (std::vector<int64_t>{2, 4}));
  torch::Tensor pa_class = za.argmax(1), pb_class = zb.argmax(1);
  for (int64_t c = 0; c < 4; ++c) {
    double made_a = pa_class.eq(c).sum().item<double>();
    EXPECT_NEAR(precision[0][c].item<double>(), (made_a + 1) / (made_a + 2), 1e-6);
    double made_b = pb_class.eq(c).sum().item<double>();
    double right_b = (pb_class.eq(c) & labels.eq(c)).sum().item<double>();
    EXPECT_NEAR(precision[1][c].item<double>(), (right_b + 1) / (made_b + 2), 1e-6);
  }
  auto wa = precision[0].index_select(0, pa_class).unsqueeze(1), wb = precision[1].index_select(0, pb_class).unsqueeze(1);
  auto expected = (wa * torch::softmax(za, 1) + wb * torch::softmax(zb, 1)) / (wa + wb);
  EXPECT_TRUE(torch::allclose(torch::softmax(ensemble.forward(x), 1), expected, 1e-5, 1e-6));
}

// Feature terms on an ensemble teacher read one member's taps, "m<m>.<tap>"; the output is the combined one.
TEST(Ensemble, TapsAreEachMembersByPrefix) {
  auto members = two_members();
  EnsembleModel ensemble(members, EnsembleCombine::probabilities);
  auto names = ensemble.tap_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "m0.fc1_act"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "m1.fc1_act"), names.end());
  torch::NoGradGuard no_grad;
  auto x = torch::randn({5, 5});
  auto tapped = ensemble.forward_taps(x, {"m1.fc1_act", "output", "m0.fc1_act"});
  EXPECT_TRUE(torch::allclose(tapped.output, ensemble.forward(x)));
  EXPECT_TRUE(torch::equal(tapped.taps[0], members[1]->forward_taps(x, {"fc1_act"}).taps[0]));
  EXPECT_EQ(tapped.taps[0].size(1), 3);  // member 1 has 3 hidden units, member 0 six
  EXPECT_TRUE(torch::equal(tapped.taps[1], tapped.output));
  EXPECT_EQ(tapped.taps[2].size(1), 6);
  KD_EXPECT_ERROR(ensemble.forward_taps(x, {"fc1_act"}), "tap \"fc1_act\": the ensemble model has no such tap");
}

TEST(Ensemble, SizeAndStateAreTheMembersTogether) {
  auto members = two_members();
  EnsembleModel ensemble(members, EnsembleCombine::probabilities);
  auto sa = members[0]->summary({5}), sb = members[1]->summary({5});
  auto s = ensemble.summary({5});
  EXPECT_EQ(s.params, sa.params + sb.params);
  EXPECT_EQ(s.macs, sa.macs + sb.macs);
  EXPECT_EQ(s.layers.size(), sa.layers.size() + sb.layers.size());
  EXPECT_EQ(count_params(ensemble), sa.params + sb.params);
  EXPECT_EQ(ensemble.kind(), "ensemble");
  // state names say the member; load_state puts each member's tensors back.
  auto state = ensemble.state();
  EXPECT_EQ(state.size(), members[0]->state().size() + members[1]->state().size());
  EXPECT_EQ(state[0].first.substr(0, 3), "m0.");
  auto x = torch::randn({3, 5});
  auto before = ensemble.forward(x);
  NamedTensors saved;
  for (auto& [name, tensor] : state) saved.emplace_back(name, tensor.clone());
  for (auto& p : ensemble.parameters()) p.data().zero_();
  ensemble.load_state(saved);
  EXPECT_TRUE(torch::allclose(ensemble.forward(x), before));
  KD_EXPECT_ERROR(parse_ensemble_combine("median", "teacher.combine"),
                  "teacher.combine: \"median\" is not a way to combine teachers, expected probabilities, logits, confidence or "
                  "correctness");
}

}  // namespace
}  // namespace kd::models
