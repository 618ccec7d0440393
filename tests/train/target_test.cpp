#include "kd/train/target.h"

#include <gtest/gtest.h>

#include "kd/train/optim.h"
#include "test_util.h"

namespace kd::train {
namespace {

TEST(Target, RelativeToTeacherInPoints) {
  auto t = Target::parse("accuracy >= teacher - 0.5", "distill.target");
  EXPECT_TRUE(t.needs_teacher());
  EXPECT_DOUBLE_EQ(t.threshold(91.0), 90.5);
  EXPECT_TRUE(t.reached(90.5, 91.0));
  EXPECT_FALSE(t.reached(90.4, 91.0));
}

TEST(Target, AbsoluteAndFactor) {
  auto rmse = Target::parse("rmse<=55", "distill.target");
  EXPECT_FALSE(rmse.needs_teacher());
  EXPECT_TRUE(rmse.reached(54.9, 0));
  EXPECT_FALSE(rmse.reached(55.1, 0));
  auto error = Target::parse("error <= 1.05 * teacher", "distill.target");
  EXPECT_DOUBLE_EQ(error.threshold(10.0), 10.5);
}

TEST(Target, MetricValuesInPercent) {
  report::Metrics m = {{"accuracy", 0.9}, {"macro_f1", 0.5}, {"rmse", 3.0}};
  EXPECT_DOUBLE_EQ(metric_value(m, "accuracy"), 90.0);
  EXPECT_NEAR(metric_value(m, "error"), 10.0, 1e-12);
  EXPECT_DOUBLE_EQ(metric_value(m, "rmse"), 3.0);
  EXPECT_TRUE(higher_is_better("accuracy"));
  EXPECT_FALSE(higher_is_better("rmse"));
}

TEST(Target, MalformedExpressions) {
  KD_EXPECT_ERROR(Target::parse("acuracy >= 90", "distill.target"), "unknown metric \"acuracy\" (did you mean accuracy?)");
  KD_EXPECT_ERROR(Target::parse("accuracy = 90", "distill.target"), "expected a comparison >=, >, <= or <");
  KD_EXPECT_ERROR(Target::parse("accuracy >= teachr - 1", "distill.target"), "expected a number, found \"teachr\"");
  KD_EXPECT_ERROR(Target::parse("accuracy >= teacher -", "distill.target"), "expected a number, found the end");
  KD_EXPECT_ERROR(Target::parse("", "distill.target"), "distill.target: \"\": expected METRIC OP VALUE");
}

TEST(Schedule, ShapesOfTheSchedules) {
  LrSchedule cosine(ScheduleOptions().name("cosine"), 0.1, 100, 10);
  EXPECT_DOUBLE_EQ(cosine.lr_at(0), 0.1);
  EXPECT_NEAR(cosine.lr_at(50), 0.05, 1e-12);
  LrSchedule onecycle(ScheduleOptions().name("onecycle"), 0.1, 100, 10);
  EXPECT_NEAR(onecycle.lr_at(0), 0.1 / 25, 1e-12);
  EXPECT_NEAR(onecycle.lr_at(30), 0.1, 1e-12);
  EXPECT_LT(onecycle.lr_at(99), 0.001);
  LrSchedule step(ScheduleOptions().name("step").step_epochs(2).gamma(0.5), 0.1, 100, 10);
  EXPECT_DOUBLE_EQ(step.lr_at(19), 0.1);
  EXPECT_DOUBLE_EQ(step.lr_at(20), 0.05);
  LrSchedule warm(ScheduleOptions().name("none").warmup_fraction(0.1), 0.1, 100, 10);
  EXPECT_NEAR(warm.lr_at(4), 0.05, 1e-12);
  EXPECT_DOUBLE_EQ(warm.lr_at(50), 0.1);
}

TEST(Optimizer, BadOptions) {
  KD_EXPECT_ERROR(validate(OptimizerOptions().name("sgdd"), "distill.optimizer"),
                  "distill.optimizer.name: \"sgdd\" is not one of sgd, adam, adamw (did you mean sgd?)");
  KD_EXPECT_ERROR(validate(OptimizerOptions().lr(-1), "distill.optimizer"), "distill.optimizer.lr: -1 is not a positive");
  KD_EXPECT_ERROR(validate(ScheduleOptions().name("cosin"), "distill.schedule"), "(did you mean cosine?)");
}

TEST(Optimizer, SgdMinimisesAQuadratic) {
  auto w = torch::tensor({3.0, -2.0}).requires_grad_(true);
  auto optimizer = make_optimizer({w}, OptimizerOptions().name("sgd").lr(0.1).momentum(0.9).nesterov(true));
  for (int i = 0; i < 200; ++i) {
    optimizer->zero_grad();
    w.pow(2).sum().backward();
    optimizer->step();
  }
  EXPECT_LT(w.abs().max().item<double>(), 1e-3);
}

}  // namespace
}  // namespace kd::train
