#include <gtest/gtest.h>

#include "kd/models/zoo.h"
#include "kd/teacher/teacher_cache.h"
#include "test_util.h"

namespace kd::teacher {
namespace {

data::DataFold fold_of(int64_t rows) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  data::DataFold fold;
  fold.train.x = torch::rand({rows, 1, 8, 8}, gen);
  fold.train.y = torch::randint(0, 3, {rows}, gen, torch::kLong);
  fold.labeled = torch::ones({rows}, torch::kBool);
  return fold;
}

TeacherCache cache_of(const data::DataFold& fold) {
  torch::manual_seed(0);
  TeacherCache cache;
  cache.model = models::build_zoo_model(models::ZooSpec().arch("cnn").channels({4}), {1, 8, 8}, 3);
  cache.model->set_training(false);
  cache.train = train::predict(*cache.model, fold.train.x);
  return cache;
}

TEST(SoftLabelBank, HoldsTheTeachersOutputsOnEachViewOfEachRow) {
  auto fold = fold_of(70);
  auto cache = cache_of(fold);
  auto options = train::TrainOptions().augment(data::AugmentOptions().shift(2).flip(true)).seed(4);
  Teaching teaching;
  auto data = distill_train_data(fold, cache, options, 3, teaching);
  ASSERT_EQ(data.views, 3);
  ASSERT_EQ(data.teacher.sizes(), (std::vector<int64_t>{70, 3, 3}));
  EXPECT_EQ(data.teacher.scalar_type(), torch::kHalf);
  auto augmenter = train::augmenter_for(options, data);
  for (int64_t v = 0; v < 3; ++v) {
    auto expected = train::predict(*cache.model, augmenter.view(fold.train.x, torch::arange(70), v));
    auto stored = data.teacher.select(1, v).to(torch::kFloat);
    EXPECT_LE((stored - expected).abs().max().item<double>(), teaching.float16_error + 1e-7) << "view " << v;
  }
  EXPECT_LT(teaching.float16_error, 1e-2);
  EXPECT_EQ(teaching.mode, "bank");
  EXPECT_EQ(teaching.views, 3);
  EXPECT_EQ(teaching.bytes, 70 * 3 * 3 * 2);
  // The views differ from each other and from the rows as they are.
  EXPECT_FALSE(torch::equal(data.teacher.select(1, 0), data.teacher.select(1, 1)));
  EXPECT_FALSE(torch::allclose(data.teacher.select(1, 0).to(torch::kFloat), cache.train, 1e-3, 1e-3));
}

TEST(SoftLabelBank, WithoutAugmentationTheCacheTeachesAndMixingNeedsALiveTeacher) {
  auto fold = fold_of(20);
  auto cache = cache_of(fold);
  Teaching teaching;
  auto plain = distill_train_data(fold, cache, train::TrainOptions(), 4, teaching);
  EXPECT_EQ(plain.views, 0);
  EXPECT_TRUE(torch::equal(plain.teacher, cache.train));
  EXPECT_EQ(teaching.mode, "cache");
  auto mixing = distill_train_data(fold, cache, train::TrainOptions().augment(data::AugmentOptions().shift(1).mixup(0.2)), 0,
                                   teaching);
  EXPECT_FALSE(mixing.teacher.defined());
  EXPECT_EQ(teaching.mode, "online");
  auto online = distill_train_data(fold, cache, train::TrainOptions().augment(data::AugmentOptions().shift(1)), 0, teaching);
  EXPECT_FALSE(online.teacher.defined());
  EXPECT_EQ(teaching.mode, "online");
}

}  // namespace
}  // namespace kd::teacher
