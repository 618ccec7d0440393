#include "kd/models/fused_ops.h"

#include <gtest/gtest.h>

#include <vector>

namespace kd::models {
namespace {

// The fused relu + 2x2 max pool against libtorch's two ops: values and input gradients, on odd
// sizes (an uncovered last row and column), ties (values on a 0.5 grid), all-negative windows and
// windows whose largest value is exactly 0.
TEST(FusedOps, ReluMaxPoolMatchesReluThenMaxPool) {
  torch::manual_seed(3);
  for (auto shape : std::vector<std::vector<int64_t>>{{2, 3, 8, 8}, {3, 2, 7, 9}, {1, 1, 2, 2}}) {
    auto values = (torch::randn(shape) * 2).round() / 2;
    auto a = values.clone().requires_grad_(true), b = values.clone().requires_grad_(true);
    auto fused = relu_max_pool2x2(a);
    auto reference = torch::max_pool2d(torch::relu(b), {2, 2}, {2, 2});
    ASSERT_EQ(fused.sizes(), reference.sizes());
    EXPECT_TRUE(torch::equal(fused, reference));
    auto upstream = torch::randn(reference.sizes());
    fused.backward(upstream);
    reference.backward(upstream);
    EXPECT_TRUE(torch::equal(a.grad(), b.grad())) << "input shape " << shape[2] << "x" << shape[3];
    EXPECT_GT(b.grad().abs().sum().item<float>(), 0.0f);
  }
}

}  // namespace
}  // namespace kd::models
