// Hand-written CPU kernels for the zoo CNN's stages, where libtorch's separate ops spend much of a
// small network's training step passing full-size activations through memory. Each has the values
// and gradients of the ops it replaces (tests/models/fused_ops_test.cpp) and falls back to those ops
// for anything but float32 [N, C, H, W] CPU tensors. Compiled with -fopenmp (CMakeLists.txt), or
// their at::parallel_for loops run on one thread.
//
// Example (a zoo CNN stage: conv, relu, 2x2 max pool):
//   torch::Tensor y = relu_max_pool2x2(conv(x));  // [N, C, H/2, W/2]
#pragma once

#include <torch/torch.h>

namespace kd::models {

// max_pool2d(relu(x), 2, 2) of [N, C, H, W] (odd H, W: the last row or column is dropped, as
// max_pool2d does), one pass each way. The gradient goes to the first largest element of each window
// (row-major), and nowhere when the window's largest value is not positive.
torch::Tensor relu_max_pool2x2(const torch::Tensor& x);

}  // namespace kd::models
