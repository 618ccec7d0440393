#include "kd/recipe/recipe.h"

#include <gtest/gtest.h>

#include "kd/util/fs.h"
#include "test_util.h"

namespace kd::recipe {
namespace {

TEST(Recipe, SetNullRemovesAKeySoATrainedTeacherBecomesAFile) {
  test::TempDir dir;
  auto path = (dir / "recipe.yaml").string();
  write_file_atomic(path, "task: classification\ndata: {train: x.csv}\n"
                          "teacher:\n  model: {arch: mlp, hidden: [8]}\n  train: {epochs: 3}\n"
                          "student: {model: {arch: linear}}\n"
                          "distill:\n  augment: {shift: 1, mixup: 0.2}\n  views: online\n");
  auto recipe = load_recipe(path, {"teacher.model=null", "teacher.train=null", "teacher.path=/m/t.kdm"});
  EXPECT_EQ(recipe.run.teacher.paths, std::vector<std::string>{"/m/t.kdm"});
  EXPECT_FALSE(recipe.run.teacher.model.has_value());
  EXPECT_EQ(recipe.run.distill.views, 0);
  EXPECT_EQ(recipe.run.distill.train.augment().shift(), 1);
  EXPECT_DOUBLE_EQ(recipe.run.distill.train.augment().mixup(), 0.2);
  // Without the removal, path and model together are refused.
  KD_EXPECT_ERROR(load_recipe(path, {"teacher.path=/m/t.kdm"}), "give path or model, not both");
}

// Each augmentation word turns its option on at its default strength.
TEST(Recipe, AugmentWordsTakeTheirDefaults) {
  test::TempDir dir;
  auto path = (dir / "recipe.yaml").string();
  write_file_atomic(path, "task: classification\ndata: {train: x.csv}\nteacher: {model: {arch: mlp, hidden: [8]}}\n"
                          "student: {model: {arch: linear}}\ndistill: {augment: noise+feature_dropout}\n");
  auto augment = load_recipe(path, {}).run.distill.train.augment();
  EXPECT_DOUBLE_EQ(augment.noise(), 0.1);
  EXPECT_DOUBLE_EQ(augment.feature_dropout(), 0.1);
  EXPECT_EQ(augment.shift(), 0);
  KD_EXPECT_ERROR(load_recipe(path, {"distill.augment=noise+dropout"}),
                  "distill.augment: \"dropout\" is not one of none, shift, flip, cutout, noise, feature_dropout");
}

}  // namespace
}  // namespace kd::recipe
