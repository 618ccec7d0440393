// Hand-written CPU kernels for the zoo CNN's stages, where libtorch's separate ops spend much of a
// small network's training step passing full-size activations through memory. Each has the values
// and gradients of the ops it replaces (tests/models/fused_ops_test.cpp) and falls back to those ops
// for anything but float32 [N, C, H, W] CPU tensors. Channels-last input (the zoo's convolutions
// give it) is worked in that layout and gives channels-last output and gradients; any other layout
// is made contiguous. Compiled with -fopenmp (CMakeLists.txt), or their at::parallel_for loops run
// on one thread.
//
// Example (a zoo CNN stage: conv, batch norm, relu, 2x2 max pool):
//   torch::Tensor y = batch_norm_relu_max_pool2x2(conv(x), bn);  // [N, C, H/2, W/2]
#pragma once

#include <torch/torch.h>

namespace kd::models {

// x in the layout oneDNN's convolutions (and the fused ops here) run fastest in on the CPU:
// channels-last ([N, H, W, C] in memory), for float32 [N, C, H, W] CPU tensors; anything else as it
// is. A contiguous input and output are reordered to and from oneDNN's blocked layout on every call;
// a channels-last one is read as it is, and the ops after a convolution keep its layout (values the
// same up to rounding). The zoo's convolutions and TorchScript teachers' inference get their input so.
torch::Tensor to_channels_last(const torch::Tensor& x);

// max_pool2d(relu(x), 2, 2) of [N, C, H, W] (odd H, W: the last row or column is dropped, as
// max_pool2d does), one pass each way. The gradient goes to the first largest element of each window
// (row-major), and nowhere when the window's largest value is not positive.
torch::Tensor relu_max_pool2x2(const torch::Tensor& x);

// max_pool2d(relu(bn(x)), 2, 2) for a BatchNorm2d in training mode: batch statistics, running
// statistics and num_batches_tracked updated as bn's own forward does (momentum, or the cumulative
// average when momentum is unset). Two passes forward (statistics; normalise + relu + pool) and two
// backward (sums over the pooled gradient; one pass writing the input's gradient), against libtorch's
// four plus four. In eval mode, or when bn is not affine with running statistics, it is
// relu_max_pool2x2(bn(x)).
torch::Tensor batch_norm_relu_max_pool2x2(const torch::Tensor& x, torch::nn::BatchNorm2d& bn);

}  // namespace kd::models
