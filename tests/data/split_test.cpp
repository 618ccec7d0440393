#include "kd/data/split.h"

#include <gtest/gtest.h>

#include <set>

#include "kd/util/error.h"
#include "test_util.h"

namespace kd::data {
namespace {

// 100 rows: class 0 x60, class 1 x30, class 2 x10, interleaved.
torch::Tensor three_class_labels() {
  std::vector<int64_t> y;
  for (int i = 0; i < 100; ++i) y.push_back(i % 10 == 9 ? 2 : (i % 10 < 6 ? 0 : 1));
  return torch::tensor(y, torch::kLong);
}

int64_t count_class(const torch::Tensor& labels, const std::vector<int64_t>& rows, int64_t cls) {
  int64_t n = 0;
  for (auto r : rows) n += labels[r].item<int64_t>() == cls;
  return n;
}

TEST(Split, HoldoutIsStratifiedAndExact) {
  auto y = three_class_labels();
  auto split = holdout_split(100, y, 0.2, 7);
  EXPECT_EQ(split.val.size(), 20u);
  EXPECT_EQ(split.train.size(), 80u);
  EXPECT_EQ(count_class(y, split.val, 0), 12);
  EXPECT_EQ(count_class(y, split.val, 1), 6);
  EXPECT_EQ(count_class(y, split.val, 2), 2);
  std::set<int64_t> all(split.train.begin(), split.train.end());
  all.insert(split.val.begin(), split.val.end());
  EXPECT_EQ(all.size(), 100u);
}

TEST(Split, HoldoutDeterministicBySeed) {
  auto y = three_class_labels();
  EXPECT_EQ(holdout_split(100, y, 0.2, 7).val, holdout_split(100, y, 0.2, 7).val);
  EXPECT_NE(holdout_split(100, y, 0.2, 7).val, holdout_split(100, y, 0.2, 8).val);
}

TEST(Split, HoldoutUnstratifiedForRegression) {
  auto split = holdout_split(50, torch::randn({50}), 0.3, 1);
  EXPECT_EQ(split.val.size(), 15u);
  EXPECT_EQ(split.train.size(), 35u);
}

TEST(Split, KFoldCoversEveryRowOnce) {
  auto y = three_class_labels();
  auto folds = kfold_split(100, y, 5, 3);
  ASSERT_EQ(folds.size(), 5u);
  std::vector<int> seen(100, 0);
  for (const auto& f : folds) {
    EXPECT_EQ(f.val.size(), 20u);
    EXPECT_EQ(f.train.size() + f.val.size(), 100u);
    for (auto r : f.val) seen[r]++;
    // Each class is spread evenly: 60/5, 30/5, 10/5 per fold.
    EXPECT_EQ(count_class(y, f.val, 0), 12);
    EXPECT_EQ(count_class(y, f.val, 1), 6);
    EXPECT_EQ(count_class(y, f.val, 2), 2);
  }
  for (int r = 0; r < 100; ++r) EXPECT_EQ(seen[r], 1) << "row " << r;
}

TEST(Split, KFoldSizesDifferByAtMostOne) {
  auto folds = kfold_split(23, torch::Tensor(), 4, 0);
  for (const auto& f : folds) EXPECT_TRUE(f.val.size() == 5u || f.val.size() == 6u);
}

TEST(Split, SubsampleKeepsProportions) {
  auto y = three_class_labels();
  auto rows = subsample(100, y, 50, 11);
  EXPECT_EQ(rows.size(), 50u);
  EXPECT_EQ(count_class(y, rows, 0), 30);
  EXPECT_EQ(count_class(y, rows, 2), 5);
}

TEST(Split, BadFractionsAndFolds) {
  auto y = three_class_labels();
  KD_EXPECT_ERROR(holdout_split(100, y, 1.5, 0), "data.val_fraction: 1.5 is outside (0, 1)");
  KD_EXPECT_ERROR(holdout_split(3, y.slice(0, 0, 3), 0.1, 0), "leaves 0 for validation");
  KD_EXPECT_ERROR(kfold_split(100, y, 1, 0), "data.folds: 1 is too few, expected at least 2 (0, the default: one train/validation split)");
  KD_EXPECT_ERROR(kfold_split(4, torch::Tensor(), 5, 0), "data.folds: 5 folds for 4 rows");
}

}  // namespace
}  // namespace kd::data
