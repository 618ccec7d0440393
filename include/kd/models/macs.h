// Multiply-accumulates of one forward pass, measured rather than derived from a layer list, so
// that it works for any model that runs on libtorch ops (TorchScript files, imported graphs):
// the model runs once on a zero example while a RecordFunction observer counts the products
// libtorch executes.
//
//   linear / addmm / mm / bmm / matmul / baddbmm   output elements x reduction length
//   convolution (1-3 d, any groups)                 output elements x (C_in / groups) x kernel elements
//   transposed convolution                          input elements x (C_out / groups) x kernel elements
// An op called inside a counted op (aten::linear calling aten::addmm) is not counted again.
// Element-wise ops, normalisation, pooling and activations count 0, as in the zoo's own counts.
//
//   int64_t macs = kd::models::measure_macs(model, {1, 28, 28});
#pragma once

#include <cstdint>
#include <vector>

#include "kd/models/model.h"

namespace kd::models {

// For ONE example of `input_shape` (no batch dim). Runs the model without gradients and leaves it
// in eval mode.
int64_t measure_macs(Model& model, const std::vector<int64_t>& input_shape);

}  // namespace kd::models
