// copy_from_teacher: a narrower zoo student started from its teacher, by leading slices or by the
// teacher's most important units, with each layer's inputs following the previous layer's choice.
#include "kd/models/init.h"

#include <gtest/gtest.h>

#include <map>

#include "kd/models/zoo.h"
#include "test_util.h"

namespace kd::models {
namespace {

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
  auto report = copy_from_teacher(*student, *teacher, "importance");
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
  auto leading = copy_from_teacher(*student, *teacher, "leading");
  EXPECT_EQ(leading.selected_layers, 0);
  EXPECT_TRUE(torch::equal(by_name(*student)["conv2.weight"], t["conv2.weight"].slice(0, 0, 4).slice(1, 0, 3)));
  KD_EXPECT_ERROR(copy_from_teacher(*student, *teacher, "largest"), "student.init.units: \"largest\" is not leading or importance");
}

TEST(TeacherInit, ResidualNetworksTakeLeadingSlices) {
  torch::manual_seed(4);
  auto teacher = build_zoo_model(ZooSpec().arch("resnet").depth(8).width(8), {1, 8, 8}, 3);
  auto student = build_zoo_model(ZooSpec().arch("resnet").depth(8).width(4), {1, 8, 8}, 3);
  auto report = copy_from_teacher(*student, *teacher, "importance");
  EXPECT_EQ(report.selected_layers, 0);
  EXPECT_TRUE(torch::equal(by_name(*student).at("stem.weight"), by_name(*teacher).at("stem.weight").slice(0, 0, 4)));
}

}  // namespace
}  // namespace kd::models
