#include "kd/io/tfjs_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <type_traits>

#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/shape.h"
#include "kd/util/strings.h"

namespace kd::io {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using torch::Tensor;
using Tensors = std::vector<Tensor>;

// One layer, ready to run on tensors in Keras's layout (channels last).
struct Layer {
  std::function<Tensor(const Tensors&)> forward;
  // Multiply-accumulates for one example, from the layer's input and output (batch of 1).
  std::function<int64_t(const Tensors&, const Tensor&)> macs;
};

// Whether `value` holds its numbers as integers only. nlohmann converts a float to an integer type
// unchecked, and a float past int64's range is undefined behaviour, so sizes are checked first.
bool integers_only(const json& value) {
  if (value.is_number_float()) return false;
  if (value.is_array()) return std::all_of(value.begin(), value.end(), [](const json& v) { return integers_only(v); });
  return true;
}

// What a builder sees of one layer of model.json: its config, its weights, and where it is for messages.
struct LayerConfig {
  std::string file, name, class_name;
  const json& config;
  std::map<std::string, Tensor> weights;  // "kernel", "bias", "gamma", ... of this layer

  std::string where() const { return fmt::format("{}: layer {} ({})", file, quote(name), class_name); }
  const json* find(const std::string& key) const {
    auto it = config.find(key);
    return it == config.end() || it->is_null() ? nullptr : &*it;
  }
  template <typename T>
  T get(const std::string& key, const T& fallback) const {
    const json* value = find(key);
    if (!value) return fallback;
    try {
      if constexpr (std::is_integral_v<T> || std::is_same_v<T, std::vector<int64_t>>) {
        if (!integers_only(*value)) fail("{}: config {} = {} has the wrong type", where(), key, value->dump());
      }
      return value->get<T>();
    } catch (const json::exception&) {
      fail("{}: config {} = {} has the wrong type", where(), key, value->dump());
    }
  }
  // An int or a list of two ints, each 1 or more (kernel_size, strides, dilation_rate, pool_size).
  std::vector<int64_t> pair(const std::string& key, std::vector<int64_t> fallback) const {
    const json* value = find(key);
    if (!value) return fallback;  // absent or null (find)
    auto list = value->is_number_integer() ? std::vector<int64_t>{value->get<int64_t>(), value->get<int64_t>()}
                                           : get<std::vector<int64_t>>(key, {});
    if (list.size() != 2 || list[0] < 1 || list[1] < 1) {
      fail("{}: config {} = {}: expected two sizes of 1 or more", where(), key, value->dump());
    }
    return list;
  }
  Tensor weight(const std::string& key) const {
    auto it = weights.find(key);
    if (it == weights.end()) fail("{}: weight {}/{} is not in the weights manifest", where(), name, key);
    return it->second;
  }
  Tensor optional_weight(const std::string& key, bool wanted) const {
    return wanted ? weight(key) : Tensor();
  }
  void channels_last() const {
    std::string format = get<std::string>("data_format", "channels_last");
    if (format != "channels_last") fail("{}: data_format {} is not supported (channels_last only)", where(), format);
  }
};

using Builder = Layer (*)(const LayerConfig&);

// ---- activations ---------------------------------------------------------------------------------

using Activation = std::function<Tensor(const Tensor&)>;

// Keras (snake_case) and TF.js (camelCase) names.
const std::map<std::string, Activation>& activations() {
  static const std::map<std::string, Activation> table = {
      {"linear", [](const Tensor& x) { return x; }},
      {"relu", [](const Tensor& x) { return torch::relu(x); }},
      {"relu6", [](const Tensor& x) { return torch::clamp(x, 0, 6); }},
      {"sigmoid", [](const Tensor& x) { return torch::sigmoid(x); }},
      {"hard_sigmoid", [](const Tensor& x) { return torch::clamp(x * 0.2 + 0.5, 0, 1); }},
      {"hardSigmoid", [](const Tensor& x) { return torch::clamp(x * 0.2 + 0.5, 0, 1); }},
      {"tanh", [](const Tensor& x) { return torch::tanh(x); }},
      {"softmax", [](const Tensor& x) { return torch::softmax(x, -1); }},
      {"log_softmax", [](const Tensor& x) { return torch::log_softmax(x, -1); }},
      {"logSoftmax", [](const Tensor& x) { return torch::log_softmax(x, -1); }},
      {"elu", [](const Tensor& x) { return torch::elu(x); }},
      {"selu", [](const Tensor& x) { return torch::selu(x); }},
      {"gelu", [](const Tensor& x) { return torch::gelu(x); }},
      {"gelu_new", [](const Tensor& x) { return torch::gelu(x, "tanh"); }},
      {"swish", [](const Tensor& x) { return torch::silu(x); }},
      {"silu", [](const Tensor& x) { return torch::silu(x); }},
      {"mish", [](const Tensor& x) { return x * torch::tanh(torch::softplus(x)); }},
      {"softplus", [](const Tensor& x) { return torch::softplus(x); }},
      {"softsign", [](const Tensor& x) { return x / (x.abs() + 1); }},
      {"exponential", [](const Tensor& x) { return torch::exp(x); }},
  };
  return table;
}

Activation activation_of(const LayerConfig& layer, const std::string& key, const std::string& fallback) {
  const json* value = layer.find(key);
  std::string name = fallback;
  if (value && value->is_string()) {
    name = value->get<std::string>();
  } else if (value && value->is_object()) {  // Keras 3: {"class_name": ..., "config": ...} or a bare name
    name = value->value("class_name", value->value("className", ""));
  } else if (value) {
    fail("{}: activation {} is not a name", layer.where(), value->dump());
  }
  auto it = activations().find(name);
  if (it == activations().end()) fail("{}: unsupported activation {}", layer.where(), quote(name));
  return it->second;
}

// ---- helpers -------------------------------------------------------------------------------------

Tensor only(const Tensors& inputs) { return inputs.at(0); }

Layer unary(std::function<Tensor(const Tensor&)> fn) {
  return {[fn](const Tensors& inputs) { return fn(only(inputs)); }, {}};
}

// TF's "same" padding: output ceil(in / stride), the odd pixel of padding at the end.
std::pair<int64_t, int64_t> same_padding(int64_t in, int64_t kernel, int64_t stride, int64_t dilation) {
  int64_t out = (in + stride - 1) / stride;
  int64_t total = std::max<int64_t>((out - 1) * stride + (kernel - 1) * dilation + 1 - in, 0);
  return {total / 2, total - total / 2};
}

bool padding_same(const LayerConfig& layer) {
  std::string padding = layer.get<std::string>("padding", "valid");
  if (padding != "same" && padding != "valid") fail("{}: padding {} is not supported (same or valid)", layer.where(), padding);
  return padding == "same";
}

// x [N, C, H, W] padded for "same" with `value`.
Tensor pad_same(const Tensor& x, const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                const std::vector<int64_t>& dilation, double value) {
  auto [top, bottom] = same_padding(x.size(2), kernel[0], strides[0], dilation[0]);
  auto [left, right] = same_padding(x.size(3), kernel[1], strides[1], dilation[1]);
  if (top + bottom + left + right == 0) return x;
  return torch::constant_pad_nd(x, {left, right, top, bottom}, value);
}

Tensor to_nchw(const Tensor& x) { return x.permute({0, 3, 1, 2}); }
Tensor to_nhwc(const Tensor& x) { return x.permute({0, 2, 3, 1}).contiguous(); }

// ---- layer builders ------------------------------------------------------------------------------

Layer build_identity(const LayerConfig&) { return unary([](const Tensor& x) { return x; }); }

Layer build_dense(const LayerConfig& layer) {
  Tensor kernel = layer.weight("kernel");  // [in, out]
  Tensor bias = layer.optional_weight("bias", layer.get<bool>("use_bias", true));
  Activation act = activation_of(layer, "activation", "linear");
  Layer out = unary([kernel, bias, act](const Tensor& x) {
    Tensor y = torch::matmul(x, kernel);
    return act(bias.defined() ? y + bias : y);
  });
  out.macs = [kernel](const Tensors&, const Tensor& y) { return y.numel() / kernel.size(1) * kernel.numel(); };
  return out;
}

Layer build_conv(const LayerConfig& layer, bool depthwise) {
  layer.channels_last();
  Tensor kernel = layer.weight(depthwise ? "depthwise_kernel" : "kernel");  // [kh, kw, cin(/groups), cout|mult]
  Tensor bias = layer.optional_weight("bias", layer.get<bool>("use_bias", true));
  Activation act = activation_of(layer, "activation", "linear");
  auto strides = layer.pair("strides", {1, 1});
  auto dilation = layer.pair("dilation_rate", {1, 1});
  bool same = padding_same(layer);
  if (kernel.dim() != 4) fail("{}: kernel of shape {}, expected 4 dims", layer.where(), shape_text(kernel.sizes().vec()));
  int64_t groups = depthwise ? kernel.size(2) : layer.get<int64_t>("groups", 1);
  std::string where = layer.where();
  Layer out = unary([=](const Tensor& input) {
    if (input.dim() != 4) fail("{}: expects [N, H, W, C] input, got {}", where, shape_text(input.sizes().vec()));
    // TF [kh, kw, cin, cout] -> torch [cout, cin, kh, kw]; depthwise [kh, kw, cin, m] -> [cin*m, 1, kh, kw].
    Tensor weight = depthwise ? kernel.permute({2, 3, 0, 1}).reshape({-1, 1, kernel.size(0), kernel.size(1)})
                              : kernel.permute({3, 2, 0, 1});
    if (input.size(3) != kernel.size(2) * (depthwise ? 1 : groups)) {
      fail("{}: input has {} channels, the kernel {} expects {}", where, input.size(3),
           shape_text(kernel.sizes().vec()), kernel.size(2) * (depthwise ? 1 : groups));
    }
    Tensor x = to_nchw(input);
    if (same) x = pad_same(x, {kernel.size(0), kernel.size(1)}, strides, dilation, 0.0);
    return act(to_nhwc(torch::conv2d(x, weight.contiguous(), bias, strides, std::vector<int64_t>{0, 0}, dilation, groups)));
  });
  // Per output value: kh * kw * (input channels it sees: cin / groups, or 1 for depthwise).
  out.macs = [kernel, depthwise](const Tensors&, const Tensor& y) {
    return kernel.size(0) * kernel.size(1) * (depthwise ? 1 : kernel.size(2)) * y.numel();
  };
  return out;
}

Layer build_conv2d(const LayerConfig& layer) { return build_conv(layer, false); }
Layer build_depthwise_conv2d(const LayerConfig& layer) { return build_conv(layer, true); }

Layer build_pool(const LayerConfig& layer, bool max) {
  layer.channels_last();
  auto size = layer.pair("pool_size", {2, 2});
  auto strides = layer.pair("strides", size);
  bool same = padding_same(layer);
  std::string where = layer.where();
  return unary([=](const Tensor& input) {
    if (input.dim() != 4) fail("{}: expects [N, H, W, C] input, got {}", where, shape_text(input.sizes().vec()));
    Tensor x = to_nchw(input);
    if (max) {
      if (same) x = pad_same(x, size, strides, {1, 1}, -std::numeric_limits<double>::infinity());
      return to_nhwc(torch::max_pool2d(x, size, strides));
    }
    if (!same) return to_nhwc(torch::avg_pool2d(x, size, strides));
    // TF averages over the pixels inside the image only.
    Tensor sums = torch::avg_pool2d(pad_same(x, size, strides, {1, 1}, 0.0), size, strides);
    Tensor ones = torch::ones({1, 1, x.size(2), x.size(3)}, x.options());
    Tensor counts = torch::avg_pool2d(pad_same(ones, size, strides, {1, 1}, 0.0), size, strides);
    return to_nhwc(sums / counts);
  });
}

Layer build_max_pool(const LayerConfig& layer) { return build_pool(layer, true); }
Layer build_avg_pool(const LayerConfig& layer) { return build_pool(layer, false); }

Layer build_global_pool(const LayerConfig& layer, bool max) {
  layer.channels_last();
  bool keep = layer.get<bool>("keepdims", false);
  std::string where = layer.where();
  return unary([=](const Tensor& x) {
    if (x.dim() != 4) fail("{}: expects [N, H, W, C] input, got {}", where, shape_text(x.sizes().vec()));
    return max ? x.amax({1, 2}, keep) : x.mean({1, 2}, keep);
  });
}

Layer build_global_avg_pool(const LayerConfig& layer) { return build_global_pool(layer, false); }
Layer build_global_max_pool(const LayerConfig& layer) { return build_global_pool(layer, true); }

Layer build_flatten(const LayerConfig& layer) {
  layer.channels_last();
  return unary([](const Tensor& x) { return x.reshape({x.size(0), -1}); });
}

Layer build_reshape(const LayerConfig& layer) {
  auto target = layer.get<std::vector<int64_t>>("target_shape", {});
  if (target.empty()) fail("{}: config target_shape is missing", layer.where());
  std::string where = layer.where();
  return unary([=](const Tensor& x) {
    std::vector<int64_t> shape = {x.size(0)};
    int64_t known = 1;
    for (int64_t d : target) {
      shape.push_back(d);
      if (d > 0) known *= d;
    }
    int64_t features = x.numel() / std::max<int64_t>(1, x.size(0));
    bool wildcard = std::count(target.begin(), target.end(), -1) == 1;
    if (wildcard ? features % known != 0 : features != known) {
      fail("{}: cannot reshape {} to {}", where, shape_text(x.sizes().vec()), shape_text(target));
    }
    return x.reshape(shape);
  });
}

Layer build_batch_norm(const LayerConfig& layer) {
  json axis = layer.find("axis") ? *layer.find("axis") : json(-1);
  if (axis.is_array() && axis.size() == 1) axis = axis[0];
  if (!axis.is_number_integer()) fail("{}: axis {} is not supported (the last axis only)", layer.where(), axis.dump());
  int64_t axis_index = axis.get<int64_t>();
  Tensor gamma = layer.optional_weight("gamma", layer.get<bool>("scale", true));
  Tensor beta = layer.optional_weight("beta", layer.get<bool>("center", true));
  Tensor mean = layer.weight("moving_mean");
  Tensor variance = layer.weight("moving_variance");
  double epsilon = layer.get<double>("epsilon", 1e-3);
  std::string where = layer.where();
  return unary([=](const Tensor& x) {
    if (axis_index != -1 && axis_index != x.dim() - 1) {
      fail("{}: axis {} is not the last axis of input {} (only the last axis is supported)", where, axis_index,
           shape_text(x.sizes().vec()));
    }
    Tensor y = (x - mean) * torch::rsqrt(variance + epsilon);
    if (gamma.defined()) y = y * gamma;
    return beta.defined() ? y + beta : y;
  });
}

Layer build_activation(const LayerConfig& layer) { return unary(activation_of(layer, "activation", "")); }

Layer build_relu(const LayerConfig& layer) {
  double max_value = layer.get<double>("max_value", std::numeric_limits<double>::infinity());
  double slope = layer.get<double>("negative_slope", 0.0);
  double threshold = layer.get<double>("threshold", 0.0);
  return unary([=](const Tensor& x) {
    Tensor y = torch::where(x >= threshold, x, (x - threshold) * slope);
    return std::isfinite(max_value) ? torch::clamp_max(y, max_value) : y;
  });
}

Layer build_leaky_relu(const LayerConfig& layer) {
  double alpha = layer.get<double>("alpha", layer.get<double>("negative_slope", 0.3));
  return unary([alpha](const Tensor& x) { return torch::leaky_relu(x, alpha); });
}

Layer build_elu(const LayerConfig& layer) {
  double alpha = layer.get<double>("alpha", 1.0);
  return unary([alpha](const Tensor& x) { return torch::elu(x, alpha); });
}

Layer build_softmax(const LayerConfig& layer) {
  int64_t axis = layer.get<int64_t>("axis", -1);
  return unary([axis](const Tensor& x) { return torch::softmax(x, axis); });
}

Layer build_rescaling(const LayerConfig& layer) {
  double scale = layer.get<double>("scale", 1.0);
  double offset = layer.get<double>("offset", 0.0);
  return unary([=](const Tensor& x) { return x * scale + offset; });
}

Layer build_zero_padding(const LayerConfig& layer) {
  layer.channels_last();
  const json* value = layer.find("padding");
  std::vector<int64_t> pads = {1, 1, 1, 1};  // top, bottom, left, right
  if (value && !integers_only(*value)) fail("{}: padding {} is not a size or sizes", layer.where(), value->dump());
  try {
    if (value && value->is_number_integer()) {
      pads.assign(4, value->get<int64_t>());
    } else if (value && value->is_array() && value->size() == 2 && (*value)[0].is_number_integer()) {
      int64_t h = (*value)[0].get<int64_t>(), w = (*value)[1].get<int64_t>();
      pads = {h, h, w, w};
    } else if (value) {
      auto nested = value->get<std::vector<std::vector<int64_t>>>();
      if (nested.size() != 2 || nested[0].size() != 2 || nested[1].size() != 2) throw std::invalid_argument("");
      pads = {nested[0][0], nested[0][1], nested[1][0], nested[1][1]};
    }
  } catch (const std::exception&) {
    fail("{}: padding {} is not a size, a pair or a pair of pairs", layer.where(), value->dump());
  }
  return unary([pads](const Tensor& x) {
    return torch::constant_pad_nd(x, {0, 0, pads[2], pads[3], pads[0], pads[1]}, 0.0);
  });
}

Layer merge(const LayerConfig& layer, std::function<Tensor(const Tensor&, const Tensor&)> op, bool average = false) {
  std::string where = layer.where();
  return {[=](const Tensors& inputs) {
            if (inputs.size() < 2) fail("{}: needs at least two inputs, got {}", where, inputs.size());
            Tensor y = inputs[0];
            for (size_t i = 1; i < inputs.size(); ++i) {
              if (inputs[i].sizes() != inputs[0].sizes()) {
                fail("{}: inputs of shapes {} and {} differ", where, shape_text(inputs[0].sizes().vec()),
                     shape_text(inputs[i].sizes().vec()));
              }
              y = op(y, inputs[i]);
            }
            return average ? y / static_cast<double>(inputs.size()) : y;
          },
          {}};
}

Layer build_add(const LayerConfig& layer) { return merge(layer, [](const Tensor& a, const Tensor& b) { return a + b; }); }
Layer build_subtract(const LayerConfig& layer) {
  return merge(layer, [](const Tensor& a, const Tensor& b) { return a - b; });
}
Layer build_multiply(const LayerConfig& layer) {
  return merge(layer, [](const Tensor& a, const Tensor& b) { return a * b; });
}
Layer build_average(const LayerConfig& layer) {
  return merge(layer, [](const Tensor& a, const Tensor& b) { return a + b; }, true);
}
Layer build_maximum(const LayerConfig& layer) {
  return merge(layer, [](const Tensor& a, const Tensor& b) { return torch::maximum(a, b); });
}
Layer build_minimum(const LayerConfig& layer) {
  return merge(layer, [](const Tensor& a, const Tensor& b) { return torch::minimum(a, b); });
}

Layer build_concatenate(const LayerConfig& layer) {
  int64_t axis = layer.get<int64_t>("axis", -1);
  return {[axis](const Tensors& inputs) { return torch::cat(inputs, axis); }, {}};
}

// Every layer class TfjsModel runs: the one place to add one.
const std::map<std::string, Builder>& layer_builders() {
  static const std::map<std::string, Builder> table = {
      {"InputLayer", build_identity},
      {"Dropout", build_identity},
      {"SpatialDropout2D", build_identity},
      {"GaussianNoise", build_identity},
      {"GaussianDropout", build_identity},
      {"AlphaDropout", build_identity},
      {"Dense", build_dense},
      {"Conv2D", build_conv2d},
      {"DepthwiseConv2D", build_depthwise_conv2d},
      {"MaxPooling2D", build_max_pool},
      {"AveragePooling2D", build_avg_pool},
      {"GlobalAveragePooling2D", build_global_avg_pool},
      {"GlobalMaxPooling2D", build_global_max_pool},
      {"Flatten", build_flatten},
      {"Reshape", build_reshape},
      {"BatchNormalization", build_batch_norm},
      {"Activation", build_activation},
      {"ReLU", build_relu},
      {"LeakyReLU", build_leaky_relu},
      {"ELU", build_elu},
      {"Softmax", build_softmax},
      {"Rescaling", build_rescaling},
      {"ZeroPadding2D", build_zero_padding},
      {"Add", build_add},
      {"Subtract", build_subtract},
      {"Multiply", build_multiply},
      {"Average", build_average},
      {"Maximum", build_maximum},
      {"Minimum", build_minimum},
      {"Concatenate", build_concatenate},
  };
  return table;
}

// ---- model.json --------------------------------------------------------------------------------

struct Node {
  std::string name, class_name;
  std::vector<std::string> inputs;  // producing layers
  Layer layer;
  int64_t params = 0;
};

// The bytes of one stored value of a manifest entry, and how to turn them into float32.
struct WeightEncoding {
  int64_t bytes = 4;
  std::string dtype;  // float32 | int32 | uint8 | uint16 | float16
  double scale = 1, min = 0;
};

WeightEncoding encoding_of(const json& entry, const std::string& where) {
  WeightEncoding encoding;
  encoding.dtype = entry.value("dtype", "float32");
  auto q = entry.find("quantization");
  if (q != entry.end() && !q->is_null()) {
    encoding.dtype = q->value("dtype", "");
    if (encoding.dtype == "uint8" || encoding.dtype == "uint16") {
      encoding.scale = q->value("scale", 1.0);
      encoding.min = q->value("min", 0.0);
    } else if (encoding.dtype != "float16") {
      fail("{}: unsupported quantization dtype {} (uint8, uint16 or float16)", where, quote(encoding.dtype));
    }
  } else if (encoding.dtype != "float32" && encoding.dtype != "int32") {
    fail("{}: unsupported dtype {} (float32 or int32, or uint8/uint16/float16 quantization)", where,
         quote(encoding.dtype));
  }
  encoding.bytes = encoding.dtype == "uint8" ? 1 : (encoding.dtype == "uint16" || encoding.dtype == "float16") ? 2 : 4;
  return encoding;
}

Tensor decode(const char* data, const std::vector<int64_t>& shape, const WeightEncoding& e) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  torch::Dtype type = e.dtype == "float32" ? torch::kFloat
                      : e.dtype == "int32" ? torch::kInt
                      : e.dtype == "uint8" ? torch::kByte
                      : e.dtype == "float16" ? torch::kHalf
                                             : torch::kInt16;
  Tensor raw = torch::empty({count}, type);
  std::memcpy(raw.data_ptr(), data, static_cast<size_t>(count * e.bytes));
  Tensor values;
  if (e.dtype == "uint16") {
    values = raw.to(torch::kInt) & 0xffff;  // stored unsigned
  } else {
    values = raw;
  }
  values = values.to(torch::kFloat);
  if (e.dtype == "uint8" || e.dtype == "uint16") values = values * e.scale + e.min;
  return values.reshape(shape);
}

// Reads the weight groups: name -> float32 tensor, in manifest order.
models::NamedTensors read_weights(const json& manifest, const fs::path& model_json) {
  std::string file = model_json.string();
  models::NamedTensors weights;
  if (manifest.is_null()) return weights;
  if (!manifest.is_array()) fail("{}: weightsManifest is not a list", file);
  for (size_t g = 0; g < manifest.size(); ++g) {
    const json& group = manifest[g];
    if (!group.is_object() || !group.contains("paths") || !group.contains("weights") || !group["paths"].is_array() ||
        !group["weights"].is_array()) {
      fail("{}: weightsManifest[{}] needs lists \"paths\" and \"weights\"", file, g);
    }
    std::string bytes;
    std::vector<std::string> names;
    std::vector<fs::path> shards;
    for (const auto& path : group["paths"]) {
      if (!path.is_string()) fail("{}: weightsManifest[{}].paths holds {}, not a file name", file, g, path.dump());
      // A shard is a file of the model's folder: no absolute path, no "..", nothing outside it.
      fs::path relative = fs::path(path.get<std::string>()).lexically_normal();
      if (relative.empty() || relative.is_absolute() || *relative.begin() == "..") {
        fail("{}: weightsManifest[{}].paths: {} leaves the model's folder", file, g, quote(path.get<std::string>()));
      }
      fs::path shard = model_json.parent_path() / relative;
      if (!fs::is_regular_file(shard)) fail("{}: weight shard {} is missing", file, shard.string());
      shards.push_back(shard);
      names.push_back(path.get<std::string>());
    }
    std::vector<std::tuple<std::string, std::vector<int64_t>, WeightEncoding>> entries;
    int64_t expected = 0;
    for (size_t w = 0; w < group["weights"].size(); ++w) {
      const json& entry = group["weights"][w];
      std::string where = fmt::format("{}: weightsManifest[{}].weights[{}]", file, g, w);
      if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() || !entry.contains("shape")) {
        fail("{} needs a name and a shape", where);
      }
      std::vector<int64_t> shape;
      try {
        if (integers_only(entry["shape"])) shape = entry["shape"].get<std::vector<int64_t>>();
        else fail("{}: shape {} is not a list of sizes", where, entry["shape"].dump());
      } catch (const json::exception&) {
        fail("{}: shape {} is not a list of sizes", where, entry["shape"].dump());
      }
      const int64_t count = checked_element_count(shape, where);
      WeightEncoding encoding = encoding_of(entry, where + " (" + entry["name"].get<std::string>() + ")");
      expected += count * encoding.bytes;
      entries.emplace_back(entry["name"].get<std::string>(), shape, encoding);
    }
    // The shards' sizes against the manifest before any is read.
    uintmax_t found = 0;
    for (const auto& shard : shards) found += fs::file_size(shard);
    if (found != static_cast<uintmax_t>(expected)) {
      fail("{}: weight shards {} hold {} bytes, but the manifest's weights need {}: expected {} bytes, found {}",
           file, join(names, ", "), found, expected, expected, found);
    }
    for (const auto& shard : shards) bytes += read_file(shard);
    int64_t offset = 0;
    for (const auto& [name, shape, encoding] : entries) {
      weights.emplace_back(name, decode(bytes.data() + offset, shape, encoding));
      offset += element_count(shape) * encoding.bytes;
    }
  }
  return weights;
}

// The producing layers of a Keras inbound_nodes entry (Keras 2 / TF.js lists, or Keras 3 "args").
void collect_inbound(const json& value, std::vector<std::string>& names, const std::string& where) {
  if (value.is_object()) {
    if (value.contains("keras_history")) {
      collect_inbound(json::array({value["keras_history"]}), names, where);
      return;
    }
    for (const auto& [key, item] : value.items()) {
      if (key == "args" || key == "config") collect_inbound(item, names, where);
    }
    return;
  }
  if (!value.is_array()) return;
  if (value.size() >= 3 && value[0].is_string() && value[1].is_number_integer()) {
    if (value[1].get<int64_t>() != 0) {
      fail("{}: calls layer {} a second time (shared layers are not supported)", where, quote(value[0].get<std::string>()));
    }
    names.push_back(value[0].get<std::string>());
    return;
  }
  for (const auto& item : value) collect_inbound(item, names, where);
}

std::vector<int64_t> input_shape_of(const json& config) {
  for (const char* key : {"batch_input_shape", "batchInputShape", "batch_shape"}) {
    auto it = config.find(key);
    if (it != config.end() && it->is_array()) {
      std::vector<int64_t> shape;
      for (size_t i = 1; i < it->size(); ++i) shape.push_back((*it)[i].is_number_integer() ? (*it)[i].get<int64_t>() : -1);
      return shape;
    }
  }
  auto it = config.find("input_shape");
  if (it != config.end() && it->is_array()) {
    std::vector<int64_t> shape;
    for (const auto& d : *it) shape.push_back(d.is_number_integer() ? d.get<int64_t>() : -1);
    return shape;
  }
  return {};
}

std::string rest_after(const std::string& name, const std::string& prefix) {
  return starts_with(name, prefix + "/") ? name.substr(prefix.size() + 1) : std::string();
}

}  // namespace

struct TfjsModel::Impl {
  std::string file;
  std::vector<Node> nodes;  // in an order where inputs come first
  std::string input_name, output_name;
  std::vector<int64_t> input_shape;  // Keras layout, no batch dim
  models::NamedTensors weights;
  json metadata;

  Tensor adapt(const Tensor& input) const;
  Tensor run(const Tensor& input, std::vector<std::pair<const Node*, Tensor>>* trace,
             std::map<std::string, Tensor>* values) const;
};

TfjsModel::TfjsModel(const std::string& model_json) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.file = model_json;
  require_file(model_json, "TF.js model.json");
  // The topology is text of kilobytes to a few megabytes (the weights are in the shards): a larger file
  // is not read into memory.
  constexpr uintmax_t kMaxJsonBytes = uintmax_t{64} << 20;
  if (const auto size = fs::file_size(model_json); size > kMaxJsonBytes) {
    fail("{}: {} bytes, not a TF.js model.json (at most 64 MB: the weights belong in the shards)", model_json, size);
  }
  json root;
  try {
    root = json::parse(read_file(model_json));
  } catch (const json::exception& e) {
    fail("{}: not a TF.js model.json: not valid JSON (truncated?) ({})", model_json, first_line(e));
  }
  if (!root.is_object()) fail("{}: not a TF.js model.json: expected a JSON object", model_json);
  std::string format = root.value("format", "layers-model");
  if (format == "graph-model") {
    fail("{}: a TF.js graph model; only layers models (tf.LayersModel / Keras) are supported", model_json);
  }
  json topology = root.value("modelTopology", json());
  if (topology.is_object() && topology.contains("model_config")) topology = topology["model_config"];
  if (!topology.is_object() || !topology.contains("class_name") || !topology["class_name"].is_string()) {
    fail("{}: not a TF.js layers model: modelTopology with a class_name is missing", model_json);
  }
  m.metadata = root.value("userDefinedMetadata", json());
  m.weights = read_weights(root.value("weightsManifest", json()), fs::path(model_json));

  std::string model_class = topology["class_name"].get<std::string>();
  json config = topology.value("config", json());
  json layers = config.is_array() ? config : config.value("layers", json());
  if (!layers.is_array() || layers.empty()) fail("{}: modelTopology.config.layers is missing or empty", model_json);
  bool sequential = model_class == "Sequential";
  if (!sequential && model_class != "Model" && model_class != "Functional") {
    fail("{}: model class {} is not supported (Sequential, Functional or Model)", model_json, quote(model_class));
  }

  std::set<std::string> used_weights;
  std::set<std::string> names;
  std::vector<Node> pending;
  for (size_t i = 0; i < layers.size(); ++i) {
    const json& entry = layers[i];
    std::string where = fmt::format("{}: layer {}", model_json, i);
    if (!entry.is_object() || !entry.contains("class_name") || !entry["class_name"].is_string()) {
      fail("{} has no class_name", where);
    }
    Node node;
    node.class_name = entry["class_name"].get<std::string>();
    static const json empty = json::object();
    const json& layer_config = entry.contains("config") && entry["config"].is_object() ? entry["config"] : empty;
    node.name = entry.value("name", layer_config.value("name", fmt::format("layer_{}", i)));
    if (!names.insert(node.name).second) fail("{}: two layers are named {}", model_json, quote(node.name));
    auto builder = layer_builders().find(node.class_name);
    if (builder == layer_builders().end()) {
      fail("{}: layer {} has class {}, which is not supported", model_json, quote(node.name), node.class_name);
    }
    LayerConfig context{model_json, node.name, node.class_name, layer_config, {}};
    for (const auto& [name, tensor] : m.weights) {
      std::string key = rest_after(name, node.name);
      if (key.empty()) continue;
      key = key.substr(key.rfind('/') + 1);
      context.weights[key] = tensor;
      used_weights.insert(name);
      if (key != "moving_mean" && key != "moving_variance") node.params += tensor.numel();
    }
    try {
      node.layer = builder->second(context);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {  // e.g. a weight of the wrong rank
      fail("{}: {}", context.where(), first_line(e));
    }

    if (sequential) {
      if (pending.empty()) {
        m.input_shape = input_shape_of(layer_config);
        if (m.input_shape.empty()) fail("{}: the first layer {} declares no input shape", model_json, quote(node.name));
        m.input_name = "__input__";
      }
      node.inputs = {pending.empty() ? m.input_name : pending.back().name};
      if (node.class_name == "InputLayer") node.inputs.clear();
    } else if (node.class_name == "InputLayer") {
      if (!m.input_name.empty()) fail("{}: models with more than one input are not supported", model_json);
      m.input_name = node.name;
      m.input_shape = input_shape_of(layer_config);
    } else {
      collect_inbound(entry.value("inbound_nodes", json()), node.inputs, fmt::format("{}: layer {}", model_json, quote(node.name)));
      if (node.inputs.empty()) fail("{}: layer {} has no inbound nodes", model_json, quote(node.name));
    }
    pending.push_back(std::move(node));
  }
  if (sequential && pending.front().class_name == "InputLayer") {
    m.input_name = pending.front().name;
    if (pending.size() > 1) pending[1].inputs = {m.input_name};
  }
  if (m.input_name.empty()) fail("{}: the model declares no InputLayer", model_json);
  for (const auto& [name, tensor] : m.weights) {
    if (!used_weights.count(name)) fail("{}: weight {} belongs to no layer of the model", model_json, quote(name));
  }

  if (sequential) {
    m.output_name = pending.back().name;
  } else {
    std::vector<std::string> outputs;
    collect_inbound(config.value("output_layers", json()), outputs, model_json);
    if (outputs.size() != 1) fail("{}: the model has {} outputs; only single-output models are supported", model_json, outputs.size());
    m.output_name = outputs[0];
  }

  // Order the nodes so that every input is computed first (Keras lists them so; checked here).
  std::set<std::string> done;
  if (sequential && pending.front().class_name != "InputLayer") done.insert(m.input_name);
  while (!pending.empty()) {
    size_t before = pending.size();
    for (auto it = pending.begin(); it != pending.end();) {
      bool ready = std::all_of(it->inputs.begin(), it->inputs.end(), [&](const std::string& n) { return done.count(n) > 0; });
      if (!ready) {
        ++it;
        continue;
      }
      done.insert(it->name);
      m.nodes.push_back(std::move(*it));
      it = pending.erase(it);
    }
    if (pending.size() == before) {
      for (const auto& input : pending.front().inputs) {
        if (!names.count(input)) {
          fail("{}: layer {} takes its input from {}, which is not a layer of the model", model_json,
               quote(pending.front().name), quote(input));
        }
      }
      fail("{}: the layers' inbound nodes form a cycle at {}", model_json, quote(pending.front().name));
    }
  }
  if (!done.count(m.output_name)) fail("{}: output layer {} is not a layer of the model", model_json, quote(m.output_name));
}

TfjsModel::~TfjsModel() = default;

Tensor TfjsModel::Impl::adapt(const Tensor& input) const {
  Tensor x = input.scalar_type() == torch::kFloat ? input : input.to(torch::kFloat);
  int64_t n = x.size(0);
  const auto& shape = input_shape;
  if (x.dim() == 4) x = x.permute({0, 2, 3, 1});  // kdistill images are [N, C, H, W]
  if (shape.size() == 3 && x.dim() == 2 && shape[0] > 0 && shape[1] > 0 && shape[2] > 0 &&
      x.size(1) == shape[0] * shape[1] * shape[2]) {
    x = x.reshape({n, shape[2], shape[0], shape[1]}).permute({0, 2, 3, 1});  // kdistill flattens C, H, W
  }
  bool fits = x.dim() == static_cast<int64_t>(shape.size()) + 1;
  for (size_t i = 0; fits && i < shape.size(); ++i) fits = shape[i] < 0 || x.size(i + 1) == shape[i];
  if (fits) return x.contiguous();
  // Reshape only where no order is in question: to flat input (TF flattens H, W, C), or between shapes
  // that differ by dims of 1 ([N, H, W, 1] for a model that takes [H, W]).
  auto without_ones = [](std::vector<int64_t> dims) {
    dims.erase(std::remove(dims.begin(), dims.end(), 1), dims.end());
    return dims;
  };
  bool known = std::all_of(shape.begin(), shape.end(), [](int64_t d) { return d > 0; });
  std::vector<int64_t> example(x.sizes().begin() + 1, x.sizes().end());
  int64_t features = 1;
  for (int64_t d : shape) features *= d;
  if (known && x.numel() == n * features && (shape.size() == 1 || without_ones(shape) == without_ones(example))) {
    std::vector<int64_t> full = {n};
    full.insert(full.end(), shape.begin(), shape.end());
    return x.reshape(full).contiguous();
  }
  fail("{}: input of shape {} does not fit the model's input {} (channels last)", file, shape_text(input.sizes().vec()),
       shape_text(shape));
}

Tensor TfjsModel::Impl::run(const Tensor& input, std::vector<std::pair<const Node*, Tensor>>* trace,
                            std::map<std::string, Tensor>* values) const {
  std::map<std::string, Tensor> local;
  std::map<std::string, Tensor>& value = values ? *values : local;
  value[input_name] = adapt(input);
  torch::NoGradGuard no_grad;
  for (const Node& node : nodes) {
    Tensors inputs;
    for (const auto& name : node.inputs) inputs.push_back(value.at(name));
    Tensor y;
    if (node.inputs.empty()) {
      y = value.at(input_name);
    } else {
      try {
        y = node.layer.forward(inputs);
      } catch (const Error&) {
        throw;
      } catch (const std::exception& e) {
        std::vector<std::string> shapes;
        for (const auto& t : inputs) shapes.push_back(shape_text(t.sizes().vec()));
        fail("{}: layer {} ({}) on input {}: {}", file, quote(node.name), node.class_name, join(shapes, ", "),
             first_line(e));
      }
    }
    value[node.name] = y;
    if (trace) trace->emplace_back(&node, y);
  }
  return value.at(output_name);
}

Tensor TfjsModel::forward(const Tensor& input) {
  if (input.dim() < 2) fail("{}: input of shape {} has no batch dim", impl_->file, shape_text(input.sizes().vec()));
  return impl_->run(input, nullptr, nullptr);
}

std::vector<std::string> TfjsModel::tap_names() {
  std::vector<std::string> names;
  for (const Node& node : impl_->nodes) names.push_back(node.name);
  return names;
}

models::TappedForward TfjsModel::forward_taps(const Tensor& input, const std::vector<std::string>& taps) {
  if (taps.empty()) return {forward(input), {}};
  models::check_taps(*this, taps);
  std::map<std::string, Tensor> values;
  models::TappedForward result;
  result.output = impl_->run(input, nullptr, &values);
  for (const auto& tap : taps) {
    Tensor value = tap == models::kOutputTap ? result.output : values.at(tap);
    // Keras computes channels last; kdistill's taps are [N, C, H, W] like its inputs.
    result.taps.push_back(value.dim() == 4 && tap != models::kOutputTap ? value.permute({0, 3, 1, 2}) : value);
  }
  return result;
}

std::vector<Tensor> TfjsModel::parameters() { return {}; }

models::NamedTensors TfjsModel::state() { return impl_->weights; }

void TfjsModel::load_state(const models::NamedTensors& state) {
  std::map<std::string, Tensor> given(state.begin(), state.end());
  for (const auto& [name, tensor] : impl_->weights) {
    auto it = given.find(name);
    if (it == given.end()) fail("load_state: {}: missing tensor {}", impl_->file, quote(name));
    if (it->second.sizes() != tensor.sizes()) {
      fail("load_state: {}: {}: shape {}, expected {}", impl_->file, quote(name), shape_text(it->second.sizes().vec()),
           shape_text(tensor.sizes().vec()));
    }
  }
  if (given.size() != impl_->weights.size()) fail("load_state: {}: the state has tensors the model lacks", impl_->file);
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : impl_->weights) tensor.copy_(given.at(name));
}

void TfjsModel::set_training(bool) {}

void TfjsModel::to(torch::Device device) {
  // set_data keeps the tensor objects the layers hold, so they follow.
  for (auto& [name, tensor] : impl_->weights) tensor.set_data(tensor.to(device));
}

models::ModelSummary TfjsModel::summary(const std::vector<int64_t>& input_shape) {
  std::vector<int64_t> shape = {1};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  std::vector<std::pair<const Node*, Tensor>> trace;
  std::map<std::string, Tensor> values;
  impl_->run(torch::zeros(shape), &trace, &values);
  models::ModelSummary summary;
  for (const auto& [node, output] : trace) {
    int64_t macs = 0;
    if (node->layer.macs) {
      Tensors inputs;
      for (const auto& name : node->inputs) inputs.push_back(values.at(name));
      macs = node->layer.macs(inputs, output);
    }
    summary.params += node->params;
    summary.macs += macs;
    std::vector<int64_t> out_shape(output.sizes().begin() + 1, output.sizes().end());
    summary.layers.push_back(fmt::format("{:<22} {:<14} {:<16} {:>10} {:>12}", node->name, node->class_name,
                                         shape_text(out_shape), node->params, macs));
  }
  return summary;
}

std::string TfjsModel::kind() const { return "tfjs"; }

const std::vector<int64_t>& TfjsModel::keras_input_shape() const { return impl_->input_shape; }

std::vector<int64_t> TfjsModel::declared_input_shape() {
  std::vector<int64_t> shape = impl_->input_shape;
  if (shape.empty() || std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d <= 0; })) return {};
  if (shape.size() == 3) return {shape[2], shape[0], shape[1]};  // the adapter permutes [N, C, H, W] to channels last
  return shape;
}

const json& TfjsModel::metadata() const { return impl_->metadata; }

}  // namespace kd::io
