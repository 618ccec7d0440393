#include "kd/export/onnx_export.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>

#include "kd/data/normalize.h"
#include "kd/models/zoo.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/strings.h"
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
    auto it = state_.find(name);
    KD_CHECK(it != state_.end(), "the checked state has no tensor {}", name);
    if (added_.insert(name).second) io::onnx_tensor::to_proto(it->second.to(torch::kFloat), name, graph_->add_initializer());
    return name;
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

std::string emit(GraphBuilder& g, const std::vector<models::ZooStep>& steps, std::string x,
                 const std::string& prefix) {
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
        std::string y = emit(g, s.body, x, name + ".");
        std::string side = s.shortcut.empty() ? x : emit(g, s.shortcut, x, name + ".");
        x = activation(g, s.op, g.node("Add", {y, side}, name + ".add"), name);
        break;
      }
      case Kind::Embedding:
      case Kind::Conv1d:
      case Kind::TimePool:
      case Kind::Positions:
      case Kind::Encoder:
      case Kind::LayerNorm:
      case Kind::SeqPool:
        fail("onnx export: {}: text layers do not export to ONNX", name);
    }
  }
  return x;
}

void set_tensor_type(onnx::ValueInfoProto* value, const std::string& name, const std::vector<int64_t>& dims) {
  value->set_name(name);
  auto* type = value->mutable_type()->mutable_tensor_type();
  type->set_elem_type(onnx::TensorProto::FLOAT);
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
  std::vector<std::string> archs;  // the zoo's families that export to ONNX (not the text ones, yet)
  for (const auto& arch : models::zoo_arch_table()) {
    if (!arch.text) archs.push_back(arch.name);
  }
  if (std::find(archs.begin(), archs.end(), model.kind()) == archs.end() || info.spec.is_null()) {
    fail("{}: onnx export: only zoo models ({}) can be exported, got a {} model", path, join(archs, ", "),
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
  proto.set_producer_version(KD_VERSION);
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
  std::string x = "input";
  if (auto n = normalizer(info.preprocessing, "normalize", path)) {
    x = g.node("Sub", {x, g.constant(n->shift(), "normalize.shift")}, "normalize.sub");
    x = g.node("Div", {x, g.constant(n->scale(), "normalize.scale")}, "normalize.div");
  }
  x = emit(g, models::zoo_plan(spec, info.input_shape, info.outputs), x, "");
  if (auto n = normalizer(info.preprocessing, "target_normalize", path); n && info.task == Task::regression) {
    x = g.node("Mul", {x, g.constant(n->scale(), "target.scale")}, "target.mul");
    x = g.node("Add", {x, g.constant(n->shift(), "target.shift")}, "target.add");
  }
  g.node("Identity", {x}, "output");
  set_tensor_type(graph->add_input(), "input", info.input_shape);
  set_tensor_type(graph->add_output(), "output", {info.outputs});

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
