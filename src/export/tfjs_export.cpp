#include "kd/export/tfjs_export.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>

#include "kd/data/normalize.h"
#include "kd/models/zoo.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/shape.h"
#include "kd/util/version.h"

namespace kd::exports {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using torch::Tensor;

const char* kShardName = "group1-shard1of1.bin";

// A Keras Functional graph under construction: layers in order, weights in TF layout.
struct KerasGraph {
  json layers = json::array();
  std::vector<std::pair<std::string, Tensor>> weights;
  std::string last;  // the layer whose output the next layer takes by default

  std::string add(const std::string& class_name, const std::string& name, json config,
                  const std::vector<std::string>& inputs, const std::vector<std::pair<std::string, Tensor>>& tensors = {}) {
    config["name"] = name;
    config["trainable"] = true;
    json inbound = json::array();
    if (!inputs.empty()) {
      json node = json::array();
      for (const auto& input : inputs) node.push_back(json::array({input, 0, 0, json::object()}));
      inbound.push_back(node);
    }
    layers.push_back({{"name", name}, {"class_name", class_name}, {"config", config}, {"inbound_nodes", inbound}});
    for (const auto& [key, tensor] : tensors) {
      weights.emplace_back(name + "/" + key, tensor.detach().to(torch::kCPU, torch::kFloat).contiguous());
    }
    last = name;
    return name;
  }
  // A layer on the output of the previous one.
  std::string append(const std::string& class_name, const std::string& name, json config,
                     const std::vector<std::pair<std::string, Tensor>>& tensors = {}) {
    return add(class_name, name, std::move(config), std::vector<std::string>{last}, tensors);
  }
};

std::string keras_name(std::string state_name) {
  std::replace(state_name.begin(), state_name.end(), '.', '_');
  return state_name;
}

// How the data's normalisation gets into the exported model.
struct Fold {
  bool active = false;  // a normalisation to apply
  Tensor shift, scale;  // expanded to the zoo's input shape (C, H, W or F)
  std::string scope;
};

class Exporter {
 public:
  Exporter(models::ZooModel& model, const io::ModelInfo& info) : model_(model), spec_(model.spec()) {
    for (const auto& [name, tensor] : model.state()) state_[name] = tensor.detach().to(torch::kCPU, torch::kFloat);
    const auto& shape = model.input_shape();
    image_ = shape.size() == 3;
    if (info.preprocessing.is_object() && info.preprocessing.contains("normalize")) {
      auto normalizer = data::Normalizer::from_json(info.preprocessing["normalize"]);
      if (!normalizer.identity()) {
        fold_.active = true;
        fold_.scope = info.preprocessing["normalize"].value("scope", "feature");
        fold_.shift = normalizer.shift().to(torch::kFloat).expand(shape).contiguous();
        fold_.scale = normalizer.scale().to(torch::kFloat).expand(shape).contiguous();
      }
    }
    if (info.task == Task::regression && info.preprocessing.is_object() &&
        info.preprocessing.contains("target_normalize")) {
      auto targets = data::Normalizer::from_json(info.preprocessing["target_normalize"]);
      if (!targets.identity()) {
        target_shift_ = targets.shift().to(torch::kFloat).reshape({-1});
        target_scale_ = targets.scale().to(torch::kFloat).reshape({-1});
      }
    }
  }

  // The preprocessing keys the graph applies itself.
  std::vector<std::string> folded(const json& input_notes) const {
    std::vector<std::string> keys = {"target_normalize"};
    if (!input_notes.value("normalized", false)) keys.push_back("normalize");
    return keys;
  }

  KerasGraph build(json& input_notes) {
    const auto& shape = model_.input_shape();
    std::vector<int64_t> keras_shape = image_ ? std::vector<int64_t>{shape[1], shape[2], shape[0]} : shape;
    json batch_shape = json::array({nullptr});
    for (int64_t d : keras_shape) batch_shape.push_back(d);
    graph_.add("InputLayer", "input", {{"batch_input_shape", batch_shape}, {"dtype", "float32"}, {"sparse", false}},
               std::vector<std::string>{});
    input_notes = {{"layout", image_ ? "channels_last [N, H, W, C]" : "features [N, F]"},
                   {"shape", keras_shape},
                   {"normalized", false},
                   {"normalization", fold_.active ? "" : "none"}};
    shape_ = shape;
    emit(models::zoo_plan(spec_, shape, model_.outputs()), "", input_notes);
    return std::move(graph_);
  }

 private:
  using Kind = models::ZooStepKind;

  // The zoo plan as Keras layers, named after the state (dots become underscores). shape_ follows the
  // activations' shape in kdistill's layout ([C, H, W] or [F]) for the Dense after a Flatten.
  void emit(const std::vector<models::ZooStep>& steps, const std::string& prefix, json& notes) {
    for (const auto& s : steps) {
      std::string name = prefix + s.name;
      switch (s.kind) {
        case Kind::Flatten:
          graph_.append("Flatten", keras_name(name), {{"data_format", "channels_last"}});
          if (shape_.size() == 3) flattened_image_ = shape_;
          shape_ = {element_count(shape_)};
          break;
        case Kind::Reshape:
          graph_.append("Reshape", keras_name(name), {{"target_shape", {s.shape[1], s.shape[2], s.shape[0]}}});
          shape_ = s.shape;
          break;
        case Kind::Linear:
          dense(name, notes);
          shape_ = {s.out};
          break;
        case Kind::Conv:
          if (fold_pending()) normalize_channels(notes);
          conv(name, s);
          shape_ = {s.out, (shape_[1] + 2 * s.padding - s.kernel) / s.stride + 1,
                    (shape_[2] + 2 * s.padding - s.kernel) / s.stride + 1};
          break;
        case Kind::BatchNorm:
          batch_norm(name);
          break;
        case Kind::Activation:
          activation(keras_name(name), s.op);
          break;
        case Kind::Dropout:
          graph_.append("Dropout", keras_name(name), {{"rate", s.p}});
          break;
        case Kind::Pool: {
          json pool = {{"pool_size", {2, 2}}, {"strides", {2, 2}}, {"padding", "valid"}, {"data_format", "channels_last"}};
          graph_.append(s.op == "max" ? "MaxPooling2D" : "AveragePooling2D", keras_name(name), pool);
          shape_ = {shape_[0], shape_[1] / 2, shape_[2] / 2};
          break;
        }
        case Kind::GlobalPool:
          graph_.append("GlobalAveragePooling2D", keras_name(name), {{"data_format", "channels_last"}});
          shape_ = {shape_[0]};
          break;
        case Kind::Block: {
          std::string input = graph_.last;
          std::vector<int64_t> input_shape = shape_;
          emit(s.body, name + ".", notes);
          std::string main = graph_.last, side = input;
          if (!s.shortcut.empty()) {
            graph_.last = input;
            shape_ = input_shape;
            emit(s.shortcut, name + ".", notes);
            side = graph_.last;
          }
          graph_.add("Add", keras_name(name) + "_add", json::object(), std::vector<std::string>{main, side});
          activation(keras_name(name) + "_act", s.op);
          break;
        }
        case Kind::Embedding:
        case Kind::Conv1d:
        case Kind::TimePool:
        case Kind::Positions:
        case Kind::Encoder:
        case Kind::LayerNorm:
        case Kind::SeqPool:
        case Kind::Recurrent:
          fail("tfjs export: {}: text layers do not export to TF.js", name);
      }
    }
  }

  Tensor tensor(const std::string& name) const {
    auto it = state_.find(name);
    KD_CHECK(it != state_.end(), "zoo state has no {}", name);
    return it->second;
  }
  bool has(const std::string& name) const { return state_.count(name) > 0; }
  bool fold_pending() const { return fold_.active && !fold_done_; }

  void activation(const std::string& name, const std::string& act) {
    if (act == "leaky_relu") {
      graph_.append("LeakyReLU", name, {{"alpha", models::kZooLeakyReluSlope}});
      return;
    }
    static const std::map<std::string, std::string> keras = {
        {"relu", "relu"}, {"gelu", "gelu"}, {"tanh", "tanh"}, {"silu", "swish"}};
    graph_.append("Activation", name, {{"activation", keras.at(act)}});
  }

  void batch_norm(const std::string& prefix) {
    graph_.append("BatchNormalization", keras_name(prefix),
                  {{"axis", -1}, {"momentum", 0.9}, {"epsilon", models::kZooBatchNormEps}, {"center", true}, {"scale", true}},
                  {{"gamma", tensor(prefix + ".weight")},
                   {"beta", tensor(prefix + ".bias")},
                   {"moving_mean", tensor(prefix + ".running_mean")},
                   {"moving_variance", tensor(prefix + ".running_var")}});
  }

  // A Dense from Linear `prefix`. The first weighted layer takes the input normalisation, (x - shift) /
  // scale, into its kernel and bias; after a Flatten of an image its rows are reordered from kdistill's
  // C, H, W order to TF's H, W, C; the head takes the regression targets' scaling.
  void dense(const std::string& prefix, json& notes) {
    Tensor kernel = tensor(prefix + ".weight").t();  // [in, out]
    Tensor bias = has(prefix + ".bias") ? tensor(prefix + ".bias") : Tensor();
    if (fold_pending()) {
      if (!bias.defined()) bias = torch::zeros({kernel.size(1)});
      Tensor scale = fold_.scale.reshape({-1, 1}), shift = fold_.shift.reshape({-1});
      kernel = kernel / scale;
      bias = bias - torch::matmul(shift, kernel);
      fold_done_ = true;
      notes["normalization"] = "folded into the first Dense layer " + keras_name(prefix);
    }
    if (!flattened_image_.empty()) {
      const auto& s = flattened_image_;
      kernel = kernel.reshape({s[0], s[1], s[2], -1}).permute({1, 2, 0, 3}).reshape({s[0] * s[1] * s[2], -1});
      flattened_image_.clear();
    }
    if (prefix == "head" && target_scale_.defined()) {
      // Outputs in the targets' own units: y * scale + shift folded into the last Dense.
      if (!bias.defined()) bias = torch::zeros({kernel.size(1)});
      kernel = kernel * target_scale_;
      bias = bias * target_scale_ + target_shift_;
    }
    std::vector<std::pair<std::string, Tensor>> weights = {{"kernel", kernel.contiguous()}};
    if (bias.defined()) weights.emplace_back("bias", bias);
    graph_.append("Dense", keras_name(prefix),
                  {{"units", kernel.size(1)}, {"activation", "linear"}, {"use_bias", bias.defined()}}, weights);
  }

  // The input normalisation before the first conv: one (shift, scale) per channel is a 1x1 depthwise
  // conv computing x / scale - shift / scale exactly; per-feature normalisation before a zero-padded
  // convolution has no exact Keras layer and is left to the caller.
  void normalize_channels(json& notes) {
    fold_done_ = true;
    if (fold_.scope == "feature") {
      notes["normalized"] = true;
      notes["normalization"] =
          "not folded: per-feature normalisation before a zero-padded convolution has no exact Keras layer; "
          "apply preprocessing.normalize, (x - shift) / scale, to the inputs first";
      return;
    }
    int64_t channels = image_ ? model_.input_shape()[0] : 1;
    Tensor scale = fold_.scale.reshape({channels, -1}).select(1, 0);
    Tensor shift = fold_.shift.reshape({channels, -1}).select(1, 0);
    graph_.append("DepthwiseConv2D", "normalize",
                  {{"kernel_size", {1, 1}},
                   {"strides", {1, 1}},
                   {"padding", "valid"},
                   {"data_format", "channels_last"},
                   {"dilation_rate", {1, 1}},
                   {"depth_multiplier", 1},
                   {"activation", "linear"},
                   {"use_bias", true}},
                  {{"depthwise_kernel", scale.reciprocal().reshape({1, 1, channels, 1})}, {"bias", -shift / scale}});
    notes["normalization"] = "folded into the leading DepthwiseConv2D layer normalize";
  }

  // Conv2d `prefix` with the zoo's symmetric padding. Stride 1 with padding k/2 is TF's "same"; a strided
  // conv gets an explicit ZeroPadding2D and "valid" (TF's "same" would pad only the end).
  void conv(const std::string& prefix, const models::ZooStep& step) {
    std::string input = graph_.last;
    Tensor weight = tensor(prefix + ".weight");  // [out, in, k, k]
    KD_CHECK(step.padding == 0 || step.padding == step.kernel / 2, "conv {}: padding {} with kernel {}", prefix,
             step.padding, step.kernel);
    std::string mode = step.padding == 0 ? "valid" : "same";
    if (step.stride != 1 && step.padding > 0) {
      input = graph_.add("ZeroPadding2D", keras_name(prefix) + "_pad",
                         {{"padding", {{step.padding, step.padding}, {step.padding, step.padding}}},
                          {"data_format", "channels_last"}},
                         std::vector<std::string>{input});
      mode = "valid";
    }
    std::vector<std::pair<std::string, Tensor>> weights = {{"kernel", weight.permute({2, 3, 1, 0})}};
    if (step.bias) weights.emplace_back("bias", tensor(prefix + ".bias"));
    graph_.add("Conv2D", keras_name(prefix),
               {{"filters", step.out},
                {"kernel_size", {step.kernel, step.kernel}},
                {"strides", {step.stride, step.stride}},
                {"padding", mode},
                {"data_format", "channels_last"},
                {"dilation_rate", {1, 1}},
                {"activation", "linear"},
                {"use_bias", step.bias}},
               std::vector<std::string>{input}, weights);
  }

  models::ZooModel& model_;
  models::ZooSpec spec_;
  std::map<std::string, Tensor> state_;
  bool image_ = false;
  Fold fold_;
  bool fold_done_ = false;
  std::vector<int64_t> shape_;            // the current activations' shape while emitting
  std::vector<int64_t> flattened_image_;  // [C, H, W] before a Flatten, until the next Dense
  Tensor target_shift_, target_scale_;    // regression: standardised targets back to their units
  KerasGraph graph_;
};

// Writes `dir` by filling a temporary sibling folder and renaming it into place.
void write_folder_atomic(const fs::path& dir, const std::function<void(const fs::path&)>& fill) {
  std::random_device device;
  fs::path parent = dir.parent_path().empty() ? fs::path(".") : dir.parent_path();
  fs::path temporary = parent / fmt::format(".{}.tmp{}", dir.filename().string(), device());
  fs::path old = parent / fmt::format(".{}.old{}", dir.filename().string(), device());
  std::error_code ec;
  try {
    fs::create_directories(temporary);
    fill(temporary);
    if (fs::exists(dir)) fs::rename(dir, old);
    fs::rename(temporary, dir);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(temporary, ec);
    if (fs::exists(old, ec) && !fs::exists(dir, ec)) fs::rename(old, dir, ec);
    fail("{}: cannot write the TF.js model folder ({})", dir.string(), e.code().message());
  } catch (...) {
    fs::remove_all(temporary, ec);
    throw;
  }
  fs::remove_all(old, ec);
}

}  // namespace

void export_tfjs(models::Model& model, const io::ModelInfo& info, const std::string& dir) {
  auto* zoo = dynamic_cast<models::ZooModel*>(&model);
  if (!zoo) fail("{}: tfjs export: only zoo models export to TF.js, got a {} model", dir, model.kind());
  json input_notes;
  Exporter exporter(*zoo, info);
  KerasGraph graph = exporter.build(input_notes);

  json manifest = json::array();
  std::string bytes;
  for (const auto& [name, tensor] : graph.weights) {
    manifest.push_back({{"name", name}, {"shape", tensor.sizes().vec()}, {"dtype", "float32"}});
    bytes.append(static_cast<const char*>(tensor.data_ptr()), static_cast<size_t>(tensor.numel()) * sizeof(float));
  }
  json metadata = io::with_folded(info, exporter.folded(input_notes)).to_json();
  metadata["tfjs_input"] = input_notes;
  json model_json = {
      {"format", "layers-model"},
      {"generatedBy", fmt::format("kdistill {}", version())},
      {"convertedBy", nullptr},
      {"modelTopology",
       {{"class_name", "Model"},
        {"keras_version", "tfjs-layers 4.22.0"},
        {"backend", "tensor_flow.js"},
        {"config",
         {{"name", "kdistill_" + zoo->spec().arch()},
          {"layers", graph.layers},
          {"input_layers", json::array({json::array({"input", 0, 0})})},
          {"output_layers", json::array({json::array({graph.last, 0, 0})})}}}}},
      {"weightsManifest", json::array({{{"paths", json::array({kShardName})}, {"weights", manifest}}})},
      {"userDefinedMetadata", {{"kdistill", metadata}}}};
  write_folder_atomic(dir, [&](const fs::path& folder) {
    write_file_atomic(folder / "model.json", model_json.dump(1));
    write_file_atomic(folder / kShardName, bytes);
  });
}

}  // namespace kd::exports
