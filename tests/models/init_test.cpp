// copy_from_teacher: a narrower zoo student started from its teacher, by leading slices or by the
// teacher's most important units, with each layer's inputs following the previous layer's choice.
#include "kd/models/init.h"

#include <gtest/gtest.h>

#include <map>

#include "kd/models/zoo.h"
#include "test_util.h"

namespace kd::models {
namespace {

InitOptions with_units(const std::string& units) {
  InitOptions options;
  options.units = units;
  return options;
}

std::map<std::string, torch::Tensor> by_name(Model& model) {
  std::map<std::string, torch::Tensor> out;
  for (auto& [name, tensor] : model.state()) out[name] = tensor;
  return out;
}

TEST(TeacherInit, ImportanceKeepsTheStrongestUnitsAndTheirInputsDownTheChain) {
  torch::manual_seed(3);
  auto teacher = build_zoo_model(ZooSpec().arch("cnn").channels({6, 8}).batch_norm(true).hidden({5}), {1, 8, 8}, 3);
  auto student = build_zoo_model(ZooSpec().arch("cnn").channels({3, 4}).batch_norm(true).hidden({2}), {1, 8, 8}, 3);
  auto t = by_name(*teacher);
  {
    torch::NoGradGuard no_grad;
    // Channels 1, 4 and 5 of conv1 the strongest, in that order of norm: kept in the teacher's order.
    t["conv1.weight"].mul_(0.01);
    t["conv1.weight"][4].fill_(3.0);
    t["conv1.weight"][1].fill_(2.0);
    t["conv1.weight"][5].fill_(1.0);
    for (auto& [name, tensor] : t) {
      if (tensor.is_floating_point() && tensor.dim() == 1) tensor.copy_(torch::randn_like(tensor));
    }
  }
  auto report = copy_from_teacher(*student, *teacher, with_units("importance"));
  auto s = by_name(*student);
  EXPECT_EQ(report.tensors, static_cast<int64_t>(s.size()));  // every student tensor has a teacher tensor
  EXPECT_EQ(report.selected_layers, 3);                       // conv1, conv2, fc1 (head keeps its 3 outputs)
  ASSERT_FALSE(report.lines.empty());
  EXPECT_EQ(report.lines[0], "conv1: 3 of 6 units by importance");
  torch::Tensor kept = torch::tensor({1, 4, 5});
  EXPECT_TRUE(torch::equal(s["conv1.weight"], t["conv1.weight"].index_select(0, kept)));
  EXPECT_TRUE(torch::equal(s["conv1_bn.running_mean"], t["conv1_bn.running_mean"].index_select(0, kept)));
  EXPECT_TRUE(torch::equal(s["conv1_bn.weight"], t["conv1_bn.weight"].index_select(0, kept)));
  // conv2 reads conv1's kept channels; its own 4 of 8 are the largest by L1 norm over those inputs.
  torch::Tensor conv2 = t["conv2.weight"].index_select(1, kept);
  torch::Tensor conv2_kept = std::get<0>(torch::sort(std::get<1>(torch::topk(conv2.abs().flatten(1).sum(1), 4))));
  EXPECT_TRUE(torch::equal(s["conv2.weight"], conv2.index_select(0, conv2_kept)));
  EXPECT_TRUE(torch::equal(s["conv2_bn.bias"], t["conv2_bn.bias"].index_select(0, conv2_kept)));
  // fc1 after global pooling reads conv2's kept channels; the head all its outputs.
  EXPECT_EQ(s["fc1.weight"].size(1), 4);
  torch::Tensor fc1 = t["fc1.weight"].index_select(1, conv2_kept);
  torch::Tensor fc1_kept = std::get<0>(torch::sort(std::get<1>(torch::topk(fc1.abs().sum(1), 2))));
  EXPECT_TRUE(torch::equal(s["fc1.weight"], fc1.index_select(0, fc1_kept)));
  EXPECT_TRUE(torch::equal(s["head.weight"], t["head.weight"].index_select(1, fc1_kept)));
  EXPECT_TRUE(torch::equal(s["head.bias"], t["head.bias"]));

  // Leading slices: the first units and inputs.
  auto leading = copy_from_teacher(*student, *teacher, with_units("leading"));
  EXPECT_EQ(leading.selected_layers, 0);
  EXPECT_TRUE(torch::equal(by_name(*student)["conv2.weight"], t["conv2.weight"].slice(0, 0, 4).slice(1, 0, 3)));
  KD_EXPECT_ERROR(copy_from_teacher(*student, *teacher, with_units("largest")),
                  "student.init.units: \"largest\" is not leading, importance, variance or svd");
}

TEST(TeacherInit, ResidualNetworksTakeLeadingSlices) {
  torch::manual_seed(4);
  auto teacher = build_zoo_model(ZooSpec().arch("resnet").depth(8).width(8), {1, 8, 8}, 3);
  auto student = build_zoo_model(ZooSpec().arch("resnet").depth(8).width(4), {1, 8, 8}, 3);
  auto report = copy_from_teacher(*student, *teacher, with_units("importance"));
  EXPECT_EQ(report.selected_layers, 0);
  EXPECT_TRUE(torch::equal(by_name(*student).at("stem.weight"), by_name(*teacher).at("stem.weight").slice(0, 0, 4)));
}

// Layers by step or by name: a one-hidden-layer student of a three-hidden-layer teacher.
TEST(TeacherInit, LayersEveryKOrByName) {
  torch::manual_seed(5);
  auto teacher = build_zoo_model(ZooSpec().arch("mlp").hidden({6, 6, 6}), {4}, 3);
  auto student = build_zoo_model(ZooSpec().arch("mlp").hidden({6, 6}), {4}, 3);
  auto t = by_name(*teacher);
  InitOptions every;
  every.every = 2;  // fc1 <- fc1, fc2 <- fc3 (DistilBERT's every other layer)
  auto report = copy_from_teacher(*student, *teacher, every);
  auto s = by_name(*student);
  EXPECT_TRUE(torch::equal(s["fc1.weight"], t["fc1.weight"]));
  EXPECT_TRUE(torch::equal(s["fc2.weight"], t["fc3.weight"]));
  EXPECT_TRUE(torch::equal(s["fc2.bias"], t["fc3.bias"]));
  EXPECT_TRUE(torch::equal(s["head.weight"], t["head.weight"]));
  EXPECT_EQ(report.lines, std::vector<std::string>{"fc2 <- teacher fc3"});
  EXPECT_EQ(report.tensors, static_cast<int64_t>(s.size()));

  InitOptions named;
  named.layer_map = {{"fc1", "fc2"}};
  copy_from_teacher(*student, *teacher, named);
  s = by_name(*student);
  EXPECT_TRUE(torch::equal(s["fc1.weight"], t["fc2.weight"].slice(1, 0, 4)));  // its 4 inputs of fc2's 6
  EXPECT_TRUE(torch::equal(s["fc2.weight"], t["fc2.weight"]));
  named.layer_map = {{"fc1", "fc9"}};
  KD_EXPECT_ERROR(copy_from_teacher(*student, *teacher, named),
                  "student.init.layers: \"fc9\" is not a layer of the teacher (did you mean \"fc1\"?) (its layers: "
                  "fc1, fc2, fc3, head)");
  named.layer_map = {{"conv1", "fc1"}};
  KD_EXPECT_ERROR(copy_from_teacher(*student, *teacher, named), "\"conv1\" is not a layer of the student");
}

// units: variance keeps the units whose activations vary most on the sample, here made to be 4, 0, 2.
TEST(TeacherInit, VarianceKeepsTheUnitsThatVaryMostOnTheData) {
  torch::manual_seed(6);
  auto teacher = build_zoo_model(ZooSpec().arch("mlp").hidden({5}), {4}, 2);
  auto student = build_zoo_model(ZooSpec().arch("mlp").hidden({3}), {4}, 2);
  auto t = by_name(*teacher);
  {
    torch::NoGradGuard no_grad;
    t["fc1.weight"].copy_(torch::rand({5, 4}) * 0.01);  // L1 importance would keep others
    t["fc1.weight"][1].copy_(torch::tensor({5.0, 5.0, 0.0, 5.0}));  // the largest by L1 norm, nearly constant
    t["fc1.bias"].fill_(1.0);
    t["fc1.weight"][4].copy_(torch::tensor({3.0, -3.0, 0.0, 0.0}));
    t["fc1.weight"][0].copy_(torch::tensor({0.0, 2.0, 0.0, 0.0}));
    t["fc1.weight"][2].copy_(torch::tensor({0.0, 0.0, 1.0, 0.0}));
  }
  // Inputs 0 and 1 move against each other and input 3 is constant: unit 1 (5 x0 + 5 x1 + 5 x3) hardly
  // varies; units 4 (3 x0 - 3 x1), 0 (2 x1) and 2 (x2) do, and unit 3's weights are tiny.
  torch::Tensor x = torch::randn({600, 4});
  x.select(1, 3).fill_(0.5);
  x.select(1, 1).copy_(-x.select(1, 0) + 0.01 * torch::randn({600}));
  KD_EXPECT_ERROR(copy_from_teacher(*student, *teacher, with_units("variance")),
                  "student.init.units: variance needs training rows to measure the teacher's activations on");
  auto report = copy_from_teacher(*student, *teacher, with_units("variance"), x);
  ASSERT_EQ(report.lines.size(), 1u);
  EXPECT_EQ(report.lines[0], "fc1: 3 of 5 units by activation variance");
  torch::Tensor kept = torch::tensor({0, 2, 4});
  EXPECT_TRUE(torch::equal(by_name(*student)["fc1.weight"], t["fc1.weight"].index_select(0, kept)));
  EXPECT_TRUE(torch::equal(by_name(*student)["head.weight"], t["head.weight"].index_select(1, kept)));
}

// units: svd: each narrower dense layer keeps its outputs' projection on its leading left singular
// vectors, and the next layer reads them back through those vectors.
TEST(TeacherInit, SvdProjectsDenseLayersOnTheirLeadingSingularVectors) {
  torch::manual_seed(7);
  auto teacher = build_zoo_model(ZooSpec().arch("mlp").hidden({6, 6}), {4}, 2);
  auto student = build_zoo_model(ZooSpec().arch("mlp").hidden({3, 3}), {4}, 2);
  auto t = by_name(*teacher);
  auto report = copy_from_teacher(*student, *teacher, with_units("svd"));
  auto s = by_name(*student);
  auto basis = [](const torch::Tensor& w) {
    return std::get<0>(torch::linalg_svd(w.to(torch::kDouble), false)).narrow(1, 0, 3).to(torch::kFloat);
  };
  torch::Tensor u1 = basis(t["fc1.weight"]);
  EXPECT_TRUE(torch::allclose(s["fc1.weight"], u1.t().matmul(t["fc1.weight"]), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(s["fc1.bias"], u1.t().matmul(t["fc1.bias"]), 1e-5, 1e-6));
  torch::Tensor fc2 = t["fc2.weight"].matmul(u1);
  torch::Tensor u2 = basis(fc2);
  EXPECT_TRUE(torch::allclose(s["fc2.weight"], u2.t().matmul(fc2), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(s["head.weight"], t["head.weight"].matmul(u2), 1e-5, 1e-6));
  EXPECT_TRUE(torch::equal(s["head.bias"], t["head.bias"]));
  EXPECT_EQ(report.selected_layers, 2);
  ASSERT_EQ(report.lines.size(), 2u);
  EXPECT_EQ(report.lines[0].rfind("fc1: 3 of 6 units as a truncated SVD (", 0), 0u) << report.lines[0];
  // Without the activation, the two layers' product is the teacher's rank-3 approximation of it.
  torch::Tensor full = t["fc2.weight"].matmul(t["fc1.weight"]);
  torch::Tensor projected = u2.matmul(s["fc2.weight"]).matmul(s["fc1.weight"]);
  EXPECT_LT((projected - full).norm().item<double>(), full.norm().item<double>());
}

}  // namespace
}  // namespace kd::models
