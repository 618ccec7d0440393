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

// teacher.classes: learned, on labels that merge and reorder the teacher's six classes into three: the
// projection learned on the sample must recover the merge on rows it has not seen, nearly: a linear map
// of log-probabilities approximates the log of a group's summed probability.
TEST(ClassMap, ALearnedProjectionRecoversAMergeOfClasses) {
  torch::manual_seed(9);
  io::LoadedModel loaded;
  loaded.model = models::build_zoo_model(models::ZooSpec().arch("mlp").hidden({16}), {5}, 6);
  loaded.model->set_training(false);
  for (auto& [name, tensor] : loaded.model->state()) {
    torch::NoGradGuard no_grad;
    if (name.rfind("head.", 0) == 0) tensor.mul_(20);  // a confident teacher, as trained ones are
  }
  torch::Tensor merge = torch::tensor({2, 2, 0, 0, 1, 1}, torch::kLong);  // teacher class -> run class
  auto labels_of = [&](const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    return merge.index_select(0, loaded.model->forward(x).argmax(1));
  };
  torch::Tensor x = torch::randn({800, 5}), fresh = torch::randn({400, 5});
  auto options = TeacherInputOptions().input("normalized").outputs("logits").teacher_classes(6).learned_classes(3);
  auto adapted = adapt_teacher(loaded, nullptr, Task::classification, options, x, labels_of(x));
  torch::NoGradGuard no_grad;
  torch::Tensor out = adapted.model->forward(fresh);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{400, 3}));
  double accuracy = out.argmax(1).eq(labels_of(fresh)).to(torch::kDouble).mean().item<double>();
  EXPECT_GT(accuracy, 0.9);
  const auto& projection = adapted.evidence["class_projection"];
  EXPECT_EQ(projection["rows"], 800);
  EXPECT_EQ(projection["teacher_classes"], 6);
  EXPECT_GT(projection["accuracy"].get<double>(), 0.9);
  EXPECT_NE(adapted.description.find("its 6 classes mapped onto the run's 3 by a projection learned on 800"),
            std::string::npos) << adapted.description;
  // Without labels there is nothing to learn it from.
  EXPECT_EQ(test::error_of([&] { adapt_teacher(loaded, nullptr, Task::classification, options, x); }),
            "teacher.classes: learned needs labelled training rows");
}

}  // namespace
}  // namespace kd::teacher
