#include "kd/data/batcher.h"

#include <gtest/gtest.h>

#include "kd/data/normalize.h"
#include "test_util.h"

namespace kd::data {
namespace {

TEST(Batcher, EpochCoversEveryRowOnceAndKeepsPairsAligned) {
  auto x = torch::arange(10, torch::kFloat).unsqueeze(1);
  auto y = torch::arange(10, torch::kLong) * 2;
  Batcher batcher({x, y}, BatcherOptions().batch_size(4).seed(5));
  ASSERT_EQ(batcher.batches(), 3);
  std::vector<int64_t> seen;
  for (int64_t b = 0; b < batcher.batches(); ++b) {
    auto batch = batcher.batch(0, b);
    EXPECT_EQ(batch[0].size(0), b < 2 ? 4 : 2);
    for (int64_t i = 0; i < batch[0].size(0); ++i) {
      auto row = static_cast<int64_t>(batch[0][i][0].item<float>());
      EXPECT_EQ(batch[1][i].item<int64_t>(), 2 * row);
      seen.push_back(row);
    }
  }
  std::sort(seen.begin(), seen.end());
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(seen[i], i);
}

TEST(Batcher, OrderDependsOnlyOnSeedAndEpoch) {
  auto x = torch::arange(100, torch::kFloat);
  Batcher a({x}, BatcherOptions().batch_size(100).seed(1));
  Batcher b({x}, BatcherOptions().batch_size(100).seed(1));
  // b visits epoch 3 without epochs 0-2: a resumed run sees the same order.
  auto a3 = (a.batch(0, 0), a.batch(1, 0), a.batch(3, 0))[0];
  EXPECT_TRUE(torch::equal(a3, b.batch(3, 0)[0]));
  EXPECT_FALSE(torch::equal(a.batch(0, 0)[0], a.batch(1, 0)[0]));
  Batcher c({x}, BatcherOptions().batch_size(100).seed(2));
  EXPECT_FALSE(torch::equal(c.batch(3, 0)[0], a3));
}

TEST(Batcher, NoShuffleAndDropLast) {
  Batcher batcher({torch::arange(10)}, BatcherOptions().batch_size(4).shuffle(false).drop_last(true));
  EXPECT_EQ(batcher.batches(), 2);
  EXPECT_TRUE(torch::equal(batcher.batch(7, 1)[0], torch::arange(4, 8)));
}

// Each batch is index_select of its rows, for every kind of tensor the trainers batch: float rows,
// int64 labels, a bool mask, images [N, C, H, W] (channels-last ones made contiguous), and rows large
// enough that the copy runs on several threads.
TEST(Batcher, BatchesAreTheSelectedRowsOfEveryTensor) {
  torch::manual_seed(3);
  int64_t n = 300;
  std::vector<torch::Tensor> tensors = {torch::randn({n, 7}), torch::randint(0, 9, {n}, torch::kLong),
                                        torch::rand({n}) < 0.5,
                                        torch::randn({n, 3, 5, 4}).contiguous(torch::MemoryFormat::ChannelsLast),
                                        torch::randn({n, 20000})};
  Batcher batcher(tensors, BatcherOptions().batch_size(64).seed(2));
  for (int64_t b = 0; b < batcher.batches(); ++b) {
    auto batch = batcher.batch(1, b);
    auto rows = batcher.batch_rows(1, b);
    ASSERT_EQ(batch.size(), tensors.size());
    for (size_t t = 0; t < tensors.size(); ++t) {
      auto expected = tensors[t].index_select(0, rows);
      EXPECT_EQ(batch[t].sizes(), expected.sizes()) << "tensor " << t;
      EXPECT_EQ(batch[t].scalar_type(), expected.scalar_type()) << "tensor " << t;
      EXPECT_TRUE(torch::equal(batch[t], expected)) << "tensor " << t << " batch " << b;
    }
  }
}

TEST(Batcher, BadBatchSize) {
  KD_EXPECT_ERROR(Batcher({torch::zeros({3})}, BatcherOptions().batch_size(0)), "batch_size: 0");
}

TEST(Normalizer, StandardPerFeatureUsesTrainStatistics) {
  auto x = torch::tensor({{1.0, 10.0}, {3.0, 10.0}}, torch::kFloat);
  auto n = Normalizer::fit(x, NormalizeOptions());
  // Column 0: mean 2, population std 1. Column 1 is constant: centred, scale 1.
  auto out = n.apply(torch::tensor({{5.0, 12.0}}, torch::kFloat));
  EXPECT_FLOAT_EQ(out[0][0].item<float>(), 3.0f);
  EXPECT_FLOAT_EQ(out[0][1].item<float>(), 2.0f);
  EXPECT_TRUE(torch::allclose(n.invert(out), torch::tensor({{5.0, 12.0}}, torch::kFloat)));
}

TEST(Normalizer, MinMaxGlobalAndChannel) {
  auto x = torch::tensor({0.0, 2.0, 4.0}, torch::kFloat).reshape({3, 1});
  auto g = Normalizer::fit(x, NormalizeOptions().mode("minmax").scope("global"));
  EXPECT_FLOAT_EQ(g.apply(torch::tensor({{3.0f}}))[0][0].item<float>(), 0.75f);

  auto images = torch::zeros({2, 2, 2, 2});
  images.select(1, 1).fill_(4.0);
  images[1][1].fill_(8.0);  // channel 1: values 4 and 8 -> mean 6, std 2
  auto c = Normalizer::fit(images, NormalizeOptions().scope("channel"));
  EXPECT_EQ(c.shift().sizes(), torch::IntArrayRef({2, 1, 1}));
  EXPECT_FLOAT_EQ(c.shift()[1][0][0].item<float>(), 6.0f);
  EXPECT_FLOAT_EQ(c.scale()[1][0][0].item<float>(), 2.0f);
}

TEST(Normalizer, JsonRoundTrip) {
  auto x = torch::randn({20, 3});
  auto n = Normalizer::fit(x, NormalizeOptions());
  auto back = Normalizer::from_json(n.to_json());
  EXPECT_TRUE(torch::allclose(n.apply(x), back.apply(x)));
}

TEST(Normalizer, BadOptions) {
  KD_EXPECT_ERROR(Normalizer::fit(torch::zeros({2, 2}), NormalizeOptions().mode("zscore")),
                  "data.normalize: \"zscore\" is not a mode");
  KD_EXPECT_ERROR(Normalizer::fit(torch::zeros({2, 2}), NormalizeOptions().scope("channel")),
                  "channel needs images");
}

}  // namespace
}  // namespace kd::data
