// The export formats in one table: the recipe's `export:` list and `kdistill export` both go
// through it. Every exporter writes atomically and carries ModelInfo (task, classes, preprocessing).
//
//   torchscript  FILE.pt    torch.jit.load runs it; takes NORMALISED inputs, the info is the extra
//                           file "kdistill.json" (torch.jit.load(p, _extra_files={"kdistill.json": ""}))
//   onnx         FILE.onnx  onnxruntime runs it on RAW inputs (normalisation folded in); see onnx_export.h
//   tfjs         FOLDER     model.json + shard for tf.loadLayersModel; see tfjs_export.h
//
//   export_model(*student, info, "onnx", "out/student.onnx");
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "kd/io/model_file.h"
#include "kd/models/model.h"

namespace kd::exports {

struct ExportFormat {
  std::string name;       // as written in a recipe and on the command line
  std::string file_name;  // the run folder's file for the student: "student.onnx"
  std::string summary;    // one line for help texts and docs
  std::function<void(models::Model&, const io::ModelInfo&, const std::string& path)> write;
  bool text = false;      // holds the zoo's text families (token ids in)
};

const std::vector<ExportFormat>& export_formats();

// kd::Error naming `field` and the known formats (with a "did you mean") for an unknown name.
const ExportFormat& export_format(const std::string& name, const std::string& field = "export");

// kd::Error naming `field` when `format` cannot hold a model of `spec`'s family (a text family in a
// format without text support), before anything is trained.
void check_exportable(const nlohmann::json& spec, const std::string& format, const std::string& field);

// Exports a zoo model (info.spec set). kd::Error naming the path for a model the format cannot hold,
// e.g. an imported graph or a TorchScript student.
void export_model(models::Model& model, const io::ModelInfo& info, const std::string& format, const std::string& path);

}  // namespace kd::exports
