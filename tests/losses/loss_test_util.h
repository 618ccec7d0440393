// Helpers shared by the loss tests: the golden fixture, error checks, the gradient check.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "kd/losses/loss_term.h"
#include "kd/util/error.h"
#include "test_util.h"

namespace kd::losses::test {

// tests/fixtures/loss_golden.json, written by tests/fixtures/make_loss_golden.py
// (/usr/bin/python3 tests/fixtures/make_loss_golden.py regenerates it from real PyTorch).
inline const nlohmann::json& golden() {
  static const nlohmann::json data = [] {
    std::ifstream in(std::string(KD_SOURCE_DIR) + "/tests/fixtures/loss_golden.json");
    if (!in) throw std::runtime_error("cannot open tests/fixtures/loss_golden.json");
    return nlohmann::json::parse(in);
  }();
  return data;
}

inline torch::Tensor tensor_from_json(const nlohmann::json& value, torch::ScalarType dtype) {
  std::vector<int64_t> sizes;
  const nlohmann::json* level = &value;
  while (level->is_array()) {
    sizes.push_back(static_cast<int64_t>(level->size()));
    if (level->empty()) break;
    level = &(*level)[0];
  }
  std::vector<double> flat;
  std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& v) {
    if (v.is_array()) {
      for (const auto& item : v) walk(item);
    } else {
      flat.push_back(v.is_boolean() ? (v.get<bool>() ? 1.0 : 0.0) : v.get<double>());
    }
  };
  walk(value);
  return torch::tensor(flat, torch::kFloat64).reshape(sizes).to(dtype);
}

// The inputs named `name` in the fixture; floats in `dtype`, class labels int64, has_label bool; for
// the feature inputs ("features_..."), student_feature, teacher_feature and a hint's parameters.
inline LossInputs golden_inputs(const std::string& name, torch::ScalarType dtype) {
  const nlohmann::json& inp = golden().at("inputs").at(name);
  LossInputs inputs;
  if (inp.contains("student_feature")) {  // a feature term's input; a hint's projection with it
    inputs.student_feature = tensor_from_json(inp.at("student_feature"), dtype);
    inputs.teacher_feature = tensor_from_json(inp.at("teacher_feature"), dtype);
    if (inp.contains("hint_weight")) {
      inputs.parameters = {tensor_from_json(inp.at("hint_weight"), dtype), tensor_from_json(inp.at("hint_bias"), dtype)};
    }
    return inputs;
  }
  inputs.student = tensor_from_json(inp.at("student"), dtype);
  inputs.teacher = tensor_from_json(inp.at("teacher"), dtype);
  bool classification = name.rfind("classification", 0) == 0;
  inputs.labels = tensor_from_json(inp.at("labels"), classification ? torch::kLong : dtype);
  inputs.has_label = tensor_from_json(inp.at("has_label"), torch::kBool);
  return inputs;
}

// A case's options as LossTermOptions (use_has_label is not an option: it says whether the case
// passes has_label).
inline LossTermOptions golden_options(const nlohmann::json& o) {
  LossTermOptions options(o.at("kind").get<std::string>());
  for (const auto& [key, value] : o.items()) {
    if (key == "kind" || key == "use_has_label") continue;
    if (value.is_string()) options.set(key, value.get<std::string>());
    else options.set(key, value.get<double>());
  }
  return options;
}

// Central differences (step `eps`, float64) of loss(student) against autograd, element by element:
//   |numeric - autograd| <= rtol * max(|autograd|, floor * max_j |autograd_j|) + noise
// The floor keeps entries near 0 from comparing truncation error with a relative bound; noise is
// the rounding error of the difference quotient, 8 ulp(|loss|) / eps (1.8e-9 for a loss of 1),
// below which central differences cannot resolve anything. Returns the largest
// |numeric - autograd| / (rtol * scale + noise) seen: <= 1 passes.
inline double expect_gradient_matches(const std::function<torch::Tensor(const torch::Tensor&)>& loss,
                                      const torch::Tensor& student, double eps = 1e-6, double rtol = 1e-5,
                                      double floor = 1e-2) {
  torch::Tensor x = student.detach().to(torch::kFloat64).clone().requires_grad_(true);
  torch::Tensor value = loss(x);
  EXPECT_EQ(value.dim(), 0);
  EXPECT_TRUE(std::isfinite(value.item<double>())) << value.item<double>();
  torch::Tensor autograd = torch::autograd::grad({value}, {x})[0];
  torch::NoGradGuard no_grad;
  torch::Tensor probe = x.detach().clone();
  auto flat = probe.view(-1);
  auto expected = autograd.reshape(-1);
  const double largest = expected.abs().max().item<double>();
  const double noise =
      8 * std::numeric_limits<double>::epsilon() * std::max(1.0, std::abs(value.item<double>())) / eps;
  double worst = 0;
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double saved = flat[i].item<double>();
    flat[i] = saved + eps;
    const double up = loss(probe).item<double>();
    flat[i] = saved - eps;
    const double down = loss(probe).item<double>();
    flat[i] = saved;
    const double numeric = (up - down) / (2 * eps);
    const double analytic = expected[i].item<double>();
    const double scale = std::max({std::abs(analytic), floor * largest, 1e-12});
    worst = std::max(worst, std::abs(numeric - analytic) / (rtol * scale + noise));
    EXPECT_LE(std::abs(numeric - analytic), rtol * scale + noise)
        << "element " << i << ": numeric " << numeric << ", autograd " << analytic;
  }
  return worst;
}

}  // namespace kd::losses::test
