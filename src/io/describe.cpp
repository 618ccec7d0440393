#include "kd/io/describe.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "kd/util/error.h"
#include "kd/util/shape.h"
#include "kd/util/strings.h"

namespace kd::io {

std::vector<int64_t> parse_shape(const std::string& text, const std::string& field) {
  std::string inner = trim(text);
  if (!inner.empty() && inner.front() == '[' && inner.back() == ']') inner = inner.substr(1, inner.size() - 2);
  std::vector<int64_t> shape;
  for (const auto& part : split(inner, ',')) {
    auto value = parse_int(trim(part));
    if (!value || *value <= 0) fail("{}: {} is not a shape, expected positive sizes such as 1,28,28", field, quote(text));
    shape.push_back(*value);
  }
  if (shape.empty()) fail("{}: the shape is empty, expected sizes such as 1,28,28", field);
  return shape;
}

nlohmann::json describe_model_json(const std::string& path, LoadedModel& loaded, std::vector<int64_t> input_shape) {
  if (input_shape.empty() && loaded.has_info) input_shape = loaded.info.input_shape;
  if (input_shape.empty()) input_shape = loaded.model->declared_input_shape();
  if (input_shape.empty()) {
    fail("{}: the file does not store its input shape; pass it, e.g. --input-shape 1,28,28", path);
  }
  auto& model = *loaded.model;
  model.set_training(false);
  std::vector<int64_t> batch = {2};
  batch.insert(batch.end(), input_shape.begin(), input_shape.end());
  torch::Tensor output;
  try {
    torch::NoGradGuard no_grad;
    output = model.forward(torch::zeros(batch));
  } catch (const std::exception& e) {
    fail("{}: the model does not run on input {}: {}", path, shape_text(batch), first_line(e));
  }
  auto summary = model.summary(input_shape);
  nlohmann::json out;
  std::error_code ec;
  out["file"] = path;
  out["bytes"] = std::filesystem::is_directory(path, ec) ? 0 : static_cast<int64_t>(std::filesystem::file_size(path, ec));
  out["format"] = model.kind();
  out["input_shape"] = input_shape;
  out["output_shape"] = std::vector<int64_t>(output.sizes().begin() + 1, output.sizes().end());
  out["params"] = summary.params;
  out["macs"] = summary.macs;
  out["layers"] = summary.layers;
  // Every tap a feature loss can read, with its shape for this input.
  std::vector<std::string> names = model.tap_names();
  nlohmann::json taps = nlohmann::json::array();
  auto add_taps = [&](const std::vector<std::string>& asked) {
    torch::NoGradGuard no_grad;
    auto tapped = model.forward_taps(torch::zeros(batch), asked);
    for (size_t i = 0; i < asked.size(); ++i) {
      const torch::Tensor& tap = tapped.taps[i];
      taps.push_back({{"name", asked[i]},
                      {"shape", tap.dim() > 0 ? std::vector<int64_t>(tap.sizes().begin() + 1, tap.sizes().end())
                                              : std::vector<int64_t>{}}});
    }
  };
  try {
    if (!names.empty()) add_taps(names);
  } catch (const Error&) {
    // A submodule that forward does not call (or calls only inside control flow) is no tap: the rest are.
    taps = nlohmann::json::array();
    for (const auto& name : names) {
      try {
        add_taps({name});
      } catch (const Error&) {
      }
    }
  }
  if (std::find(names.begin(), names.end(), models::kOutputTap) == names.end()) {
    taps.push_back({{"name", models::kOutputTap}, {"shape", out["output_shape"]}});
  }
  out["taps"] = taps;
  if (loaded.has_info) {
    out["task"] = to_string(loaded.info.task);
    out["class_names"] = loaded.info.class_names;
    out["preprocessing"] = loaded.info.preprocessing;
    out["spec"] = loaded.info.spec;
  }
  return out;
}

namespace {

// `value` for one line of text: long strings (a tokenizer's serialised model) and long lists (a vocab)
// stand in by their sizes.
nlohmann::json abridged(const nlohmann::json& value) {
  if (value.is_string() && value.get_ref<const std::string&>().size() > 80) {
    return fmt::format("<{} characters>", value.get_ref<const std::string&>().size());
  }
  if (value.is_array() && value.size() > 16) return fmt::format("<{} entries>", value.size());
  if (!value.is_structured()) return value;
  nlohmann::json out = value.is_array() ? nlohmann::json::array() : nlohmann::json::object();
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (value.is_array()) {
      out.push_back(abridged(*it));
    } else {
      out[it.key()] = abridged(it.value());
    }
  }
  return out;
}

}  // namespace

std::string describe_model(const std::string& path, LoadedModel& loaded, std::vector<int64_t> input_shape) {
  auto d = describe_model_json(path, loaded, std::move(input_shape));
  std::ostringstream out;
  out << fmt::format("file          {} ({} bytes)\n", path, d["bytes"].get<int64_t>());
  std::string format = d["format"];
  if (d.contains("spec") && !d["spec"].is_null()) format += " (zoo " + d["spec"]["arch"].get<std::string>() + ")";
  out << fmt::format("format        {}\n", format);
  if (d.contains("task")) {
    out << fmt::format("task          {}\n", d["task"].get<std::string>());
    if (!d["class_names"].empty()) {
      std::vector<std::string> names = d["class_names"];
      out << fmt::format("classes       {}: {}\n", names.size(), join(names, ", "));
    }
    if (!d["preprocessing"].is_null()) out << fmt::format("preprocessing {}\n", abridged(d["preprocessing"]).dump());
  }
  out << fmt::format("input         {} per example\n", shape_text(d["input_shape"].get<std::vector<int64_t>>()));
  out << fmt::format("output        {} per example\n", shape_text(d["output_shape"].get<std::vector<int64_t>>()));
  out << fmt::format("params        {}\n", d["params"].get<int64_t>());
  out << fmt::format("MACs          {} per example\n", d["macs"].get<int64_t>());
  out << "layers\n";
  for (const auto& line : d["layers"]) out << "  " << line.get<std::string>() << "\n";
  out << "taps (feature losses' student: / teacher:)\n";
  for (const auto& tap : d["taps"]) {
    out << fmt::format("  {:<36} {}\n", tap["name"].get<std::string>(), shape_text(tap["shape"].get<std::vector<int64_t>>()));
  }
  return out.str();
}

}  // namespace kd::io
