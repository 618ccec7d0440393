#include "kd/models/dense_chain.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kd/models/zoo.h"

namespace kd::models {
namespace {

torch::Tensor activate(const std::string& name, const torch::Tensor& x, double slope) {
  if (name == "relu") return torch::relu(x);
  if (name == "leaky_relu") return torch::leaky_relu(x, slope);
  if (name == "tanh") return torch::tanh(x);
  if (name == "gelu") return torch::gelu(x);
  return torch::silu(x);
}

// The chain in plain libtorch ops (torch::linear), the definition dense_chain must meet.
torch::Tensor reference(const torch::Tensor& x, const std::vector<DenseLayer>& layers, const std::string& activation,
                        double slope) {
  torch::Tensor h = x;
  for (size_t l = 0; l < layers.size(); ++l) {
    h = torch::linear(h, layers[l].weight, layers[l].bias);
    if (l + 1 < layers.size()) h = activate(activation, h, slope);
  }
  return h;
}

struct Net {
  std::vector<torch::Tensor> leaves;  // weights and biases, requiring grad
  std::vector<DenseLayer> layers;
};

// Layers of the given widths ([in, hidden..., out]); layer `no_bias` without a bias.
Net make_net(const std::vector<int64_t>& widths, int no_bias) {
  Net net;
  for (size_t l = 0; l + 1 < widths.size(); ++l) {
    DenseLayer layer{torch::randn({widths[l + 1], widths[l]}).mul_(0.4).requires_grad_(true), torch::Tensor()};
    net.leaves.push_back(layer.weight);
    if (static_cast<int>(l) != no_bias) {
      layer.bias = torch::randn({widths[l + 1]}).mul_(0.3).requires_grad_(true);
      net.leaves.push_back(layer.bias);
    }
    net.layers.push_back(layer);
  }
  return net;
}

std::vector<torch::Tensor> gradients(const torch::Tensor& y, const torch::Tensor& upstream,
                                     const std::vector<torch::Tensor>& wrt) {
  return torch::autograd::grad({y}, wrt, {upstream});
}

// Values and the gradients of x, every weight and bias against the libtorch ops, for each activation,
// layer count (1-3), a layer without bias, and rows that take oneDNN's threads (300) or not (5).
TEST(DenseChain, MatchesTheLibtorchOpsInValueAndGradient) {
  torch::manual_seed(5);
  const double slope = 0.1;
  for (std::string activation : {"relu", "leaky_relu", "tanh", "gelu", "silu"}) {
    for (auto widths : std::vector<std::vector<int64_t>>{{7, 3}, {40, 16, 4}, {33, 64, 20, 10}}) {
      for (int64_t rows : {5, 300}) {
        SCOPED_TRACE(activation + " layers " + std::to_string(widths.size() - 1) + " rows " + std::to_string(rows));
        Net net = make_net(widths, widths.size() > 2 ? 1 : -1);
        auto x = torch::randn({rows, widths[0]}).requires_grad_(true);
        ASSERT_TRUE(fits_dense_chain(x, net.layers, activation));
        auto fused = dense_chain(x, net.layers, activation, slope);
        auto expected = reference(x, net.layers, activation, slope);
        ASSERT_EQ(fused.sizes(), expected.sizes());
        EXPECT_TRUE(torch::allclose(fused, expected, 1e-5, 1e-5)) << (fused - expected).abs().max();
        auto upstream = torch::randn(expected.sizes());
        std::vector<torch::Tensor> wrt = {x};
        wrt.insert(wrt.end(), net.leaves.begin(), net.leaves.end());
        auto got = gradients(fused, upstream, wrt), want = gradients(expected, upstream, wrt);
        for (size_t i = 0; i < wrt.size(); ++i) {
          ASSERT_TRUE(got[i].defined()) << "gradient " << i;
          EXPECT_TRUE(torch::allclose(got[i], want[i], 1e-4, 1e-4)) << "gradient " << i << ": "
                                                                      << (got[i] - want[i]).abs().max();
          EXPECT_GT(want[i].abs().sum().item<double>(), 0.0) << "gradient " << i;
        }
      }
    }
  }
}

// Gradients only where asked: a frozen first layer and an input without grad get none, the rest
// match; and the same inputs give bit-identical results on a second call.
TEST(DenseChain, GivesOnlyTheGradientsAskedForAndRepeatsExactly) {
  torch::manual_seed(7);
  Net net = make_net({12, 8, 3}, -1);
  net.layers[0].weight.requires_grad_(false);
  auto x = torch::randn({64, 12});
  auto y = dense_chain(x, net.layers, "relu");
  y.pow(2).sum().backward();
  EXPECT_FALSE(net.layers[0].weight.grad().defined());
  ASSERT_TRUE(net.layers[1].weight.grad().defined());
  auto first = net.layers[1].weight.grad().clone();
  auto expected = reference(x, net.layers, "relu", 0.01);
  auto want = torch::autograd::grad({expected.pow(2).sum()}, {net.layers[1].weight})[0];
  EXPECT_TRUE(torch::allclose(first, want, 1e-4, 1e-4));
  net.layers[1].weight.mutable_grad().reset();
  dense_chain(x, net.layers, "relu").pow(2).sum().backward();
  EXPECT_TRUE(torch::equal(first, net.layers[1].weight.grad()));
}

// Under create_graph the gradient is itself differentiable: a gradient-norm penalty's gradient
// matches the libtorch ops'.
TEST(DenseChain, DoubleBackwardMatchesTheLibtorchOps) {
  torch::manual_seed(9);
  for (std::string activation : {"tanh", "silu"}) {
    Net net = make_net({6, 5, 2}, -1);
    auto x = torch::randn({9, 6}).requires_grad_(true);
    auto penalty = [&](const torch::Tensor& y) {
      auto gx = torch::autograd::grad({y.pow(2).sum()}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
      return torch::autograd::grad({gx.pow(2).sum()}, {net.layers[0].weight})[0];
    };
    auto got = penalty(dense_chain(x, net.layers, activation));
    auto want = penalty(reference(x, net.layers, activation, 0.01));
    EXPECT_TRUE(torch::allclose(got, want, 1e-4, 1e-5)) << activation << ": " << (got - want).abs().max();
    EXPECT_GT(want.abs().sum().item<double>(), 0.0);
  }
}

// What the kernels do not take goes to the libtorch ops, with their result: double inputs, an empty
// batch, sizes that do not chain (libtorch's own error).
TEST(DenseChain, FallsBackToTheOpsOutsideFloat32Cpu) {
  torch::manual_seed(11);
  Net net = make_net({4, 3, 2}, -1);
  auto x = torch::randn({6, 4});
  EXPECT_TRUE(fits_dense_chain(x, net.layers, "relu"));
  EXPECT_FALSE(fits_dense_chain(x, net.layers, "softplus"));
  EXPECT_FALSE(fits_dense_chain(x.to(torch::kDouble), net.layers, "relu"));
  EXPECT_FALSE(fits_dense_chain(torch::randn({0, 4}), net.layers, "relu"));
  EXPECT_FALSE(fits_dense_chain(torch::randn({6, 5}), net.layers, "relu"));
  EXPECT_EQ(dense_chain(torch::randn({0, 4}), net.layers, "relu").sizes(), (std::vector<int64_t>{0, 2}));
  EXPECT_THROW(dense_chain(torch::randn({6, 5}), net.layers, "relu"), std::exception);
}

// The zoo's plain MLPs take the chain: a model's output and gradients are those of its layers run
// through the libtorch ops, in training and eval; with dropout in training (not a plain chain) it
// still trains.
TEST(DenseChain, ZooMlpForwardIsTheChainOfItsLayers) {
  torch::manual_seed(13);
  ZooModel model(ZooSpec().hidden({16, 8}).activation("gelu"), {1, 4, 5}, 3, "student");
  auto x = torch::randn({32, 1, 4, 5});
  auto state = model.state();
  ASSERT_EQ(state.size(), 6u);
  std::vector<DenseLayer> layers = {{state[0].second, state[1].second},
                                    {state[2].second, state[3].second},
                                    {state[4].second, state[5].second}};
  model.set_training(true);
  auto y = model.forward(x);
  auto expected = reference(x.flatten(1), layers, "gelu", 0.01);
  EXPECT_TRUE(torch::allclose(y, expected, 1e-5, 1e-5));
  auto got = torch::autograd::grad({y.sum()}, {state[0].second})[0];
  auto want = torch::autograd::grad({expected.sum()}, {state[0].second})[0];
  EXPECT_TRUE(torch::allclose(got, want, 1e-4, 1e-4));

  ZooModel dropout(ZooSpec().hidden({16}).dropout(0.5), {20}, 3, "student");
  dropout.set_training(true);
  auto z = dropout.forward(torch::randn({8, 20}));
  z.sum().backward();
  EXPECT_TRUE(dropout.parameters()[0].grad().defined());
}

}  // namespace
}  // namespace kd::models
