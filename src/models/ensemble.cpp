#include "kd/models/ensemble.h"

#include <cmath>

#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::models {

EnsembleCombine parse_ensemble_combine(const std::string& word, const std::string& field) {
  if (word == "probabilities") return EnsembleCombine::probabilities;
  if (word == "logits") return EnsembleCombine::logits;
  if (word == "confidence") return EnsembleCombine::confidence;
  if (word == "correctness") return EnsembleCombine::correctness;
  fail("{}: {} is not a way to combine teachers, expected probabilities, logits, confidence or correctness", field,
       quote(word));
}

std::string to_string(EnsembleCombine combine) {
  switch (combine) {
    case EnsembleCombine::probabilities: return "probabilities";
    case EnsembleCombine::logits: return "logits";
    case EnsembleCombine::confidence: return "confidence";
    case EnsembleCombine::correctness: return "correctness";
  }
  return "?";
}

EnsembleModel::EnsembleModel(std::vector<ModelPtr> members, EnsembleCombine combine, std::vector<double> weights)
    : members_(std::move(members)), combine_(combine), weights_(std::move(weights)) {
  KD_CHECK(!members_.empty(), "an ensemble of no models");
  if (weights_.empty()) weights_.assign(members_.size(), 1.0);
  KD_CHECK(weights_.size() == members_.size(), "{} weights for {} teachers", weights_.size(), members_.size());
  for (double w : weights_) KD_CHECK(w > 0 && std::isfinite(w), "a teacher weight of {}", w);
}

torch::Tensor EnsembleModel::forward(const torch::Tensor& input) {
  std::vector<torch::Tensor> outputs;
  for (auto& member : members_) outputs.push_back(member->forward(input));
  return combined(outputs);
}

std::vector<std::string> EnsembleModel::tap_names() {
  std::vector<std::string> names;
  for (size_t m = 0; m < members_.size(); ++m) {
    for (const auto& tap : members_[m]->tap_names()) names.push_back(fmt::format("m{}.{}", m, tap));
  }
  return names;
}

TappedForward EnsembleModel::forward_taps(const torch::Tensor& input, const std::vector<std::string>& taps) {
  check_taps(*this, taps);
  // Each member runs once, with the taps asked of it ("m1.conv3_pool" is member 1's "conv3_pool").
  std::vector<std::vector<std::string>> asked(members_.size());
  std::vector<std::pair<size_t, size_t>> where(taps.size());  // tap -> (member, position in its list)
  for (size_t i = 0; i < taps.size(); ++i) {
    if (taps[i] == kOutputTap) continue;
    size_t dot = taps[i].find('.');
    size_t m = std::stoul(taps[i].substr(1, dot - 1));
    where[i] = {m, asked[m].size()};
    asked[m].push_back(taps[i].substr(dot + 1));
  }
  std::vector<TappedForward> runs;
  std::vector<torch::Tensor> outputs;
  for (size_t m = 0; m < members_.size(); ++m) {
    runs.push_back(asked[m].empty() ? TappedForward{members_[m]->forward(input), {}}
                                    : members_[m]->forward_taps(input, asked[m]));
    outputs.push_back(runs.back().output);
  }
  TappedForward result{combined(outputs), {}};
  for (size_t i = 0; i < taps.size(); ++i) {
    result.taps.push_back(taps[i] == kOutputTap ? result.output : runs[where[i].first].taps[where[i].second]);
  }
  return result;
}

torch::Tensor EnsembleModel::combined(const std::vector<torch::Tensor>& outputs) const {
  torch::Tensor sum, row_weights;
  for (size_t m = 0; m < members_.size(); ++m) {
    auto out = outputs[m].to(torch::kFloat);
    if (combine_ != EnsembleCombine::logits) out = torch::softmax(out, 1);
    // Per row: the member's weight, times its confidence or its precision for the class it predicts.
    torch::Tensor w;
    if (combine_ == EnsembleCombine::confidence) {
      w = weights_[m] * std::get<0>(out.max(1, true));
    } else if (combine_ == EnsembleCombine::correctness) {
      KD_CHECK(precision_.defined(), "combine: correctness before fit_precision");
      w = weights_[m] * precision_[static_cast<int64_t>(m)].index_select(0, out.argmax(1)).unsqueeze(1);
    } else {
      w = torch::full({out.size(0), 1}, weights_[m]);
    }
    sum = sum.defined() ? sum + w * out : w * out;
    row_weights = row_weights.defined() ? row_weights + w : w;
  }
  auto mean = sum / row_weights;
  // The log of the mean distribution; a probability that underflowed to 0 stays finite.
  return combine_ == EnsembleCombine::logits ? mean : mean.clamp_min(1e-30).log();
}

torch::Tensor EnsembleModel::fit_precision(const torch::Tensor& x, const torch::Tensor& labels, int64_t classes,
                                           int64_t batch_rows) {
  torch::NoGradGuard no_grad;
  torch::Tensor y = labels.to(torch::kLong);
  std::vector<torch::Tensor> rows;
  for (auto& member : members_) {
    std::vector<torch::Tensor> predicted;
    for (int64_t start = 0; start < x.size(0); start += batch_rows) {
      predicted.push_back(member->forward(x.slice(0, start, start + batch_rows)).argmax(1));
    }
    torch::Tensor p = torch::cat(predicted);
    auto right = torch::bincount(p.masked_select(p.eq(y)), {}, classes).to(torch::kFloat);
    auto made = torch::bincount(p, {}, classes).to(torch::kFloat);
    rows.push_back((right + 1) / (made + 2));
  }
  precision_ = torch::stack(rows);
  return precision_;
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
