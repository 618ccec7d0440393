// A plain multilayer perceptron (dense layers with one activation between them) as one autograd node:
// forward and backward each a loop over the layers of oneDNN products and in-place activations,
// instead of two to four libtorch ops a layer each way, every one dispatched, allocated and
// recorded on the autograd tape. A small student's step is mostly that overhead (the tabular
// benchmark's 40-16-4 student: forward and backward 51 us of an 84 us step through the ops).
// Values and gradients are those of the ops it replaces up to rounding
// (tests/models/dense_chain_test.cpp); float32 CPU only, anything else goes to the ops themselves.
//
//   torch::Tensor logits = dense_chain(x, {{fc1->weight, fc1->bias}, {head->weight, head->bias}}, "relu");
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace kd::models {

struct DenseLayer {
  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out], or undefined
};

// Whether dense_chain runs its own kernels for these inputs: x a float32 [N, in] CPU tensor with N > 0,
// float32 CPU weights (and biases) whose sizes chain, a known activation, no autocast. Otherwise
// dense_chain is the libtorch ops.
bool fits_dense_chain(const torch::Tensor& x, const std::vector<DenseLayer>& layers, const std::string& activation);

// The activation `name` (relu, leaky_relu with `slope`, tanh, gelu, silu) in libtorch ops: the zoo's
// activations and dense_chain's own definition.
torch::Tensor activate(const std::string& name, const torch::Tensor& x, double slope);

// layers.back()(act(... act(layers[0](x)))): activation (relu, leaky_relu with `slope`, tanh, gelu, silu)
// after every layer but the last. Differentiable in x, the weights and the biases; under create_graph the
// backward is recomputed through the libtorch ops, so that it is differentiable itself.
torch::Tensor dense_chain(const torch::Tensor& x, const std::vector<DenseLayer>& layers, const std::string& activation,
                          double slope = 0.01);

}  // namespace kd::models
