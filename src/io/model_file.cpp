#include "kd/io/model_file.h"

#include <filesystem>
#include <exception>
#include <fstream>

#include "kd/io/onnx_model.h"
#include "kd/io/onnx_model.h"
#include "kd/io/tfjs_model.h"
#include "kd/models/torchscript_model.h"
#include "kd/models/zoo.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/shape.h"
#include "kd/util/strings.h"

namespace kd::io {

namespace {
const int kFormatVersion = 1;
}  // namespace

nlohmann::json ModelInfo::to_json() const {
  return {{"format", "kdistill-model"}, {"version", kFormatVersion}, {"task", kd::to_string(task)},
          {"input_shape", input_shape}, {"outputs", outputs}, {"class_names", class_names},
          {"spec", spec}, {"preprocessing", preprocessing}, {"output", output}};
}

ModelInfo ModelInfo::from_json(const nlohmann::json& json, const std::string& file) {
  try {
    ModelInfo info;
    info.task = parse_task(json.at("task").get<std::string>(), file + ": task");
    info.input_shape = json.at("input_shape").get<std::vector<int64_t>>();
    info.outputs = json.at("outputs").get<int64_t>();
    info.class_names = json.value("class_names", std::vector<std::string>{});
    info.spec = json.value("spec", nlohmann::json());
    info.preprocessing = json.value("preprocessing", nlohmann::json());
    info.output = json.value("output", "");
    return info;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: model metadata is incomplete ({})", file, e.what());
  }
}

ModelInfo with_folded(ModelInfo info, const std::vector<std::string>& keys) {
  if (!info.preprocessing.is_object()) return info;
  for (const auto& key : keys) {
    if (!info.preprocessing.contains(key)) continue;
    info.preprocessing["folded"][key] = info.preprocessing[key];
    info.preprocessing.erase(key);
  }
  return info;
}

int64_t model_bytes(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto size_of = [&ec](const fs::path& file) {
    auto bytes = fs::file_size(file, ec);
    return ec ? int64_t{0} : static_cast<int64_t>(bytes);
  };
  if (fs::is_directory(path, ec)) {
    int64_t total = 0;
    for (const auto& entry : fs::recursive_directory_iterator(path, ec)) {
      if (entry.is_regular_file(ec)) total += size_of(entry.path());
    }
    return total;
  }
  int64_t total = size_of(path);
  if (!ends_with(to_lower(path), ".json")) return total;
  // A TF.js layers model: its weight shards sit beside model.json.
  auto json = nlohmann::json::parse(read_file(path), nullptr, /*allow_exceptions=*/false);
  if (!json.is_object() || !json.contains("weightsManifest") || !json["weightsManifest"].is_array()) return total;
  for (const auto& group : json["weightsManifest"]) {
    if (!group.is_object() || !group.contains("paths") || !group["paths"].is_array()) continue;
    for (const auto& shard : group["paths"]) {
      if (shard.is_string()) total += size_of(fs::path(path).parent_path() / shard.get<std::string>());
    }
  }
  return total;
}

void save_model(const std::string& path, models::Model& model, const ModelInfo& info) {
  if (model.kind() == "torchscript") {
    auto& scripted = dynamic_cast<models::TorchScriptModel&>(model);
    torch::jit::ExtraFilesMap extra = {{kModelInfoEntry, info.to_json().dump()}};
    write_atomic_with(path, [&](const std::filesystem::path& temporary) {
      scripted.module().save(temporary.string(), extra);
    });
    return;
  }
  torch::serialize::OutputArchive archive;
  archive.write("kdistill", c10::IValue(info.to_json().dump()));
  for (auto& [name, tensor] : model.state()) archive.write("state/" + name, tensor);
  write_atomic_with(path, [&](const std::filesystem::path& temporary) { archive.save_to(temporary.string()); });
}

namespace {

LoadedModel load_kdm(const std::string& path, const std::string& output) {
  LoadedModel loaded;
  torch::serialize::InputArchive archive;
  c10::IValue meta;
  check_zip_archive(path);
  try {
    archive.load_from(path);
    archive.read("kdistill", meta);
  } catch (const std::exception&) {
    fail("{}: not a kdistill model file (truncated or of another format)", path);
  }
  loaded.info = ModelInfo::from_json(nlohmann::json::parse(meta.toStringRef()), path);
  loaded.has_info = true;
  auto spec = models::zoo_spec_from_json(loaded.info.spec, path);
  loaded.model = models::build_zoo_model(spec, loaded.info.input_shape, loaded.info.outputs);
  models::NamedTensors state;
  for (auto& [name, tensor] : loaded.model->state()) {
    torch::Tensor value;
    try {
      archive.read("state/" + name, value);
    } catch (const std::exception&) {
      fail("{}: tensor {} is missing", path, quote(name));
    }
    state.emplace_back(name, value);
  }
  loaded.model->load_state(state);
  loaded.model->set_training(false);
  return loaded;
}

LoadedModel load_torchscript_file(const std::string& path, const std::string& output) {
  LoadedModel loaded;
  torch::jit::ExtraFilesMap extra = {{kModelInfoEntry, ""}};
  std::shared_ptr<models::TorchScriptModel> scripted;
  check_zip_archive(path);
  try {
    scripted = std::make_shared<models::TorchScriptModel>(torch::jit::load(path, c10::nullopt, extra), path, output);
    for (const auto& [name, tensor] : scripted->state()) check_within_storage(tensor, fmt::format("{}: {}", path, quote(name)));
  } catch (const std::exception& e) {
    fail("{}: not a readable TorchScript file ({}); save it with torch.jit.script(model).save(path)", path,
         first_line(e));
  }
  if (!extra[kModelInfoEntry].empty()) {
    loaded.info = ModelInfo::from_json(nlohmann::json::parse(extra[kModelInfoEntry]), path);
    loaded.has_info = true;
    if (output.empty() && !loaded.info.output.empty()) {
      scripted = std::make_shared<models::TorchScriptModel>(scripted->module(), path, loaded.info.output);
    }
  }
  scripted->set_training(false);
  loaded.model = scripted;
  return loaded;
}

LoadedModel load_onnx(const std::string& path, const std::string& output) {
  LoadedModel loaded;
  auto graph = std::make_shared<OnnxModel>(path, output);
  graph->require_one_input();
  for (const auto& [key, value] : graph->metadata()) {
    if (key != kOnnxInfoKey) continue;
    auto json = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded()) fail("{}: metadata {} is not JSON", path, quote(kOnnxInfoKey));
    loaded.info = ModelInfo::from_json(json, path);
    loaded.has_info = true;
  }
  loaded.model = graph;
  return loaded;
}

LoadedModel load_tfjs(const std::string& path, const std::string& output) {
  LoadedModel loaded;
  auto tfjs = std::make_shared<TfjsModel>(path);
  const nlohmann::json& meta = tfjs->metadata();
  if (meta.is_object() && meta.contains("kdistill")) {
    loaded.info = ModelInfo::from_json(meta["kdistill"], path);
    loaded.has_info = true;
  }
  loaded.model = tfjs;
  return loaded;
}

// The first bytes of a file, for the readers' content checks.
std::string file_head(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string head(64, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  return head;
}

// .kdm (a torch::serialize archive) and TorchScript files are both zip archives: the kdm reader is tried
// first, then TorchScript's.
bool is_zip(const std::string& head) { return head.rfind("PK\x03\x04", 0) == 0; }
bool is_json(const std::string& head) {
  auto first = head.find_first_not_of(" \t\r\n");
  return first != std::string::npos && head[first] == '{';
}
// A protobuf ModelProto starts with field 1 (ir_version, a varint: tag 0x08) in every exporter we know.
bool is_onnx(const std::string& head) { return !head.empty() && head[0] == '\x08'; }

}  // namespace

const std::vector<ModelReader>& model_readers() {
  static const std::vector<ModelReader> readers = {
      {"kdm", {".kdm"}, ".kdm (kdistill)", is_zip, load_kdm},
      {"torchscript", {".pt", ".pth", ".torchscript"}, ".pt/.pth/.torchscript (TorchScript)", is_zip,
       load_torchscript_file},
      {"onnx", {".onnx"}, ".onnx (ONNX)", is_onnx, load_onnx},
      {"tfjs", {".json"}, "model.json (TF.js layers model)", is_json, load_tfjs},
  };
  return readers;
}

std::string model_formats_text() {
  std::vector<std::string> parts;
  for (const auto& reader : model_readers()) parts.push_back(reader.description);
  return join(parts, ", ");
}

namespace {

// A reader's JSON that is not what it expects (a TF.js topology, a file's kdistill metadata) as one
// kd::Error naming the file, whichever step of the reader met it.
LoadedModel load_with(const ModelReader& reader, const std::string& path, const std::string& output) {
  try {
    return reader.load(path, output);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not a usable {} file: its JSON is malformed or of another shape ({})", path, reader.name, e.what());
  }
}

}  // namespace

LoadedModel load_model(const std::string& path, const std::string& output) {
  require_file(path, "model file");
  std::string lower = to_lower(path);
  for (const auto& reader : model_readers()) {
    for (const auto& extension : reader.extensions) {
      if (ends_with(lower, extension)) return load_with(reader, path, output);
    }
  }
  // Another name: the readers whose content check fits the file's first bytes, in table order; when
  // all of them refuse it, the last one's error.
  std::string head = file_head(path);
  std::exception_ptr refused;
  for (const auto& reader : model_readers()) {
    if (!reader.sniff(head)) continue;
    try {
      return load_with(reader, path, output);
    } catch (const Error&) {
      refused = std::current_exception();
    }
  }
  if (refused) std::rethrow_exception(refused);
  fail("{}: unknown model format, expected {}", path, model_formats_text());
}

}  // namespace kd::io
