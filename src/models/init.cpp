#include "kd/models/init.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "kd/models/ensemble.h"
#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::models {
namespace {

// The leading slice of `source` with `target`'s sizes, or nothing when `source` is smaller anywhere.
std::optional<torch::Tensor> leading(torch::Tensor source, const torch::Tensor& target) {
  if (source.dim() != target.dim()) return std::nullopt;
  for (int64_t d = 0; d < target.dim(); ++d) {
    if (source.size(d) < target.size(d)) return std::nullopt;
    source = source.narrow(d, 0, target.size(d));
  }
  return source;
}

// The units a layer kept: their indices among the teacher layer's `of` units.
struct Units {
  torch::Tensor index;
  int64_t of = 0;
};

// The name of the layer a tensor belongs to: "conv1" of "conv1.weight".
std::string layer_of(const std::string& name) { return name.substr(0, name.rfind('.')); }

}  // namespace

InitReport copy_from_teacher(Model& student, Model& teacher, const std::string& units) {
  if (units != "leading" && units != "importance") fail("student.init.units: {} is not leading or importance", quote(units));
  if (auto* ensemble = dynamic_cast<EnsembleModel*>(&teacher)) return copy_from_teacher(student, *ensemble->members()[0], units);
  torch::NoGradGuard no_grad;
  auto teacher_state = teacher.state();
  bool chain = units == "importance" && student.kind() != "resnet" && teacher.kind() == student.kind();
  InitReport report;
  std::optional<Units> last;  // the units the previous layer kept
  for (auto& [name, tensor] : student.state()) {
    auto it = std::find_if(teacher_state.begin(), teacher_state.end(), [&](const auto& t) { return t.first == name; });
    if (it == teacher_state.end()) continue;
    const torch::Tensor& source = it->second;
    std::optional<torch::Tensor> copy;
    if (chain && tensor.dim() >= 2 && source.dim() == tensor.dim()) {
      // A layer's weight [out, in, ...]: its inputs are the previous layer's kept units.
      torch::Tensor weight = source;
      if (last && last->of == source.size(1) && last->index.size(0) == tensor.size(1)) {
        weight = weight.index_select(1, last->index);
      }
      torch::Tensor index = torch::arange(source.size(0));
      if (tensor.size(0) < source.size(0)) {
        torch::Tensor importance = weight.abs().flatten(1).sum(1);
        index = std::get<0>(torch::sort(std::get<1>(torch::topk(importance, tensor.size(0)))));
        ++report.selected_layers;
        report.lines.push_back(fmt::format("{}: {} of {} units by importance", layer_of(name), tensor.size(0), source.size(0)));
      }
      copy = leading(weight.index_select(0, index), tensor);
      last = Units{index, source.size(0)};
    } else if (chain && tensor.dim() == 1 && last && source.size(0) == last->of && tensor.size(0) == last->index.size(0)) {
      copy = source.index_select(0, last->index);  // a bias or batch norm of the last layer's units
    } else {
      copy = leading(source, tensor);
    }
    if (!copy) continue;
    tensor.copy_(*copy);
    ++report.tensors;
  }
  return report;
}

}  // namespace kd::models
