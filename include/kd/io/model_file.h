// Model files: kdistill's own (.kdm: a zoo spec, the preprocessing and the tensors)
// and the formats users bring. Every model kdistill writes carries ModelInfo, so
// that evaluation and export know the input shape, classes and preprocessing.
//
//   save_model("out/student.kdm", student, info);
//   LoadedModel m = load_model("teacher.pt");   // any reader of model_readers(): .kdm, .pt, .onnx, model.json
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "kd/data/task.h"
#include "kd/models/model.h"

namespace kd::io {

// The entry of a TorchScript file's extra files that holds ModelInfo as JSON.
inline constexpr const char* kModelInfoEntry = "kdistill.json";

struct ModelInfo {
  Task task = Task::classification;
  std::vector<int64_t> input_shape;      // one example
  int64_t outputs = 0;
  std::vector<std::string> class_names;
  nlohmann::json spec;                   // zoo spec (to_json(ZooSpec)); null for imported models
  // What to apply to raw inputs before this model (kd::data::DataFold::preprocessing: "tabular",
  // "normalize", "target_normalize" applied to its outputs' inverse). An exported file whose graph does
  // some of it itself lists those keys under "folded" instead, for the record.
  nlohmann::json preprocessing;
  std::string output;                    // which output of a multi-output model is the logits

  nlohmann::json to_json() const;
  static ModelInfo from_json(const nlohmann::json& json, const std::string& file);
};

struct LoadedModel {
  models::ModelPtr model;
  ModelInfo info;
  bool has_info = false;  // false for a plain user file without kdistill's metadata
};

// `info` for a file whose graph applies the preprocessing `keys` itself (present ones move to
// preprocessing.folded).
ModelInfo with_folded(ModelInfo info, const std::vector<std::string>& keys);

// Bytes on disk of a model: the file, or a TF.js model.json with its weight shards, or a folder's files.
int64_t model_bytes(const std::string& path);

// Writes a zoo model as .kdm, or a TorchScript model as .pt with the info embedded. Atomic.
void save_model(const std::string& path, models::Model& model, const ModelInfo& info);

// The model readers, one table: adding a format is a reader function and a line here
// (src/io/model_file.cpp). load_model picks the reader by the file name's extension; for another
// name, by the file's first bytes (`sniff`), trying each fitting reader in table order.
struct ModelReader {
  std::string name;                      // kdm | torchscript | onnx | tfjs
  std::vector<std::string> extensions;   // lower case, with the dot
  std::string description;               // for help texts and errors: ".onnx (ONNX)"
  bool (*sniff)(const std::string& head);  // whether the file's first 64 bytes may be this format
  LoadedModel (*load)(const std::string& path, const std::string& output);
};
const std::vector<ModelReader>& model_readers();

// ".kdm (kdistill), .pt/.pth/.torchscript (TorchScript), ..." from the table, for help texts.
std::string model_formats_text();

// `output` selects the logits of a multi-output model (index or dict key; an ONNX output name).
LoadedModel load_model(const std::string& path, const std::string& output = "");

}  // namespace kd::io
