#include "kd/export/onnx_export.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "kd/data/normalize.h"
#include "kd/models/zoo.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/strings.h"
#include "kd/util/version.h"
#include "kd/io/onnx_tensor.h"
#include "kd/io/onnx_model.h"

namespace kd::exports {
namespace {

// IR version 7 is the one that goes with opset 13.
constexpr int64_t kIrVersion = 7;

void set_ints(onnx::NodeProto* node, const std::string& name, const std::vector<int64_t>& values) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) a->add_ints(v);
}

void set_int(onnx::NodeProto* node, const std::string& name, int64_t value) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}

void set_float(onnx::NodeProto* node, const std::string& name, double value) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(static_cast<float>(value));
}

// Adds nodes and initializers to a graph; value and node names are unique.
class GraphBuilder {
 public:
  GraphBuilder(onnx::GraphProto* graph, const models::NamedTensors& state) : graph_(graph) {
    for (const auto& [name, tensor] : state) state_[name] = tensor;
  }

  // A node reading `inputs`; returns its output's name (`hint` made unique).
  std::string node(const std::string& op, const std::vector<std::string>& inputs, const std::string& hint,
                   onnx::NodeProto** created = nullptr) {
    onnx::NodeProto* node = graph_->add_node();
    std::string name = unique(hint);
    node->set_op_type(op);
    node->set_name(name);
    for (const auto& input : inputs) node->add_input(input);
    node->add_output(name);
    if (created) *created = node;
    return name;
  }

  // The state tensor `name` as an initializer (added once).
  std::string state(const std::string& name) {
    const torch::Tensor& value = tensor(name);
    if (added_.insert(name).second) io::onnx_tensor::to_proto(value.to(torch::kFloat), name, graph_->add_initializer());
    return name;
  }

  // The state tensor `name` itself, for constants derived from it.
  const torch::Tensor& tensor(const std::string& name) const {
    auto it = state_.find(name);
    KD_CHECK(it != state_.end(), "the checked state has no tensor {}", name);
    return it->second;
  }

  // A constant initializer under a fresh name.
  std::string constant(const torch::Tensor& value, const std::string& hint) {
    std::string name = unique(hint);
    io::onnx_tensor::to_proto(value, name, graph_->add_initializer());
    return name;
  }

 private:
  std::string unique(const std::string& hint) {
    std::string name = hint;
    for (int i = 1; !names_.insert(name).second; ++i) name = hint + "_" + std::to_string(i);
    return name;
  }

  onnx::GraphProto* graph_;
  std::map<std::string, torch::Tensor> state_;
  std::set<std::string> added_, names_;
};

std::string activation(GraphBuilder& g, const std::string& name, const std::string& x, const std::string& hint) {
  if (name == "relu") return g.node("Relu", {x}, hint);
  if (name == "tanh") return g.node("Tanh", {x}, hint);
  if (name == "leaky_relu") {
    onnx::NodeProto* node = nullptr;
    std::string y = g.node("LeakyRelu", {x}, hint, &node);
    set_float(node, "alpha", models::kZooLeakyReluSlope);
    return y;
  }
  if (name == "silu") return g.node("Mul", {x, g.node("Sigmoid", {x}, hint + ".sigmoid")}, hint);
  KD_CHECK(name == "gelu", "activation {} has no ONNX form", name);
  // Exact GELU (torch's default): x * 0.5 * (1 + erf(x / sqrt(2))); opset 13 has no Gelu.
  std::string scaled = g.node("Div", {x, g.constant(torch::tensor(std::sqrt(2.0), torch::kFloat), hint + ".sqrt2")},
                              hint + ".div");
  std::string erf = g.node("Erf", {scaled}, hint + ".erf");
  std::string plus = g.node("Add", {erf, g.constant(torch::tensor(1.0f), hint + ".one")}, hint + ".add");
  std::string times = g.node("Mul", {x, plus}, hint + ".mul");
  return g.node("Mul", {times, g.constant(torch::tensor(0.5f), hint + ".half")}, hint);
}

// What the text steps share: the padding mask [N, L] (true where the id is the pad id), set by Embedding.
struct TextGraph {
  std::string padding;
};

std::string transpose(GraphBuilder& g, const std::string& x, const std::vector<int64_t>& perm, const std::string& hint) {
  onnx::NodeProto* node = nullptr;
  std::string y = g.node("Transpose", {x}, hint, &node);
  set_ints(node, "perm", perm);
  return y;
}

// Unsqueeze takes its axes as an input since opset 13.
std::string unsqueeze(GraphBuilder& g, const std::string& x, const std::vector<int64_t>& axes, const std::string& hint) {
  return g.node("Unsqueeze", {x, g.constant(torch::tensor(axes), hint + ".axes")}, hint);
}

std::string minus_infinity(GraphBuilder& g, const std::string& hint) {
  return g.constant(torch::tensor(-std::numeric_limits<float>::infinity()), hint + ".minus_inf");
}

// x [.., in] @ weight^T + bias for a torch Linear stored under `name` (x of any rank, unlike Gemm).
std::string linear(GraphBuilder& g, const std::string& x, const std::string& name, const std::string& hint) {
  std::string weight = g.constant(g.tensor(name + ".weight").t().contiguous().to(torch::kFloat), name + ".weight_t");
  return g.node("Add", {g.node("MatMul", {x, weight}, hint + ".matmul"), g.state(name + ".bias")}, hint);
}

// LayerNormalization is opset 17: (x - mean) / sqrt(var + eps) * weight + bias over the last axis.
std::string layer_norm(GraphBuilder& g, const std::string& x, const std::string& name) {
  onnx::NodeProto* node = nullptr;
  auto mean = [&](const std::string& in, const std::string& hint) {
    std::string y = g.node("ReduceMean", {in}, hint, &node);
    set_ints(node, "axes", {-1});
    return y;
  };
  std::string centred = g.node("Sub", {x, mean(x, name + ".mean")}, name + ".centred");
  std::string variance = mean(g.node("Mul", {centred, centred}, name + ".square"), name + ".variance");
  std::string deviation = g.node(
      "Sqrt", {g.node("Add", {variance, g.constant(torch::tensor(static_cast<float>(models::kZooLayerNormEps)),
                                                   name + ".eps")}, name + ".add_eps")}, name + ".deviation");
  std::string scaled = g.node("Mul", {g.node("Div", {centred, deviation}, name + ".normed"), g.state(name + ".weight")},
                              name + ".scaled");
  return g.node("Add", {scaled, g.state(name + ".bias")}, name);
}

// One transformer encoder layer on x [N, L, D], as the zoo's encoder_layer computes it.
std::string encoder_layer(GraphBuilder& g, const models::ZooStep& s, const std::string& x, const TextGraph& text,
                          const std::string& name) {
  int64_t head = s.out / s.heads;
  std::string split_shape = g.constant(torch::tensor(std::vector<int64_t>{0, 0, s.heads, head}), name + ".split");
  std::string merge_shape = g.constant(torch::tensor(std::vector<int64_t>{0, 0, s.out}), name + ".merge");
  torch::Tensor in_weight = g.tensor(name + ".attn_in.weight"), in_bias = g.tensor(name + ".attn_in.bias");
  auto self_attention = [&](const std::string& h) {
    // The packed q, k, v projection as three products: [N, L, D] -> [N, heads, L, head].
    auto project = [&](int64_t part, const std::vector<int64_t>& perm) {
      std::string what = name + ".attn_in." + "qkv"[part];
      std::string weight = g.constant(in_weight.chunk(3, 0)[part].t().contiguous().to(torch::kFloat), what + ".weight_t");
      std::string bias = g.constant(in_bias.chunk(3, 0)[part].contiguous().to(torch::kFloat), what + ".bias");
      std::string y = g.node("Add", {g.node("MatMul", {h, weight}, what + ".matmul"), bias}, what);
      return transpose(g, g.node("Reshape", {y, split_shape}, what + ".heads"), perm, what + ".transpose");
    };
    std::string q = project(0, {0, 2, 1, 3}), k = project(1, {0, 2, 3, 1}), v = project(2, {0, 2, 1, 3});
    std::string scores = g.node(
        "Div", {g.node("MatMul", {q, k}, name + ".scores"),
                g.constant(torch::tensor(static_cast<float>(std::sqrt(static_cast<double>(head)))), name + ".sqrt_head")},
        name + ".scaled");
    scores = g.node("Where", {unsqueeze(g, text.padding, {1, 2}, name + ".padding"), minus_infinity(g, name), scores},
                    name + ".masked");
    onnx::NodeProto* node = nullptr;
    std::string probabilities = g.node("Softmax", {scores}, name + ".attention", &node);
    set_int(node, "axis", -1);
    std::string context = transpose(g, g.node("MatMul", {probabilities, v}, name + ".context"), {0, 2, 1, 3},
                                     name + ".context_t");
    context = g.node("Reshape", {context, merge_shape}, name + ".merged");
    return linear(g, context, name + ".attn_out", name + ".attn_out");
  };
  auto feed_forward = [&](const std::string& h) {
    std::string y = activation(g, s.op, linear(g, h, name + ".ff1", name + ".ff1"), name + ".act");
    return linear(g, y, name + ".ff2", name + ".ff2");
  };
  if (s.spatial) {  // pre-norm
    std::string y = g.node("Add", {x, self_attention(layer_norm(g, x, name + ".norm1"))}, name + ".residual1");
    return g.node("Add", {y, feed_forward(layer_norm(g, y, name + ".norm2"))}, name);
  }
  std::string y = layer_norm(g, g.node("Add", {x, self_attention(x)}, name + ".residual1"), name + ".norm1");
  return layer_norm(g, g.node("Add", {y, feed_forward(y)}, name + ".residual2"), name + ".norm2");
}

// The tokens of each text [N] as int32, for a recurrent node's sequence_lens (padding ends each text).
std::string text_lengths(GraphBuilder& g, const TextGraph& text, const std::string& hint) {
  onnx::NodeProto* node = nullptr;
  std::string pads = g.node("Cast", {text.padding}, hint + ".pads", &node);
  set_int(node, "to", onnx::TensorProto::INT32);
  std::string axis = g.constant(torch::tensor(std::vector<int64_t>{1}), hint + ".axis");
  std::string count = g.node("ReduceSum", {pads, axis}, hint + ".pad_count", &node);
  set_int(node, "keepdims", 0);
  std::string shape = g.node("Shape", {text.padding}, hint + ".shape");
  std::string length = g.node("Gather", {shape, g.constant(torch::tensor(int64_t{1}), hint + ".length_axis")},
                              hint + ".length");
  std::string length32 = g.node("Cast", {length}, hint + ".length32", &node);
  set_int(node, "to", onnx::TensorProto::INT32);
  return g.node("Sub", {length32, count}, hint);
}

// A zoo bidirectional GRU on x [N, L, in] as ONNX's GRU: gates reordered from torch's (r, z, n) to
// ONNX's (z, r, h), linear_before_reset as torch computes, sequence_lens so that the backward
// direction starts at each text's last token. -> [N, L, 2 out].
std::string bigru_layer(GraphBuilder& g, const models::ZooStep& s, const std::string& x, const TextGraph& text,
                        const std::string& name) {
  auto gates = [&](const torch::Tensor& t) {  // [3h, ...] r, z, n -> z, r, n
    auto parts = t.chunk(3, 0);
    return torch::cat({parts[1], parts[0], parts[2]}, 0);
  };
  auto stacked = [&](const std::string& what) {  // [2, ...]: forward, reverse
    return torch::stack({gates(g.tensor(name + "." + what)), gates(g.tensor(name + "." + what + "_reverse"))}, 0);
  };
  torch::Tensor w = stacked("weight_ih_l0"), r = stacked("weight_hh_l0");
  torch::Tensor b = torch::cat({stacked("bias_ih_l0"), stacked("bias_hh_l0")}, 1);
  onnx::NodeProto* node = nullptr;
  std::string y = g.node("GRU",
                         {transpose(g, x, {1, 0, 2}, name + ".time_major"), g.constant(w.to(torch::kFloat), name + ".W"),
                          g.constant(r.to(torch::kFloat), name + ".R"), g.constant(b.to(torch::kFloat), name + ".B"),
                          text_lengths(g, text, name + ".lengths")},
                         name + ".gru", &node);
  set_int(node, "hidden_size", s.out);
  set_int(node, "linear_before_reset", 1);
  auto* direction = node->add_attribute();
  direction->set_name("direction");
  direction->set_type(onnx::AttributeProto::STRING);
  direction->set_s("bidirectional");
  // Y [L, 2, N, out] -> [N, L, 2, out] -> [N, L, 2 out]
  y = transpose(g, y, {2, 0, 1, 3}, name + ".batch_major");
  return g.node("Reshape", {y, g.constant(torch::tensor(std::vector<int64_t>{0, 0, 2 * s.out}), name + ".shape")}, name);
}

std::string emit(GraphBuilder& g, const std::vector<models::ZooStep>& steps, std::string x,
                 const std::string& prefix, TextGraph& text) {
  using Kind = models::ZooStepKind;
  for (const auto& s : steps) {
    std::string name = prefix + s.name;
    auto tensor = [&](const std::string& what) { return g.state(name + "." + what); };
    onnx::NodeProto* node = nullptr;
    switch (s.kind) {
      case Kind::Flatten:
        x = g.node("Flatten", {x}, name, &node);
        set_int(node, "axis", 1);
        break;
      case Kind::Reshape: {
        std::vector<int64_t> shape = {-1};
        shape.insert(shape.end(), s.shape.begin(), s.shape.end());
        x = g.node("Reshape", {x, g.constant(torch::tensor(shape, torch::kLong), name + ".shape")}, name);
        break;
      }
      case Kind::Linear: {
        std::vector<std::string> inputs = {x, tensor("weight")};
        if (s.bias) inputs.push_back(tensor("bias"));
        x = g.node("Gemm", inputs, name, &node);
        set_int(node, "transB", 1);
        break;
      }
      case Kind::Conv: {
        std::vector<std::string> inputs = {x, tensor("weight")};
        if (s.bias) inputs.push_back(tensor("bias"));
        x = g.node("Conv", inputs, name, &node);
        set_ints(node, "kernel_shape", {s.kernel, s.kernel});
        set_ints(node, "strides", {s.stride, s.stride});
        set_ints(node, "pads", {s.padding, s.padding, s.padding, s.padding});
        break;
      }
      case Kind::BatchNorm:
        x = g.node("BatchNormalization",
                   {x, tensor("weight"), tensor("bias"), tensor("running_mean"), tensor("running_var")}, name, &node);
        set_float(node, "epsilon", models::kZooBatchNormEps);
        break;
      case Kind::Activation:
        x = activation(g, s.op, x, name);
        break;
      case Kind::Dropout:
        break;  // inference
      case Kind::Pool:
        x = g.node(s.op == "max" ? "MaxPool" : "AveragePool", {x}, name, &node);
        set_ints(node, "kernel_shape", {2, 2});
        set_ints(node, "strides", {2, 2});
        break;
      case Kind::GlobalPool:
        x = g.node("ReduceMean", {x}, name, &node);
        set_ints(node, "axes", {2, 3});
        set_int(node, "keepdims", 0);
        break;
      case Kind::Block: {
        std::string y = emit(g, s.body, x, name + ".", text);
        std::string side = s.shortcut.empty() ? x : emit(g, s.shortcut, x, name + ".", text);
        x = activation(g, s.op, g.node("Add", {y, side}, name + ".add"), name);
        break;
      }
      case Kind::Embedding:
        // ids [N, L] -> [N, L, D] (the graph takes int64 ids); the padding mask [N, L] for the steps after.
        text.padding = g.node("Equal", {x, g.constant(torch::tensor(s.padding, torch::kLong), name + ".pad_id")},
                              name + ".padding");
        x = g.node("Gather", {tensor("weight"), x}, name);
        if (s.spatial) x = transpose(g, x, {0, 2, 1}, name + ".channels");
        break;
      case Kind::Positions:
        x = g.node("Add", {x, tensor("weight")}, name);
        break;
      case Kind::LayerNorm:
        x = layer_norm(g, x, name);
        break;
      case Kind::Encoder:
        x = encoder_layer(g, s, x, text, name);
        break;
      case Kind::Recurrent:
        x = bigru_layer(g, s, x, text, name);
        break;
      case Kind::SeqPool:
        if (s.op == "first") {
          x = g.node("Gather", {x, g.constant(torch::tensor(int64_t{0}), name + ".first")}, name, &node);
          set_int(node, "axis", 1);
        } else if (s.op == "max") {  // padding left out
          x = g.node("Where", {unsqueeze(g, text.padding, {2}, name + ".padding"), minus_infinity(g, name), x},
                     name + ".masked");
          x = g.node("ReduceMax", {x}, name, &node);
          set_ints(node, "axes", {1});
          set_int(node, "keepdims", 0);
        } else {  // mean over the tokens: sum(x * w) / max(sum(w), 1), w = 1 where a token is
          std::string kept = g.node("Sub", {g.constant(torch::tensor(1.0f), name + ".one"),
                                            g.node("Cast", {text.padding}, name + ".float", &node)}, name + ".tokens");
          set_int(node, "to", onnx::TensorProto::FLOAT);
          std::string w = unsqueeze(g, kept, {2}, name + ".weight");
          std::string axis = g.constant(torch::tensor(std::vector<int64_t>{1}), name + ".axis");
          std::string sum = g.node("ReduceSum", {g.node("Mul", {x, w}, name + ".mul"), axis}, name + ".sum", &node);
          set_int(node, "keepdims", 0);
          std::string count = g.node("ReduceSum", {w, axis}, name + ".count", &node);
          set_int(node, "keepdims", 0);
          count = g.node("Clip", {count, g.constant(torch::tensor(1.0f), name + ".min")}, name + ".clip");
          x = g.node("Div", {sum, count}, name);
        }
        break;
      case Kind::Conv1d: {
        std::vector<std::string> inputs = {x, tensor("weight")};
        if (s.bias) inputs.push_back(tensor("bias"));
        x = g.node("Conv", inputs, name, &node);
        set_ints(node, "kernel_shape", {s.kernel});
        set_ints(node, "pads", {s.padding, s.padding});
        break;
      }
      case Kind::TimePool:  // max over the tokens, padding left out
        x = g.node("Where", {unsqueeze(g, text.padding, {1}, name + ".padding"), minus_infinity(g, name), x},
                   name + ".masked");
        x = g.node("ReduceMax", {x}, name, &node);
        set_ints(node, "axes", {2});
        set_int(node, "keepdims", 0);
        break;
    }
  }
  return x;
}

void set_tensor_type(onnx::ValueInfoProto* value, const std::string& name, const std::vector<int64_t>& dims,
                     onnx::TensorProto::DataType elem_type) {
  value->set_name(name);
  auto* type = value->mutable_type()->mutable_tensor_type();
  type->set_elem_type(elem_type);
  auto* shape = type->mutable_shape();
  shape->add_dim()->set_dim_param("N");
  for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

// The normaliser stored under `key` of the preprocessing, or none.
std::optional<data::Normalizer> normalizer(const nlohmann::json& preprocessing, const std::string& key,
                                           const std::string& path) {
  if (!preprocessing.is_object() || !preprocessing.contains(key)) return std::nullopt;
  try {
    auto n = data::Normalizer::from_json(preprocessing.at(key));
    if (n.identity()) return std::nullopt;
    return n;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: onnx export: preprocessing.{} is malformed ({})", path, key, e.what());
  }
}

}  // namespace

void export_onnx(models::Model& model, const io::ModelInfo& info, const std::string& path) {
  if (!models::find_zoo_arch(model.kind()) || info.spec.is_null()) {
    fail("{}: onnx export: only zoo models ({}) can be exported, got a {} model", path, join(models::zoo_archs(), ", "),
         model.kind());
  }
  models::ZooSpec spec = models::zoo_spec_from_json(info.spec, path + ": spec");
  models::NamedTensors state = model.state();
  try {
    models::ZooModel reference(spec, info.input_shape, info.outputs);
    reference.load_state(state);
  } catch (const Error&) {
    rethrow_with_context(path + ": onnx export: the " + model.kind() + " model does not match its spec");
  }

  onnx::ModelProto proto;
  proto.set_ir_version(kIrVersion);
  proto.set_producer_name("kdistill");
  proto.set_producer_version(version());
  auto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxExportOpset);
  auto* meta = proto.add_metadata_props();
  meta->set_key(io::kOnnxInfoKey);
  // The graph computes normalisation and target scaling itself: the file takes raw inputs.
  meta->set_value(with_folded(info, {"normalize", "target_normalize"}).to_json().dump());
  meta = proto.add_metadata_props();
  meta->set_key(io::kOnnxClassNamesKey);
  meta->set_value(nlohmann::json(info.class_names).dump());

  onnx::GraphProto* graph = proto.mutable_graph();
  graph->set_name("kdistill_" + spec.arch());
  GraphBuilder g(graph, state);
  // Text families take the token ids as BERT exports do: input_ids, int64 [N, L].
  const bool text = models::find_zoo_arch(spec.arch())->text;
  std::string x = text ? "input_ids" : "input";
  if (auto n = normalizer(info.preprocessing, "normalize", path)) {
    x = g.node("Sub", {x, g.constant(n->shift(), "normalize.shift")}, "normalize.sub");
    x = g.node("Div", {x, g.constant(n->scale(), "normalize.scale")}, "normalize.div");
  }
  TextGraph text_graph;
  x = emit(g, models::zoo_plan(spec, info.input_shape, info.outputs), x, "", text_graph);
  if (auto n = normalizer(info.preprocessing, "target_normalize", path); n && info.task == Task::regression) {
    x = g.node("Mul", {x, g.constant(n->scale(), "target.scale")}, "target.mul");
    x = g.node("Add", {x, g.constant(n->shift(), "target.shift")}, "target.add");
  }
  g.node("Identity", {x}, "output");
  set_tensor_type(graph->add_input(), text ? "input_ids" : "input", info.input_shape,
                  text ? onnx::TensorProto::INT64 : onnx::TensorProto::FLOAT);
  set_tensor_type(graph->add_output(), "output", {info.outputs}, onnx::TensorProto::FLOAT);

  try {
    onnx::checker::check_model(proto);
  } catch (const std::exception& e) {
    KD_CHECK(false, "{}: the exported graph fails onnx.checker: {}", path, first_line(e));
  }
  std::string bytes;
  KD_CHECK(proto.SerializeToString(&bytes), "{}: the ONNX model does not serialize", path);
  write_file_atomic(path, bytes);
}

}  // namespace kd::exports
