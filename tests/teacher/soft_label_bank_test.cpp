#include <gtest/gtest.h>

#include <filesystem>

#include "kd/models/zoo.h"
#include "kd/teacher/teacher_cache.h"
#include "kd/util/fs.h"
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
  ASSERT_TRUE(data.bank);
  EXPECT_FALSE(data.teacher.defined());
  ASSERT_EQ(data.bank->views(), 3);
  ASSERT_EQ(data.bank->rows(), 70);
  EXPECT_FALSE(data.bank->mapped());
  auto augmenter = train::augmenter_for(options, data);
  auto all = torch::arange(70);
  for (int64_t v = 0; v < 3; ++v) {
    auto expected = train::predict(*cache.model, augmenter.view(fold.train.x, all, v));
    auto stored = data.bank->gather(all, v);
    EXPECT_LE((stored - expected).abs().max().item<double>(), teaching.max_error + 1e-7) << "view " << v;
  }
  EXPECT_GT(teaching.max_error, 0.0);
  EXPECT_LT(teaching.max_error, 1e-2);
  EXPECT_EQ(teaching.mode, "bank");
  EXPECT_EQ(teaching.views, 3);
  EXPECT_EQ(teaching.bytes, 70 * 3 * 3 * 2);
  // The views differ from each other and from the rows as they are.
  EXPECT_FALSE(torch::equal(data.bank->gather(all, 0), data.bank->gather(all, 1)));
  EXPECT_FALSE(torch::allclose(data.bank->gather(all, 0), cache.train, 1e-3, 1e-3));
}

TEST(SoftLabelBank, TopKKeepsTheLargestLogitsAndTheRestsMass) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto logits = torch::randn({50, 20}, gen) * 3;
  train::SoftLabelBank bank(50, 2, 20, train::BankStorage().top_k(4));
  auto rows = torch::arange(50);
  bank.store(rows, 1, logits);
  EXPECT_EQ(bank.bytes(), 50 * 2 * (4 * 2 + 4 * 2 + 2));  // float16 values, int16 indices, float16 rest
  auto p = torch::softmax(logits, 1);
  auto q = torch::softmax(bank.gather(rows, 1), 1);
  auto [top_p, top_index] = p.topk(4, 1);
  // The kept outputs keep their probabilities; the others share their total mass evenly.
  EXPECT_TRUE(torch::allclose(q.gather(1, top_index), top_p, 0, 2e-3));
  auto rest_mass = 1 - top_p.sum(1);
  auto others = q.scatter(1, top_index, 0.0);
  EXPECT_TRUE(torch::allclose(others.sum(1), rest_mass, 0, 2e-3));
  EXPECT_TRUE(torch::allclose(std::get<0>(others.max(1)), rest_mass / 16, 0, 2e-3));
  EXPECT_NEAR(bank.mean_rest_mass(), rest_mass.mean().item<double>(), 1e-6);
  EXPECT_NEAR(bank.max_error(), (p - q).abs().max().item<double>(), 1e-6);
  EXPECT_GT(bank.max_error(), 1e-3);  // the others' spread is lost
  EXPECT_TRUE(torch::equal(bank.gather(rows, 1).argmax(1), logits.argmax(1)));
  // Row order of store and gather is the caller's.
  auto some = torch::tensor({7, 3, 49}, torch::kLong);
  EXPECT_TRUE(torch::equal(bank.gather(some, 1), bank.gather(rows, 1).index_select(0, some)));
}

TEST(SoftLabelBank, ABankOverTheMemoryLimitLivesInAMappedFileThatLeavesNothingBehind) {
  auto fold = fold_of(40);
  auto cache = cache_of(fold);
  auto options = train::TrainOptions().augment(data::AugmentOptions().shift(2)).seed(4);
  test::TempDir temp;
  auto dir = temp.path();
  Teaching in_memory, in_file;
  auto memory = distill_train_data(fold, cache, options, 2, in_memory, train::BankStorage());
  auto mapped = distill_train_data(fold, cache, options, 2, in_file,
                                   train::BankStorage().memory_limit(100).spill_dir(dir.string()));
  EXPECT_FALSE(memory.bank->mapped());
  EXPECT_TRUE(mapped.bank->mapped());
  EXPECT_TRUE(in_file.mapped);
  EXPECT_EQ(in_file.to_json()["storage"], "mapped file");
  EXPECT_EQ(in_memory.to_json()["storage"], "memory");
  auto all = torch::arange(40);
  for (int64_t v = 0; v < 2; ++v) EXPECT_TRUE(torch::equal(memory.bank->gather(all, v), mapped.bank->gather(all, v)));
  EXPECT_TRUE(std::filesystem::is_empty(dir));  // unlinked once mapped
  // A folder not made yet is made; one that cannot be (under a file) is an error naming it.
  auto fresh = distill_train_data(fold, cache, options, 2, in_file,
                                  train::BankStorage().memory_limit(0).spill_dir((dir / "fold-2").string()));
  EXPECT_TRUE(fresh.bank->mapped());
  write_file_atomic(dir / "file", "x");
  KD_EXPECT_ERROR(distill_train_data(fold, cache, options, 2, in_file, train::BankStorage().memory_limit(0).spill_dir(
                                                                           (dir / "file" / "sub").string())),
                  "file/sub: cannot create the file of the soft-label bank");
}

TEST(SoftLabelBank, ASharedBankIsUsedAsItIsAndTopKNeedsFewerLogitsThanOutputs) {
  auto fold = fold_of(30);
  auto cache = cache_of(fold);
  auto options = train::TrainOptions().augment(data::AugmentOptions().shift(1)).seed(4);
  Teaching first, second;
  auto data = distill_train_data(fold, cache, options, 2, first, train::BankStorage().top_k(2));
  EXPECT_EQ(first.top_k, 2);
  EXPECT_GT(first.rest_mass, 0.0);
  auto again = distill_train_data(fold, cache, options, 2, second, {}, data.bank);
  EXPECT_EQ(again.bank.get(), data.bank.get());
  EXPECT_EQ(second.seconds, 0.0);
  EXPECT_EQ(second.top_k, 2);
  KD_EXPECT_ERROR(distill_train_data(fold, cache, options, 2, first, train::BankStorage().top_k(3)),
                  "distill.bank.top_k: 3 is not below the teacher's 3 outputs");
}

TEST(SoftLabelBank, WithoutAugmentationTheCacheTeachesAndMixingNeedsALiveTeacher) {
  auto fold = fold_of(20);
  auto cache = cache_of(fold);
  Teaching teaching;
  auto plain = distill_train_data(fold, cache, train::TrainOptions(), 4, teaching);
  EXPECT_FALSE(plain.bank);
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
