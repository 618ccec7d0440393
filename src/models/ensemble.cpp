#include "kd/models/ensemble.h"

#include <cmath>

#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::models {

EnsembleCombine parse_ensemble_combine(const std::string& word, const std::string& field) {
  if (word == "probabilities") return EnsembleCombine::probabilities;
  if (word == "logits") return EnsembleCombine::logits;
  fail("{}: {} is not a way to combine teachers, expected probabilities or logits", field, quote(word));
}

std::string to_string(EnsembleCombine combine) {
  return combine == EnsembleCombine::probabilities ? "probabilities" : "logits";
}

EnsembleModel::EnsembleModel(std::vector<ModelPtr> members, EnsembleCombine combine)
    : members_(std::move(members)), combine_(combine) {
  KD_CHECK(!members_.empty(), "an ensemble of no models");
}

torch::Tensor EnsembleModel::forward(const torch::Tensor& input) {
  torch::Tensor sum;
  for (auto& member : members_) {
    auto out = member->forward(input).to(torch::kFloat);
    if (combine_ == EnsembleCombine::probabilities) out = torch::softmax(out, 1);
    sum = sum.defined() ? sum + out : out;
  }
  auto mean = sum / static_cast<double>(members_.size());
  // The log of the mean distribution; a probability that underflowed to 0 stays finite.
  return combine_ == EnsembleCombine::probabilities ? mean.clamp_min(1e-30).log() : mean;
}

std::vector<torch::Tensor> EnsembleModel::parameters() {
  std::vector<torch::Tensor> all;
  for (auto& member : members_) {
    auto p = member->parameters();
    all.insert(all.end(), p.begin(), p.end());
  }
  return all;
}

NamedTensors EnsembleModel::state() {
  NamedTensors all;
  for (size_t m = 0; m < members_.size(); ++m) {
    for (auto& [name, tensor] : members_[m]->state()) all.emplace_back(fmt::format("m{}.{}", m, name), tensor);
  }
  return all;
}

void EnsembleModel::load_state(const NamedTensors& state) {
  for (size_t m = 0; m < members_.size(); ++m) {
    std::string prefix = fmt::format("m{}.", m);
    NamedTensors own;
    for (const auto& [name, tensor] : state) {
      if (starts_with(name, prefix)) own.emplace_back(name.substr(prefix.size()), tensor);
    }
    members_[m]->load_state(own);
  }
}

void EnsembleModel::set_training(bool training) {
  for (auto& member : members_) member->set_training(training);
}

void EnsembleModel::to(torch::Device device) {
  for (auto& member : members_) member->to(device);
}

ModelSummary EnsembleModel::summary(const std::vector<int64_t>& input_shape) {
  ModelSummary total;
  for (size_t m = 0; m < members_.size(); ++m) {
    auto s = members_[m]->summary(input_shape);
    total.params += s.params;
    total.macs += s.macs;
    for (const auto& line : s.layers) total.layers.push_back(fmt::format("member {}: {}", m + 1, line));
  }
  return total;
}

std::vector<int64_t> EnsembleModel::declared_input_shape() {
  for (auto& member : members_) {
    auto shape = member->declared_input_shape();
    if (!shape.empty()) return shape;
  }
  return {};
}

}  // namespace kd::models
