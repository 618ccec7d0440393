// Input normalisation fitted on the training rows only and stored with every
// model, so that evaluation, export and inference apply the same transform.
//
//   x: float32 [N, ...feature shape];  apply(x) = (x - shift) / scale
//   Normalizer::fit(train_x, NormalizeOptions().mode("standard"))  -> per-feature mean/std
//   scope "feature": one (shift, scale) per feature or pixel  [...feature shape]
//   scope "channel": one per channel of [N, C, H, W] images   [C, 1, 1]
//   scope "global":  one scalar for everything
#pragma once

#include <nlohmann/json.hpp>
#include <torch/arg.h>
#include <torch/torch.h>

#include <string>

namespace kd::data {

struct NormalizeOptions {
  TORCH_ARG(std::string, mode) = "standard";  // standard | minmax | none
  TORCH_ARG(std::string, scope) = "auto";  // auto (channel for images, else feature) | feature | channel | global
};

class Normalizer {
 public:
  static Normalizer fit(const torch::Tensor& train_x, const NormalizeOptions& options);
  torch::Tensor apply(const torch::Tensor& x) const;
  // apply() in place, for large float32 tensors.
  void apply_(torch::Tensor& x) const;
  // The inverse, for regression targets reported in their own units.
  torch::Tensor invert(const torch::Tensor& x) const;
  bool identity() const { return mode_ == "none"; }
  const torch::Tensor& shift() const { return shift_; }
  const torch::Tensor& scale() const { return scale_; }

  nlohmann::json to_json() const;
  static Normalizer from_json(const nlohmann::json& json);

 private:
  std::string mode_ = "none";
  std::string scope_ = "feature";
  torch::Tensor shift_;  // float32, broadcastable to one example
  torch::Tensor scale_;  // float32, > 0
};

// Checks the options' words; kd::Error naming the recipe field otherwise.
void validate(const NormalizeOptions& options);

}  // namespace kd::data
