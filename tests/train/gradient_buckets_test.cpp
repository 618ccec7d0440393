// GradientBuckets: two ranks (threads of this process on 127.0.0.1) sum their gradients and loss
// values in buckets started during backward; the sums equal each rank's gradients added up, whatever
// order the buckets fill in, with a parameter that gets no gradient and a rank that has no rows.
#include "train/gradient_buckets.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <thread>

namespace kd::train {
namespace {

std::vector<torch::Tensor> make_parameters() {
  // A generator of its own: the ranks are threads, which must not share the global one.
  auto g = at::make_generator<at::CPUGeneratorImpl>(7);
  std::vector<torch::Tensor> p;
  for (auto shape : {std::vector<int64_t>{6}, {3, 4}, {4}, {4, 2}}) p.push_back(torch::randn(shape, g));
  for (auto& t : p) t.requires_grad_(true);
  return p;
}

// A rank's loss on its rows; p[0] is never used (it is in the last bucket: the others start during
// backward).
torch::Tensor loss_of(const std::vector<torch::Tensor>& p, int64_t rank) {
  torch::Tensor x = torch::arange(15, torch::kFloat).reshape({5, 3}).add(static_cast<double>(rank)).sin();
  return torch::relu(torch::matmul(x, p[1]) + p[2]).matmul(p[3]).pow(2).mean();
}

// Each rank's gradients and loss, summed: what the buckets must give.
std::vector<torch::Tensor> expected_sum(const std::vector<int64_t>& ranks, double& loss) {
  auto p = make_parameters();
  loss = 0.0;
  for (int64_t r : ranks) {
    auto l = loss_of(p, r);
    loss += l.item<double>();
    l.backward();
  }
  std::vector<torch::Tensor> grads;
  for (auto& t : p) grads.push_back(t.grad().defined() ? t.grad().clone() : torch::zeros_like(t));
  return grads;
}

struct Step {
  std::vector<torch::Tensor> grads;
  std::vector<double> values;
  int64_t buckets = 0;
};

TEST(GradientBuckets, TwoRanksSumWhatEachComputes) {
  const int64_t port = 32000 + getpid() % 700;  // below the ephemeral ports, apart from the CLI tests' 20000-31999
  Step steps[2][2];  // [rank][step]
  auto rank_main = [&](int64_t rank) {
    auto group = dist::Group::connect(dist::LaunchOptions().rank(rank).world_size(2).master_port(port).timeout_seconds(30));
    auto p = make_parameters();
    GradientBuckets buckets(p, 2, *group, 16);  // 16 bytes: a bucket for each parameter
    for (int step = 0; step < 2; ++step) {
      for (auto& t : p) t.mutable_grad().reset();
      // Step 1: rank 1 has no rows (no backward; every bucket starts in finish).
      bool rows = step == 0 || rank == 0;
      torch::Tensor loss = loss_of(p, rank);
      std::vector<double> values = rows ? std::vector<double>{loss.item<double>(), 2 * loss.item<double>()}
                                        : std::vector<double>{0.0, 0.0};
      buckets.begin(values);
      if (rows) loss.backward();
      buckets.finish(values);
      for (auto& t : p) steps[rank][step].grads.push_back(t.grad().clone());
      steps[rank][step].values = values;
      steps[rank][step].buckets = buckets.buckets();
    }
  };
  std::thread one([&] { rank_main(1); });
  rank_main(0);
  one.join();
  for (int step = 0; step < 2; ++step) {
    double loss = 0.0;
    auto expected = expected_sum(step == 0 ? std::vector<int64_t>{0, 1} : std::vector<int64_t>{0}, loss);
    for (int rank = 0; rank < 2; ++rank) {
      const Step& s = steps[rank][step];
      EXPECT_EQ(s.buckets, 4);
      ASSERT_EQ(s.grads.size(), expected.size());
      for (size_t k = 0; k < expected.size(); ++k) {
        EXPECT_TRUE(torch::allclose(s.grads[k], expected[k], 1e-5, 1e-6)) << "rank " << rank << " step " << step
                                                                           << " parameter " << k;
      }
      EXPECT_TRUE(torch::equal(s.grads[0], torch::zeros({6})));  // never used: zeros
      EXPECT_NEAR(s.values[0], loss, 1e-6);
      EXPECT_NEAR(s.values[1], 2 * loss, 1e-6);
    }
  }
}

}  // namespace
}  // namespace kd::train
