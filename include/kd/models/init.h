// A student started from its teacher's weights (recipe `student.init`): every student tensor takes a
// slice of the teacher tensor of its layer's counterpart.
//
// Which teacher layer (`layers`): by default the one of the same name (zoo layers share names: conv1,
// conv1_bn, fc1, head), so a shallower student takes the teacher's first layers; `every: k` takes the
// teacher's layers 1, 1 + k, 1 + 2k, ... of each numbered family (fc1, fc2, ...: the number in a layer's
// name; DistilBERT's every other layer is k = 2); `layer_map` names them ({fc2: fc3}).
//
// Which units of a narrower layer (`units`):
//   leading     the leading slice along each axis (the first units, channels, inputs)
//   importance  the teacher's units (output channels, neurons) with the largest L1 norm of their
//               weights (Li et al. 2017, "Pruning Filters for Efficient ConvNets"), in the teacher's
//               order, and of the next layer the matching inputs; batch norm and biases follow their
//               layer's units. A residual network (whose adds need one choice per stage) or any layer
//               the chain does not reach takes the leading slice.
//   variance    as importance, the units whose activations (the layer's `_act` tap, else its own)
//               vary most over a sample of training rows (`sample`): a unit that is nearly constant
//               on the data carries little.
//   svd         a narrower dense layer (without batch norm) of weight W = U S V^T keeps U_k^T W and its
//               bias U_k^T b, and the next layer reads it through U_k (W_next U_k): exact for the
//               product of the two layers without the activation between them, an approximation with
//               it; other layers as importance.
//
//   InitOptions options;
//   options.units = "importance";
//   auto report = copy_from_teacher(*student, *teacher, options);  // report.tensors copied
#pragma once

#include <map>
#include <string>
#include <vector>

#include "kd/models/model.h"

namespace kd::models {

struct InitOptions {
  std::string units = "leading";                 // leading | importance | variance | svd
  int64_t every = 1;                             // layer n of the student takes the teacher's 1 + (n - 1) * every
  std::map<std::string, std::string> layer_map;  // student layer -> teacher layer ({fc2: fc3}); wins over every
};

struct InitReport {
  int64_t tensors = 0;              // student tensors copied from the teacher
  int64_t selected_layers = 0;      // layers whose units were chosen (importance, variance or svd)
  std::vector<std::string> lines;   // one a layer: "conv2: 16 of 64 units by importance", "fc2 <- fc3"
};

// kd::Error naming student.init.units or student.init.layers on a bad word or a layer either model
// lacks. `sample`: training rows (the run's normalised inputs) for units: variance. An ensemble teacher
// gives its first member's.
InitReport copy_from_teacher(Model& student, Model& teacher, const InitOptions& options,
                             const torch::Tensor& sample = torch::Tensor());

}  // namespace kd::models
