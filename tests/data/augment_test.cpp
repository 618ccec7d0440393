#include "kd/data/augment.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace kd::data {
namespace {

torch::Tensor images_of(int64_t n, int64_t c, int64_t h, int64_t w, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::rand({n, c, h, w}, gen) + 0.5;  // all >= 0.5
}

torch::Tensor all_rows(int64_t n) { return torch::arange(n, torch::kLong); }

TEST(Augmenter, ShiftMovesEachImageWithinTheRangeAndFillsWithTheChannelsBackground) {
  auto images = images_of(40, 2, 6, 7, 4);
  // The background of each channel is its smallest training value.
  auto train = images.clone();
  train[0][0][0][0] = 0.1;
  train[0][1][0][0] = 0.2;
  Augmenter augmenter(AugmentOptions().shift(2), train, 3);
  auto shifted = augmenter.view(images, all_rows(40), 0);
  ASSERT_EQ(shifted.sizes(), images.sizes());
  int moved = 0;
  for (int64_t i = 0; i < images.size(0); ++i) {
    auto padded = torch::cat({torch::constant_pad_nd(images[i][0].unsqueeze(0), {2, 2, 2, 2}, 0.1),
                              torch::constant_pad_nd(images[i][1].unsqueeze(0), {2, 2, 2, 2}, 0.2)});
    bool found = false;
    for (int64_t dy = 0; dy <= 4 && !found; ++dy) {
      for (int64_t dx = 0; dx <= 4 && !found; ++dx) {
        if (torch::allclose(shifted[i], padded.narrow(1, dy, 6).narrow(2, dx, 7))) {
          found = true;
          moved += (dy != 2 || dx != 2);
        }
      }
    }
    EXPECT_TRUE(found) << "image " << i << " is not a shift of at most 2 pixels with the background around it";
  }
  EXPECT_GT(moved, 30);  // 24 of 25 offsets move the image
}

TEST(Augmenter, AViewDependsOnlyOnSeedViewAndRowNotOnTheBatch) {
  auto images = images_of(32, 1, 8, 8, 1);
  Augmenter augmenter(AugmentOptions().shift(2).flip(true).cutout(3).noise(0.1), images, 7);
  auto whole = augmenter.view(images, all_rows(32), 5);
  // The same rows in another order and split into other batches give the same views.
  auto order = torch::randperm(32, at::make_generator<at::CPUGeneratorImpl>(2), torch::kLong);
  auto first = order.slice(0, 0, 13), rest = order.slice(0, 13);
  auto a = augmenter.view(images.index_select(0, first), first, 5);
  auto b = augmenter.view(images.index_select(0, rest), rest, 5);
  EXPECT_TRUE(torch::equal(torch::cat({a, b}), whole.index_select(0, order)));
  // Another view, and another seed, give other images.
  EXPECT_FALSE(torch::equal(augmenter.view(images, all_rows(32), 6), whole));
  Augmenter other(AugmentOptions().shift(2).flip(true).cutout(3).noise(0.1), images, 8);
  EXPECT_FALSE(torch::equal(other.view(images, all_rows(32), 5), whole));
  // A fresh augmenter of the same options, rows and seed draws the same views.
  Augmenter again(AugmentOptions().shift(2).flip(true).cutout(3).noise(0.1), images, 7);
  EXPECT_TRUE(torch::equal(again.view(images, all_rows(32), 5), whole));
}

TEST(Augmenter, FlipMirrorsAboutHalfOfTheImages) {
  auto images = images_of(64, 1, 5, 5, 4);
  Augmenter augmenter(AugmentOptions().flip(true), images, 0);
  auto out = augmenter.view(images, all_rows(64), 0);
  int flipped = 0;
  for (int64_t i = 0; i < images.size(0); ++i) {
    bool same = torch::equal(out[i], images[i]), mirrored = torch::equal(out[i], images[i].flip({2}));
    EXPECT_TRUE(same || mirrored) << "image " << i;
    flipped += mirrored;
  }
  EXPECT_GT(flipped, 16);
  EXPECT_LT(flipped, 48);
}

TEST(Augmenter, CutoutSetsOneSquareToTheBackground) {
  auto images = images_of(20, 1, 10, 10, 5);
  Augmenter augmenter(AugmentOptions().cutout(4), images, 0);
  auto out = augmenter.view(images, all_rows(20), 0);
  double background = images.min().item<double>();
  for (int64_t i = 0; i < 20; ++i) {
    auto changed = out[i].ne(images[i]);
    int64_t count = changed.sum().item<int64_t>();
    EXPECT_GT(count, 0) << "image " << i;
    EXPECT_LE(count, 16) << "image " << i;
    EXPECT_TRUE(torch::allclose(out[i].masked_select(changed), torch::full({count}, background))) << "image " << i;
    // The changed pixels form one axis-aligned box (clipped at the border).
    auto where = changed[0].nonzero();
    auto rows = where.select(1, 0), cols = where.select(1, 1);
    int64_t h = rows.max().item<int64_t>() - rows.min().item<int64_t>() + 1;
    int64_t w = cols.max().item<int64_t>() - cols.min().item<int64_t>() + 1;
    EXPECT_EQ(h * w, count) << "image " << i;
  }
}

TEST(Augmenter, NoiseIsScaledToEachFeaturesSpread) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto table = torch::randn({4000, 3}, gen) * torch::tensor({1.0f, 10.0f, 0.1f}) + 5;
  Augmenter augmenter(AugmentOptions().noise(0.5), table, 1);
  auto noise = augmenter.view(table, all_rows(4000), 0) - table;
  auto sd = noise.std(0);
  EXPECT_NEAR(sd[0].item<double>(), 0.5, 0.05);
  EXPECT_NEAR(sd[1].item<double>(), 5.0, 0.5);
  EXPECT_NEAR(sd[2].item<double>(), 0.05, 0.005);
  EXPECT_LT(noise.mean(0).abs().max().item<double>(), 0.2);
}

TEST(Augmenter, FeatureDropoutReplacesValuesByTheirMean) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto table = torch::randn({2000, 4}, gen) + 3;
  Augmenter augmenter(AugmentOptions().feature_dropout(0.25), table, 1);
  auto out = augmenter.view(table, all_rows(2000), 0);
  auto changed = out.ne(table);
  double fraction = changed.to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(fraction, 0.25, 0.03);
  auto means = table.mean(0).expand_as(table);
  EXPECT_TRUE(torch::allclose(out.masked_select(changed), means.masked_select(changed)));
}

// A table's one-hot or index columns name categories: noise and feature dropout leave them alone.
TEST(Augmenter, NoiseAndFeatureDropoutLeaveCategoricalFeaturesAsTheyAre) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto table = torch::randn({500, 4}, gen);
  table.select(1, 1).copy_(torch::randint(0, 2, {500}, gen).to(torch::kFloat));  // one-hot
  table.select(1, 3).copy_(torch::randint(0, 5, {500}, gen).to(torch::kFloat));  // index
  const std::vector<bool> categorical = {false, true, false, true};
  Augmenter augmenter(AugmentOptions().noise(0.5).feature_dropout(0.2), table, 1, categorical);
  auto changed = augmenter.view(table, all_rows(500), 0).ne(table).to(torch::kDouble).mean(0);
  EXPECT_GT(changed[0].item<double>(), 0.99);
  EXPECT_EQ(changed[1].item<double>(), 0.0);
  EXPECT_GT(changed[2].item<double>(), 0.99);
  EXPECT_EQ(changed[3].item<double>(), 0.0);
  EXPECT_THROW(Augmenter(AugmentOptions().noise(0.5), table, 1, {true, false}), std::logic_error);  // a caller's bug
}

TEST(Augmenter, MixupMixesEachRowWithItsPartnerAndRepeats) {
  auto images = images_of(16, 1, 4, 4, 2);
  Augmenter augmenter(AugmentOptions().mixup(0.4), images, 0);
  auto m = augmenter.mix(images, 3, 1);
  ASSERT_GT(m.lambda, 0.0);
  ASSERT_LT(m.lambda, 1.0);
  auto expected = images * m.lambda + images.index_select(0, m.partner) * (1 - m.lambda);
  EXPECT_TRUE(torch::allclose(m.x, expected));
  auto again = augmenter.mix(images, 3, 1);
  EXPECT_EQ(again.lambda, m.lambda);
  EXPECT_TRUE(torch::equal(again.partner, m.partner));
  EXPECT_NE(augmenter.mix(images, 3, 2).lambda, m.lambda);
  // Off: the batch as it is.
  Augmenter off(AugmentOptions(), images, 0);
  EXPECT_EQ(off.mix(images, 0, 0).lambda, 1.0);
}

TEST(Augmenter, CutmixPastesABoxAndLambdaIsTheAreaKept) {
  auto images = images_of(8, 1, 10, 10, 2);
  Augmenter augmenter(AugmentOptions().cutmix(1.0), images, 0);
  for (int64_t batch = 0; batch < 10; ++batch) {
    auto m = augmenter.mix(images, 0, batch);
    auto pasted = m.x.eq(images.index_select(0, m.partner));
    EXPECT_TRUE(torch::all(m.x.eq(images) | pasted).item<bool>()) << "batch " << batch;
    // lambda is the share of a row's own pixels left after the box (of a row mixed with another).
    int64_t kept = 0;
    for (int64_t i = 0; i < 8; ++i) {
      if (m.partner[i].item<int64_t>() == i) continue;
      kept = m.x[i].eq(images[i]).sum().item<int64_t>();
      break;
    }
    if (kept > 0) {
      EXPECT_NEAR(m.lambda, kept / 100.0, 1e-9) << "batch " << batch;
    }
  }
}

TEST(Augmenter, BadOptionsNameTheField) {
  KD_EXPECT_ERROR(validate(AugmentOptions().shift(-1), {}, "distill.augment"), "distill.augment.shift: -1 is negative");
  KD_EXPECT_ERROR(validate(AugmentOptions().feature_dropout(1.0), {}, "distill.augment"),
                  "distill.augment.feature_dropout: 1 is not a probability in [0, 1)");
  KD_EXPECT_ERROR(validate(AugmentOptions().shift(2), {30}, "distill.augment"),
                  "distill.augment.shift: needs images [C, H, W]; the rows here are [30]");
  KD_EXPECT_ERROR(validate(AugmentOptions().cutmix(1), {30}, "teacher.train.augment"),
                  "teacher.train.augment.cutmix: needs images [C, H, W]");
  KD_EXPECT_ERROR(validate(AugmentOptions().shift(28), {1, 28, 28}, "distill.augment"),
                  "distill.augment.shift: 28 pixels is not less than the image's side (28)");
  validate(AugmentOptions().noise(0.1).feature_dropout(0.1).mixup(0.2), {30}, "distill.augment");
}

}  // namespace
}  // namespace kd::data
