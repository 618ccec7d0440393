#include "kd/export/exporters.h"

#include "kd/export/onnx_export.h"
#include "kd/export/tfjs_export.h"
#include "kd/export/torchscript_export.h"
#include "kd/models/zoo.h"
#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::exports {
namespace {

void write_torchscript(models::Model& model, const io::ModelInfo& info, const std::string& path) {
  auto spec = models::zoo_spec_from_json(info.spec, path);
  export_torchscript(model, spec, info.input_shape, info.outputs, path, &info);
}

}  // namespace

const std::vector<ExportFormat>& export_formats() {
  static const std::vector<ExportFormat> formats = {
      {"torchscript", "student.torchscript.pt", "TorchScript for torch.jit.load (normalised inputs)", write_torchscript,
       true},
      {"onnx", "student.onnx", "ONNX opset 13 for onnxruntime (raw inputs; token ids for text)", export_onnx, true},
      {"tfjs", "student.tfjs", "TF.js layers model folder for tf.loadLayersModel", export_tfjs, false},
  };
  return formats;
}

const ExportFormat& export_format(const std::string& name, const std::string& field) {
  std::vector<std::string> names;
  for (const auto& format : export_formats()) {
    if (format.name == name) return format;
    names.push_back(format.name);
  }
  auto suggestion = nearest(name, names);
  fail("{}: {} is not an export format{}, expected one of {}", field, quote(name),
       suggestion ? " (did you mean " + quote(*suggestion) + "?)" : "", join(names, ", "));
}

void check_exportable(const nlohmann::json& spec, const std::string& format, const std::string& field) {
  const auto& exporter = export_format(format, field);
  if (!spec.is_object() || !spec.contains("arch") || !spec["arch"].is_string()) return;
  const models::ZooArch* arch = models::find_zoo_arch(spec["arch"].get<std::string>());
  if (arch && arch->text && !exporter.text) {
    std::vector<std::string> text_formats;
    for (const auto& f : export_formats()) {
      if (f.text) text_formats.push_back(f.name);
    }
    fail("{}: arch {} (token ids in) does not export to {} yet; {} do", field, arch->name, format,
         join(text_formats, " and "));
  }
}

void export_model(models::Model& model, const io::ModelInfo& info, const std::string& format, const std::string& path) {
  const auto& exporter = export_format(format);
  if (info.spec.is_null()) {
    fail("{}: {} export needs a zoo model ({}); this one is a {} model", path, format,
         join(models::zoo_archs(), ", "), model.kind());
  }
  check_exportable(info.spec, format, path);
  exporter.write(model, info, path);
}

}  // namespace kd::exports
