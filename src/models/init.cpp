#include "kd/models/init.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <set>

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

// The units a layer kept: their indices among the teacher layer's `of` units; or, for units: svd, the
// basis [of, kept] its outputs were projected on (the next layer reads them through it).
struct Units {
  torch::Tensor index;
  int64_t of = 0;
  torch::Tensor basis;
  int64_t kept() const { return basis.defined() ? basis.size(1) : index.size(0); }
};

// The name of the layer a tensor belongs to: "conv1" of "conv1.weight".
std::string layer_of(const std::string& name) { return name.substr(0, name.rfind('.')); }

// A tensor name's layer: "conv1_bn.running_mean" -> family "conv", number 1, rest "_bn.running_mean";
// a name without a number after its letters ("head.bias") has number -1 and family its first part.
struct LayerName {
  std::string family;
  int64_t number = -1;
  std::string rest;
  std::string layer() const { return number < 0 ? family : family + std::to_string(number); }
};

LayerName parse_layer(const std::string& name) {
  std::string first = name.substr(0, name.find('.'));
  size_t letters = 0;
  while (letters < first.size() && std::isalpha(static_cast<unsigned char>(first[letters]))) ++letters;
  size_t digits = letters;
  while (digits < first.size() && std::isdigit(static_cast<unsigned char>(first[digits]))) ++digits;
  if (letters == 0 || digits == letters || digits - letters > 9) return {first, -1, name.substr(first.size())};
  return {first.substr(0, letters), std::stoll(first.substr(letters, digits - letters)), name.substr(digits)};
}

// Every layer of a model's tensors ("conv1", "head"), and each numbered family's numbers in order.
struct Layers {
  std::set<std::string> names;
  std::map<std::string, std::vector<int64_t>> numbers;
};

Layers layers_of(const NamedTensors& state) {
  Layers layers;
  for (const auto& [name, tensor] : state) {
    auto parsed = parse_layer(name);
    layers.names.insert(parsed.layer());
    if (parsed.number < 0) continue;
    auto& numbers = layers.numbers[parsed.family];
    if (std::find(numbers.begin(), numbers.end(), parsed.number) == numbers.end()) numbers.push_back(parsed.number);
  }
  for (auto& [family, numbers] : layers.numbers) std::sort(numbers.begin(), numbers.end());
  return layers;
}

void check_layer(const std::string& layer, const Layers& layers, const std::string& whose) {
  if (layers.names.count(layer)) return;
  std::vector<std::string> names(layers.names.begin(), layers.names.end());
  auto suggestion = nearest(layer, names);
  fail("student.init.layers: {} is not a layer of the {}{} (its layers: {})", quote(layer), whose,
       suggestion ? " (did you mean " + quote(*suggestion) + "?)" : std::string(), join(names, ", "));
}

// Per teacher layer with a tap ("conv2" from "conv2_act" or "conv2"), the variance of each unit's
// activation (channel 1, over rows and positions) on `sample`.
std::map<std::string, torch::Tensor> activation_variance(Model& teacher, const Layers& layers,
                                                         const torch::Tensor& sample) {
  auto taps = teacher.tap_names();
  std::vector<std::string> wanted, layer_names;
  for (const auto& layer : layers.names) {
    for (const std::string& tap : {layer + "_act", layer}) {
      if (std::find(taps.begin(), taps.end(), tap) != taps.end()) {
        wanted.push_back(tap);
        layer_names.push_back(layer);
        break;
      }
    }
  }
  std::vector<torch::Tensor> sum(wanted.size()), square(wanted.size());
  std::vector<double> values(wanted.size(), 0.0);
  teacher.set_training(false);
  constexpr int64_t kRows = 256;
  for (int64_t start = 0; start < sample.size(0); start += kRows) {
    auto tapped = teacher.forward_taps(sample.slice(0, start, start + kRows), wanted);
    for (size_t i = 0; i < wanted.size(); ++i) {
      torch::Tensor t = tapped.taps[i].to(torch::kDouble);
      t = t.dim() == 1 ? t.unsqueeze(1) : t.transpose(0, 1).flatten(1).transpose(0, 1);  // [values, units]
      sum[i] = sum[i].defined() ? sum[i] + t.sum(0) : t.sum(0);
      square[i] = square[i].defined() ? square[i] + t.pow(2).sum(0) : t.pow(2).sum(0);
      values[i] += static_cast<double>(t.size(0));
    }
  }
  std::map<std::string, torch::Tensor> variance;
  for (size_t i = 0; i < wanted.size(); ++i) {
    torch::Tensor mean = sum[i] / values[i];
    variance[layer_names[i]] = (square[i] / values[i] - mean.pow(2)).to(torch::kFloat);
  }
  return variance;
}

}  // namespace

InitReport copy_from_teacher(Model& student, Model& teacher, const InitOptions& options, const torch::Tensor& sample) {
  const std::string& units = options.units;
  if (units != "leading" && units != "importance" && units != "variance" && units != "svd") {
    fail("student.init.units: {} is not leading, importance, variance or svd", quote(units));
  }
  if (options.every < 1) fail("student.init.every: {} is not a layer step (1 or more)", options.every);
  if (auto* ensemble = dynamic_cast<EnsembleModel*>(&teacher)) {
    return copy_from_teacher(student, *ensemble->members()[0], options, sample);
  }
  if (units == "variance" && (!sample.defined() || sample.size(0) < 2)) {
    fail("student.init.units: variance needs training rows to measure the teacher's activations on");
  }
  torch::NoGradGuard no_grad;
  auto teacher_state = teacher.state();
  auto student_state = student.state();
  Layers student_layers = layers_of(student_state), teacher_layers = layers_of(teacher_state);
  for (const auto& [from, to] : options.layer_map) {
    check_layer(from, student_layers, "student");
    check_layer(to, teacher_layers, "teacher");
  }
  // The teacher tensor a student tensor copies: renamed by layer_map or every, else the same name.
  auto source_name = [&](const std::string& name) -> std::optional<std::string> {
    auto parsed = parse_layer(name);
    if (auto it = options.layer_map.find(parsed.layer()); it != options.layer_map.end()) return it->second + parsed.rest;
    if (options.every > 1 && parsed.number >= 0) {
      const auto& mine = student_layers.numbers[parsed.family];
      const auto& theirs = teacher_layers.numbers[parsed.family];
      size_t position = std::find(mine.begin(), mine.end(), parsed.number) - mine.begin();
      size_t target = position * static_cast<size_t>(options.every);
      if (target >= theirs.size()) return std::nullopt;
      return parsed.family + std::to_string(theirs[target]) + parsed.rest;
    }
    return name;
  };
  std::map<std::string, torch::Tensor> variance;
  if (units == "variance") variance = activation_variance(teacher, teacher_layers, sample);
  bool chain = units != "leading" && student.kind() != "resnet" && teacher.kind() == student.kind();
  InitReport report;
  std::set<std::string> renamed;
  std::optional<Units> last;  // the units the previous layer kept
  for (auto& [name, tensor] : student_state) {
    auto source_tensor_name = source_name(name);
    if (!source_tensor_name) continue;
    auto it = std::find_if(teacher_state.begin(), teacher_state.end(),
                           [&](const auto& t) { return t.first == *source_tensor_name; });
    if (it == teacher_state.end()) continue;
    std::string layer = layer_of(name), teacher_layer = layer_of(*source_tensor_name);
    if (layer != teacher_layer && renamed.insert(layer).second) {
      report.lines.push_back(fmt::format("{} <- teacher {}", layer, teacher_layer));
    }
    const torch::Tensor& source = it->second;
    std::optional<torch::Tensor> copy;
    if (chain && tensor.dim() >= 2 && source.dim() == tensor.dim()) {
      // A layer's weight [out, in, ...]: its inputs are the previous layer's kept units.
      torch::Tensor weight = source;
      if (last && last->of == source.size(1) && last->kept() == tensor.size(1)) {
        weight = last->basis.defined() && weight.dim() == 2 ? weight.matmul(last->basis)
                 : last->basis.defined()                    ? weight.narrow(1, 0, tensor.size(1))
                                                            : weight.index_select(1, last->index);
      }
      torch::Tensor index = torch::arange(source.size(0));
      bool has_norm = std::any_of(teacher_state.begin(), teacher_state.end(), [&](const auto& t) {
        return t.first.rfind(teacher_layer + "_bn.", 0) == 0;
      });
      if (units == "svd" && weight.dim() == 2 && tensor.size(0) < source.size(0) && !has_norm) {
        // A dense layer's weight W = U S V^T: the student keeps U_k^T W (its outputs projected on the k
        // leading left singular vectors) and the next layer reads them through U_k.
        auto [u, singular, vh] = torch::linalg_svd(weight.to(torch::kDouble), false);
        torch::Tensor basis = u.narrow(1, 0, tensor.size(0)).to(weight.dtype());
        copy = basis.t().matmul(weight);
        last = Units{torch::Tensor(), source.size(0), basis};
        ++report.selected_layers;
        double kept = singular.narrow(0, 0, tensor.size(0)).pow(2).sum().item<double>() / singular.pow(2).sum().item<double>();
        report.lines.push_back(fmt::format("{}: {} of {} units as a truncated SVD ({:.1f}% of the weight's energy)", layer,
                                           tensor.size(0), source.size(0), 100 * kept));
      } else if (tensor.size(0) < source.size(0)) {
        auto measured = variance.find(parse_layer(*source_tensor_name).layer());
        bool by_variance = units == "variance" && measured != variance.end() && measured->second.size(0) == source.size(0);
        torch::Tensor importance = by_variance ? measured->second : weight.abs().flatten(1).sum(1);
        index = std::get<0>(torch::sort(std::get<1>(torch::topk(importance, tensor.size(0)))));
        ++report.selected_layers;
        report.lines.push_back(fmt::format("{}: {} of {} units by {}", layer, tensor.size(0), source.size(0),
                                           by_variance ? "activation variance" : "importance"));
      }
      if (!copy) {
        copy = leading(weight.index_select(0, index), tensor);
        last = Units{index, source.size(0), torch::Tensor()};
      }
    } else if (chain && tensor.dim() == 1 && last && source.size(0) == last->of && tensor.size(0) == last->kept()) {
      // A bias or batch norm of the last layer's units (an SVD layer's bias is projected as its outputs).
      copy = last->basis.defined() ? last->basis.t().matmul(source) : source.index_select(0, last->index);
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
