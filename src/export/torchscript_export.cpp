#include "kd/export/torchscript_export.h"

#include <torch/script.h>

#include <set>

#include "kd/util/error.h"
#include "kd/util/fs.h"

namespace kd::exports {

void export_torchscript(models::Model& model, const models::ZooSpec& spec,
                        const std::vector<int64_t>& input_shape, int64_t outputs,
                        const std::filesystem::path& path, const io::ModelInfo* info) {
  std::string source = models::torchscript_source(spec, input_shape, outputs);
  models::NamedTensors state = model.state();
  // The source names the spec's tensors; a model built from another spec would fail to compile with a
  // message about TorchScript. A fresh model of the spec checks names and shapes with a clear message.
  try {
    models::ZooModel reference(spec, input_shape, outputs);
    reference.load_state(state);
  } catch (const Error&) {
    rethrow_with_context(path.string() + ": torchscript export: the " + model.kind() +
                         " model does not match its spec");
  }

  std::set<const void*> parameters;
  for (const auto& parameter : model.parameters()) parameters.insert(parameter.unsafeGetTensorImpl());

  torch::jit::Module module("Student");
  module.register_attribute("training", c10::BoolType::get(), false);
  std::set<std::string> names;
  for (const auto& [name, tensor] : state) {
    std::string attribute = models::torchscript_attribute_name(name);
    KD_CHECK(names.insert(attribute).second, "two state tensors map to the attribute {}", attribute);
    torch::Tensor value = tensor.detach().to(torch::kCPU).clone();
    bool is_parameter = parameters.count(tensor.unsafeGetTensorImpl()) > 0;
    if (is_parameter) value.set_requires_grad(true);
    module.register_parameter(attribute, value, /*is_buffer=*/!is_parameter);
  }
  module.define(source);
  module.eval();

  torch::jit::ExtraFilesMap extra{{kTorchScriptSpecFile, models::to_json(spec).dump()}};
  if (info) extra[io::kModelInfoEntry] = info->to_json().dump();
  write_atomic_with(path, [&](const std::filesystem::path& temporary) {
    try {
      module.save(temporary.string(), extra);
    } catch (const c10::Error& e) {
      fail("{}: cannot write the TorchScript file: {}", path.string(), e.what_without_backtrace());
    }
  });
}

}  // namespace kd::exports
