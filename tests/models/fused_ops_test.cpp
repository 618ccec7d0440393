#include "kd/models/fused_ops.h"

#include <gtest/gtest.h>

#include <vector>

namespace kd::models {
namespace {

// The fused relu + 2x2 max pool against libtorch's two ops: values and input gradients, on odd
// sizes (an uncovered last row and column), ties (values on a 0.5 grid), all-negative windows and
// windows whose largest value is exactly 0.
// Both layouts: contiguous and channels-last (where the output and gradient are channels-last too).
const std::vector<torch::MemoryFormat> kFormats = {torch::MemoryFormat::Contiguous,
                                                   torch::MemoryFormat::ChannelsLast};

bool in_format(const torch::Tensor& x, torch::MemoryFormat format) { return x.is_contiguous(format); }

TEST(FusedOps, ReluMaxPoolMatchesReluThenMaxPool) {
  torch::manual_seed(3);
  for (auto format : kFormats) {
    for (auto shape :
         std::vector<std::vector<int64_t>>{{2, 3, 8, 8}, {3, 2, 7, 9}, {1, 1, 2, 2}, {2, 17, 6, 5}}) {
      auto values = ((torch::randn(shape) * 2).round() / 2).contiguous(format);
      auto a = values.clone().requires_grad_(true), b = values.clone().requires_grad_(true);
      auto fused = relu_max_pool2x2(a);
      auto reference = torch::max_pool2d(torch::relu(b), {2, 2}, {2, 2});
      ASSERT_EQ(fused.sizes(), reference.sizes());
      EXPECT_TRUE(in_format(fused, format)) << fused.strides();
      EXPECT_TRUE(torch::equal(fused, reference));
      auto upstream = torch::randn(reference.sizes());
      fused.backward(upstream);
      reference.backward(upstream);
      EXPECT_TRUE(in_format(a.grad(), format));
      EXPECT_TRUE(torch::equal(a.grad(), b.grad())) << "input shape " << shape[2] << "x" << shape[3];
      EXPECT_GT(b.grad().abs().sum().item<float>(), 0.0f);
    }
  }
}

// The fused batch norm (training) + relu + 2x2 max pool against BatchNorm2d, relu and max_pool2d:
// outputs, running statistics, num_batches_tracked, and the gradients of the input, weight and bias,
// over three steps (so running statistics accumulate), on odd sizes, a large mean against the
// spread (the pivot's case), negative BN weights (the window's choice flips) and momentum unset.
TEST(FusedOps, BatchNormReluMaxPoolMatchesUnfused) {
  torch::manual_seed(4);
  struct Case {
    std::vector<int64_t> shape;
    double offset;
    bool cumulative;
  };
  std::vector<Case> cases = {{{4, 3, 8, 8}, 0.0, false},
                             {{3, 2, 7, 9}, 50.0, false},
                             {{2, 5, 6, 6}, 0.0, true},
                             {{16, 4, 28, 28}, 1.0, false},
                             {{4, 19, 9, 6}, -2.0, false}};
  for (auto format : kFormats) {
    for (const Case& c : cases) {
      auto options = torch::nn::BatchNormOptions(c.shape[1]);
      if (c.cumulative) options.momentum(c10::nullopt);
      torch::nn::BatchNorm2d fused_bn(options), reference_bn(options);
      auto weight = torch::randn({c.shape[1]}), bias = torch::randn({c.shape[1]});
      for (auto* bn : {&fused_bn, &reference_bn}) {
        torch::NoGradGuard no_grad;
        (*bn)->weight.copy_(weight);
        (*bn)->bias.copy_(bias);
      }
      for (int step = 0; step < 3; ++step) {
        auto values = (torch::randn(c.shape) * 3 + c.offset).contiguous(format);
        auto a = values.clone().requires_grad_(true), b = values.clone().requires_grad_(true);
        auto fused = batch_norm_relu_max_pool2x2(a, fused_bn);
        auto reference = torch::max_pool2d(torch::relu(reference_bn(b)), {2, 2}, {2, 2});
        ASSERT_EQ(fused.sizes(), reference.sizes());
        EXPECT_TRUE(in_format(fused, format)) << fused.strides();
        EXPECT_TRUE(torch::allclose(fused, reference, 1e-4, 1e-4))
            << (fused - reference).abs().max().item<float>();
        auto upstream = torch::randn(reference.sizes());
        fused.backward(upstream);
        reference.backward(upstream);
        EXPECT_TRUE(in_format(a.grad(), format));
        EXPECT_TRUE(torch::allclose(a.grad(), b.grad(), 1e-3, 1e-4))
            << (a.grad() - b.grad()).abs().max().item<float>();
        EXPECT_GT(b.grad().abs().sum().item<float>(), 0.0f);
      }
      EXPECT_TRUE(torch::allclose(fused_bn->weight.grad(), reference_bn->weight.grad(), 1e-3, 1e-4));
      EXPECT_TRUE(torch::allclose(fused_bn->bias.grad(), reference_bn->bias.grad(), 1e-3, 1e-4));
      EXPECT_TRUE(torch::allclose(fused_bn->running_mean, reference_bn->running_mean, 1e-4, 1e-5));
      EXPECT_TRUE(torch::allclose(fused_bn->running_var, reference_bn->running_var, 1e-4, 1e-5));
      EXPECT_EQ(fused_bn->num_batches_tracked.item<int64_t>(), 3);
      // Eval mode is the unfused path, with the running statistics.
      fused_bn->eval();
      auto x = torch::randn(c.shape) + c.offset;
      torch::NoGradGuard no_grad;
      EXPECT_TRUE(torch::equal(batch_norm_relu_max_pool2x2(x, fused_bn),
                               torch::max_pool2d(torch::relu(fused_bn(x)), {2, 2}, {2, 2})));
    }
  }
}

// Channels-last batch statistics are summed per image, then over images in order: the same numbers
// on one thread as on two.
TEST(FusedOps, BatchNormReluMaxPoolChannelsLastIsThreadCountFree) {
  torch::manual_seed(5);
  auto x = torch::randn({8, 16, 14, 14}).contiguous(torch::MemoryFormat::ChannelsLast);
  auto upstream = torch::randn({8, 16, 7, 7});
  std::vector<torch::Tensor> outputs, gradients;
  int threads = at::get_num_threads();
  for (int t : {1, 2}) {
    at::set_num_threads(t);
    torch::nn::BatchNorm2d bn(16);
    auto a = x.clone().requires_grad_(true);
    auto y = batch_norm_relu_max_pool2x2(a, bn);
    y.backward(upstream);
    outputs.push_back(y.detach());
    gradients.push_back(a.grad());
  }
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(outputs[0], outputs[1]));
  EXPECT_TRUE(torch::equal(gradients[0], gradients[1]));
}

}  // namespace
}  // namespace kd::models
