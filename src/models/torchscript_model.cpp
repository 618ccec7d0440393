#include "kd/models/torchscript_model.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/subgraph_rewrite.h>
#include <torch/library.h>

#include "kd/models/fused_ops.h"
#include "kd/models/macs.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/shape.h"
#include "kd/util/strings.h"

namespace kd::models {
namespace {

torch::Tensor linear_op(const torch::Tensor& x, const torch::Tensor& weight,
                        const c10::optional<torch::Tensor>& bias) {
  return linear(x, weight, bias.value_or(torch::Tensor()));
}

// A copy of `module` whose aten::linear calls are kd::linear (oneDNN for large products), for
// inference. It shares the parameters and buffers of `module`, so training steps and load_state
// reach it; the file kdistill saves is always `module` itself, with the standard ops.
torch::jit::Module with_fast_linear(const torch::jit::Module& module) {
  // In place: new types and methods, the same attribute values (no copy of the weights).
  torch::jit::Module copy = module.clone(/*inplace=*/true);
  torch::jit::SubgraphRewriter rewriter;
  rewriter.RegisterRewritePattern(R"(
graph(%x, %w, %b):
  %y = aten::linear(%x, %w, %b)
  return (%y))",
                                  R"(
graph(%x, %w, %b):
  %y = kd::linear(%x, %w, %b)
  return (%y))");
  for (const auto& sub : copy.modules()) {
    for (const auto& method : sub.get_methods()) {
      auto graph = method.graph();
      rewriter.runOnGraph(graph);
    }
  }
  return copy;
}

}  // namespace

TORCH_LIBRARY(kd, m) { m.def("linear(Tensor x, Tensor w, Tensor? b) -> Tensor"); }
// Composite: autograd differentiates the ops models::linear calls.
TORCH_LIBRARY_IMPL(kd, CompositeImplicitAutograd, m) { m.impl("linear", &linear_op); }

TorchScriptModel::TorchScriptModel(torch::jit::Module module, std::string path, std::string output)
    : module_(std::move(module)), path_(std::move(path)), output_(std::move(output)) {
  // Arguments past self, up to the first one with a default value: the ones a caller must give.
  const auto& schema = module_.get_method("forward").function().getSchema();
  std::vector<std::string> required;
  for (size_t i = 1; i < schema.arguments().size(); ++i) {
    if (schema.arguments()[i].default_value()) break;
    required.push_back(schema.arguments()[i].name());
  }
  if (std::find(required.begin(), required.end(), "input_ids") != required.end()) {
    token_id_inputs(torch::zeros({1, 1}), required, 0, path_ + ": forward");  // refuses a name it cannot fill, now
    arguments_ = required;
  }
}

std::vector<c10::IValue> TorchScriptModel::arguments_for(const torch::Tensor& input) const {
  if (arguments_.empty()) return {input};
  std::vector<c10::IValue> values;
  for (auto& tensor : token_id_inputs(input, arguments_, pad_id_, path_ + ": forward")) values.emplace_back(std::move(tensor));
  return values;
}

torch::Tensor TorchScriptModel::forward(const torch::Tensor& input) {
  c10::IValue result;
  try {
    result = run(input);
  } catch (const std::exception& e) {  // c10::Error, or an op's error that the interpreter rethrew
    fail("{}: forward failed on input {}: {}", path_, shape_text(input.sizes()), first_line(e));
  }
  return logits_of(result);
}

torch::Tensor TorchScriptModel::logits_of(const c10::IValue& result) const {
  if (result.isTensor()) {
    if (!output_.empty())
      fail("{}: teacher.output is {}, but forward returns a single tensor", path_, quote(output_));
    return result.toTensor();
  }
  if (result.isTuple() || result.isList()) {
    std::vector<c10::IValue> items;
    if (result.isTuple()) {
      items = result.toTupleRef().elements().vec();
    } else {
      for (const auto& item : result.toListRef()) items.push_back(item);
    }
    auto index = parse_int(output_);
    if (output_.empty() || !index || *index < 0 || *index >= static_cast<long long>(items.size())) {
      fail("{}: forward returns {} outputs; set teacher.output to the index of the logits (0..{})", path_,
           items.size(), items.size() - 1);
    }
    if (!items[static_cast<size_t>(*index)].isTensor()) fail("{}: output {} is not a tensor", path_, *index);
    return items[static_cast<size_t>(*index)].toTensor();
  }
  if (result.isGenericDict()) {
    auto dict = result.toGenericDict();
    std::vector<std::string> keys;
    for (const auto& item : dict) keys.push_back(item.key().isString() ? item.key().toStringRef() : "?");
    for (const auto& item : dict) {
      if (item.key().isString() && item.key().toStringRef() == output_) {
        if (!item.value().isTensor()) fail("{}: output {} is not a tensor", path_, quote(output_));
        return item.value().toTensor();
      }
    }
    fail("{}: forward returns a dict with keys {}; set teacher.output to the key of the logits", path_,
         join(keys, ", "));
  }
  fail("{}: forward returns a {}, expected a tensor, a tuple or a dict of tensors", path_, result.tagKind());
}

std::vector<torch::Tensor> TorchScriptModel::parameters() {
  std::vector<torch::Tensor> out;
  for (const auto& p : module_.parameters()) out.push_back(p);
  return out;
}

NamedTensors TorchScriptModel::state() {
  NamedTensors out;
  for (const auto& p : module_.named_parameters()) out.emplace_back(p.name, p.value);
  for (const auto& b : module_.named_buffers()) out.emplace_back(b.name, b.value);
  return out;
}

void TorchScriptModel::load_state(const NamedTensors& state) {
  torch::NoGradGuard no_grad;
  auto current = this->state();
  for (const auto& entry : current) {
    const auto& [name, tensor] = entry;
    auto it = std::find_if(state.begin(), state.end(), [&](const auto& item) { return item.first == entry.first; });
    if (it == state.end()) fail("{}: state has no tensor {}", path_, quote(name));
    check_within_storage(it->second, fmt::format("{}: {}", path_, quote(name)));
    if (it->second.sizes() != tensor.sizes()) {
      fail("{}: {} has shape {}, the state has {}", path_, quote(name), shape_text(tensor.sizes()),
           shape_text(it->second.sizes()));
    }
    tensor.copy_(it->second);
  }
}

torch::jit::Module& TorchScriptModel::inference_module() {
  if (module_.is_training() || c10::GradMode::is_enabled()) return module_;
  if (!fast_ && !fast_failed_) {
    try {
      fast_ = with_fast_linear(module_);
    } catch (const std::exception&) {
      fast_failed_ = true;  // a graph the rewrite cannot take runs as it is
    }
  }
  return fast_ ? *fast_ : module_;
}

c10::IValue TorchScriptModel::run(const torch::Tensor& input) {
  torch::jit::Module& module = inference_module();
  if (takes_token_ids()) return module.forward(arguments_for(input));
  bool inference = !module_.is_training() && !c10::GradMode::is_enabled();
  if (inference && !channels_last_failed_) {
    torch::Tensor x = to_channels_last(input);
    if (!x.is_same(input)) {
      try {
        return module.forward({x});
      } catch (const std::exception&) {  // the interpreter rethrows op errors as std::runtime_error
        c10::IValue result = module.forward({input});  // a wrong input fails here too, with its own error
        channels_last_failed_ = true;                  // the layout was the trouble: plain from now on
        return result;
      }
    }
  }
  return module.forward({input});
}

std::vector<std::string> TorchScriptModel::tap_names() {
  std::vector<std::string> names;
  for (const auto& item : module_.named_modules()) {
    if (!item.name.empty()) names.push_back(item.name);
  }
  return names;
}

namespace {

// The submodule path of an inlined node ("layer1.0.conv1"), from the module instances on its call stack.
std::string module_path(const torch::jit::Node* node) {
  std::string path;
  auto stack = node->callstack();
  if (!stack) return path;
  for (const auto& entry : (*stack)->vec()) {
    const auto& instance = std::get<2>(entry);
    if (!instance) continue;
    path += (path.empty() ? "" : ".") + instance->instance_name();
  }
  return path;
}

bool inside(const std::string& path, const std::string& module) {
  return path == module || starts_with(path, module + ".");
}

}  // namespace

std::shared_ptr<torch::jit::GraphFunction> TorchScriptModel::tapped_forward(const std::vector<std::string>& taps) {
  auto found = tapped_.find(taps);
  if (found != tapped_.end()) return found->second;
  std::shared_ptr<torch::jit::Graph> graph = module_.get_method("forward").graph()->copy();
  torch::jit::Inline(*graph);
  std::vector<torch::jit::Value*> outputs = {graph->outputs()[0]};
  for (const auto& tap : taps) {
    // The module's output: the last tensor its nodes compute that a node outside it (or the return) reads.
    torch::jit::Value* value = nullptr;
    bool nested = false;
    for (torch::jit::Node* node : graph->nodes()) {
      if (!inside(module_path(node), tap)) continue;
      if (!node->blocks().empty()) nested = true;
      for (torch::jit::Value* out : node->outputs()) {
        if (!out->type()->isSubtypeOf(*c10::TensorType::get())) continue;
        for (const auto& use : out->uses()) {
          if (use.user->kind() == torch::jit::prim::Return || !inside(module_path(use.user), tap)) value = out;
        }
      }
    }
    if (!value) {
      fail("{}: tap {}: forward does not call this submodule outside control flow{}", path_, quote(tap),
           nested ? " (it runs inside an if or a loop)" : "");
    }
    // A copy, taken where the module's output is made: in-place ops after it cannot change it.
    torch::jit::WithInsertPoint point(value->node()->next());
    outputs.push_back(graph->insert(torch::jit::aten::clone, {value}));
  }
  torch::jit::Node* tuple = graph->insertNode(graph->createTuple(outputs));
  graph->eraseOutput(0);
  graph->registerOutput(tuple->output());
  auto function = std::make_shared<torch::jit::GraphFunction>("forward_taps", graph, nullptr);
  tapped_[taps] = function;
  return function;
}

TappedForward TorchScriptModel::forward_taps(const torch::Tensor& input, const std::vector<std::string>& taps) {
  if (taps.empty()) return {forward(input), {}};
  check_taps(*this, taps);
  std::vector<std::string> modules;
  for (const auto& tap : taps) {
    if (tap != kOutputTap) modules.push_back(tap);
  }
  auto function = tapped_forward(modules);
  std::vector<c10::IValue> stack = {module_._ivalue()};
  for (auto& value : arguments_for(input)) stack.push_back(std::move(value));
  try {
    function->run(stack);
  } catch (const std::exception& e) {
    fail("{}: forward with taps failed on input {}: {}", path_, shape_text(input.sizes()), first_line(e));
  }
  auto elements = stack.back().toTupleRef().elements();
  TappedForward result{logits_of(elements[0]), {}};
  size_t next = 1;
  for (const auto& tap : taps) result.taps.push_back(tap == kOutputTap ? result.output : elements[next++].toTensor());
  return result;
}

void TorchScriptModel::set_training(bool training) {
  module_.train(training);
  if (fast_) fast_->train(training);
}

void TorchScriptModel::to(torch::Device device) {
  module_.to(device);
  fast_.reset();  // its tensors were the old device's
  tapped_.clear();
}

ModelSummary TorchScriptModel::summary(const std::vector<int64_t>& input_shape) {
  ModelSummary summary;
  for (const auto& p : module_.parameters()) summary.params += p.numel();
  summary.macs = measure_macs(*this, input_shape);
  for (const auto& child : module_.named_children()) {
    int64_t params = 0;
    for (const auto& p : child.value.parameters()) params += p.numel();
    summary.layers.push_back(
        fmt::format("{} ({}): {} params", child.name,
                    child.value.type()->name() ? child.value.type()->name()->name() : "?", params));
  }
  return summary;
}

void TorchScriptModel::save(const std::string& path) {
  write_atomic_with(path, [&](const std::filesystem::path& temporary) { module_.save(temporary.string()); });
}

std::shared_ptr<TorchScriptModel> load_torchscript(const std::string& path, const std::string& output) {
  require_file(path, "TorchScript model");
  check_zip_archive(path);
  try {
    auto module = torch::jit::load(path);
    module.eval();
    for (const auto& p : module.named_parameters()) check_within_storage(p.value, fmt::format("{}: {}", path, quote(p.name)));
    for (const auto& b : module.named_buffers()) check_within_storage(b.value, fmt::format("{}: {}", path, quote(b.name)));
    return std::make_shared<TorchScriptModel>(std::move(module), path, output);
  } catch (const c10::Error& e) {
    fail("{}: not a readable TorchScript file ({}); save it with torch.jit.script(model).save(path)", path,
         first_line(e));
  } catch (const std::exception& e) {
    fail("{}: not a readable TorchScript file ({})", path, first_line(e));
  }
}

}  // namespace kd::models
