// A student started from its teacher's weights (recipe `student.init`): every student tensor whose
// name the teacher also has (zoo layers share names: conv1, conv1_bn, fc1, head) takes a slice of it.
//
//   leading     the leading slice along each axis (the first units, channels, inputs)
//   importance  for a narrower layer, the teacher's units (output channels, neurons) with the largest
//               L1 norm of their weights (Li et al. 2017, "Pruning Filters for Efficient ConvNets"),
//               in the teacher's order, and of the next layer the matching inputs; batch norm and
//               biases follow their layer's units. A residual network (whose adds need one choice per
//               stage) or any layer the chain does not reach takes the leading slice.
//
//   auto report = copy_from_teacher(*student, *teacher, "importance");  // report.tensors copied
#pragma once

#include <string>
#include <vector>

#include "kd/models/model.h"

namespace kd::models {

struct InitReport {
  int64_t tensors = 0;              // student tensors copied from the teacher
  int64_t selected_layers = 0;      // layers whose units were chosen by importance
  std::vector<std::string> lines;   // one a layer: "conv2: 16 of 64 units by importance"
};

// `units`: "leading" or "importance" (kd::Error otherwise). An ensemble teacher gives its first member's.
InitReport copy_from_teacher(Model& student, Model& teacher, const std::string& units);

}  // namespace kd::models
