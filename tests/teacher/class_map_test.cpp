// A teacher of other classes through adapt_teacher's class groups: each class of the run gets the log
// of its teacher classes' summed probability, so the mapped softmax is the teacher's distribution
// restricted to those classes and renormalised; taps pass through.
#include <gtest/gtest.h>

#include "kd/models/zoo.h"
#include "kd/teacher/teacher_input.h"
#include "test_util.h"

namespace kd::teacher {
namespace {

TEST(ClassMap, GroupsSumTheTeachersProbabilities) {
  torch::manual_seed(8);
  io::LoadedModel loaded;
  loaded.model = models::build_zoo_model(models::ZooSpec().arch("mlp").hidden({6}), {5}, 4);
  loaded.model->set_training(false);
  auto options = TeacherInputOptions().input("normalized").outputs("logits").class_groups({{3}, {0, 2}}).teacher_classes(4);
  torch::Tensor x = torch::randn({7, 5});
  auto adapted = adapt_teacher(loaded, nullptr, Task::classification, options, x);
  torch::NoGradGuard no_grad;
  torch::Tensor p = torch::softmax(loaded.model->forward(x), 1);
  torch::Tensor mapped = torch::softmax(adapted.model->forward(x), 1);
  torch::Tensor expected = torch::stack({p.select(1, 3), p.select(1, 0) + p.select(1, 2)}, 1);
  expected = expected / expected.sum(1, true);
  EXPECT_LT((mapped - expected).abs().max().item<double>(), 1e-6);
  EXPECT_EQ(adapted.evidence["classes"], nlohmann::json::parse("[[3], [0, 2]]"));
  auto tapped = adapted.model->forward_taps(x, {"fc1_act", "output"});
  EXPECT_EQ(tapped.taps[0].sizes(), (std::vector<int64_t>{7, 6}));
  EXPECT_LT((tapped.taps[1] - adapted.model->forward(x)).abs().max().item<double>(), 1e-5);  // the mapped outputs
}

}  // namespace
}  // namespace kd::teacher
