// export_onnx: zoo students as ONNX files with the preprocessing folded in, checked by kdistill's own
// OnnxModel, by onnxruntime (Node.js, tests/node) and by onnx.checker (Python).
#include "kd/export/onnx_export.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <optional>

#include "data/python_helper.h"
#include "kd/data/normalize.h"
#include "kd/data/npy.h"
#include "kd/io/onnx_model.h"
#include "kd/models/zoo.h"
#include "kd/util/fs.h"
#include "test_util.h"

namespace kd::exports {
namespace {

using namespace kd::io;  // model files, ModelInfo

namespace fs = std::filesystem;
using models::ZooSpec;
using test::error_of;
using test::TempDir;
using test::batch_shape;

struct ExportCase {
  std::string label;
  ZooSpec spec;
  std::vector<int64_t> shape;
  int64_t outputs;
  std::string scope = "feature";  // normalisation scope
  Task task = Task::classification;
};

// Every arch, activation, batch norm, dropout and pooling option at least once.
std::vector<ExportCase> cases() {
  return {
      {"mlp", ZooSpec().arch("mlp").hidden({32, 16}).activation("tanh"), {20}, 3},
      {"mlp_bn_dropout", ZooSpec().arch("mlp").hidden({24}).batch_norm(true).dropout(0.3).activation("gelu"),
       {1, 6, 6}, 4, "global"},
      {"cnn", ZooSpec().arch("cnn").channels({4, 8}).activation("leaky_relu"), {3, 12, 12}, 5, "channel"},
      {"cnn_bn_avg_head",
       ZooSpec().arch("cnn").channels({6}).batch_norm(true).pool("avg").kernel(5).hidden({10}).activation("silu"),
       {64}, 10},
      {"vgg", ZooSpec().arch("vgg").channels({4, 6}).batch_norm(true), {2, 12, 12}, 3, "channel"},
      {"resnet8", ZooSpec().arch("resnet").depth(8).width(4), {2, 10, 10}, 3, "channel"},
      {"linear", ZooSpec().arch("linear").dropout(0.1), {1, 5, 5}, 2},
      {"mlp_regression", ZooSpec().arch("mlp").hidden({8}).activation("relu"), {6}, 2, "feature", Task::regression},
  };
}

struct Exported {
  models::ModelPtr model;
  ModelInfo info;
  data::Normalizer normalizer, target;
  fs::path path;
  torch::Tensor raw1, raw5;  // raw inputs, batch 1 and 5

  // What the ONNX file should compute on raw input: the zoo model on normalised input, in the
  // target's units for regression.
  torch::Tensor expected(const torch::Tensor& raw) const {
    torch::Tensor y = model->forward(normalizer.apply(raw));
    return info.task == Task::regression ? target.invert(y) : y;
  }
};

Exported export_case(const ExportCase& c, const fs::path& dir) {
  Exported e;
  torch::manual_seed(3);
  e.model = models::build_zoo_model(c.spec, c.shape, c.outputs);
  torch::Tensor train = torch::randn(batch_shape(40, c.shape)) * 3 + 2;
  e.normalizer = data::Normalizer::fit(train, data::NormalizeOptions().mode("standard").scope(c.scope));
  // Batch-norm statistics other than the initial ones.
  e.model->set_training(true);
  e.model->forward(e.normalizer.apply(train));
  e.model->set_training(false);

  e.info.task = c.task;
  e.info.input_shape = c.shape;
  e.info.outputs = c.outputs;
  for (int64_t i = 0; i < c.outputs; ++i) e.info.class_names.push_back("class " + std::to_string(i));
  e.info.spec = models::to_json(c.spec);
  e.info.preprocessing = {{"normalize", e.normalizer.to_json()}};
  if (c.task == Task::regression) {
    e.target = data::Normalizer::fit(torch::randn({40, c.outputs}) * 5 + 10, data::NormalizeOptions());
    e.info.preprocessing["target_normalize"] = e.target.to_json();
  }
  e.path = dir / (c.label + ".onnx");
  export_onnx(*e.model, e.info, e.path.string());
  e.raw1 = torch::randn(batch_shape(1, c.shape)) * 3 + 2;
  e.raw5 = torch::randn(batch_shape(5, c.shape)) * 3 + 2;
  return e;
}

const fs::path kNodeDir = fs::path(KD_SOURCE_DIR) / "tests" / "node";

// Why onnxruntime (Node.js) cannot run here, or nothing.
std::optional<std::string> onnxruntime_missing() {
  if (std::system("node --version > /dev/null 2>&1") != 0) return "node is missing";
  if (!fs::exists(kNodeDir / "node_modules" / "onnxruntime-node")) {
    return "onnxruntime-node is not installed: run scripts/setup.sh";
  }
  return std::nullopt;
}

// The model's first output in onnxruntime on `input` (token ids as int64 when it takes input_ids);
// an empty tensor after a failed check when node fails.
torch::Tensor onnxruntime_outputs(const fs::path& model, const torch::Tensor& input, const fs::path& dir) {
  fs::path in = dir / "ort.in.npy", out = dir / "ort.out.npy", log = dir / "node.log";
  data::write_npy(in, input);
  std::string command = "node '" + (kNodeDir / "run_onnx.js").string() + "' '" + model.string() + "' '" +
                        in.string() + "' '" + out.string() + "' > '" + log.string() + "' 2>&1";
  if (std::system(command.c_str()) != 0) {
    ADD_FAILURE() << model << ": " << read_file(log);
    return {};
  }
  return data::read_npy(out);
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_TRUE(a.defined() && a.sizes() == b.sizes());
  if (!a.defined() || a.sizes() != b.sizes()) return 1e9;
  return (a - b).abs().max().item<double>();
}

TEST(OnnxExport, OnnxModelRunsExportedFilesOnRawInput) {
  TempDir dir;
  for (const auto& c : cases()) {
    Exported e = export_case(c, dir.path());
    LoadedModel loaded = load_model(e.path.string());
    EXPECT_EQ(loaded.model->kind(), "onnx") << c.label;
    ASSERT_TRUE(loaded.has_info) << c.label;
    EXPECT_EQ(loaded.info.class_names, e.info.class_names) << c.label;
    EXPECT_EQ(loaded.info.spec, e.info.spec) << c.label;
    // The graph takes raw inputs: nothing is left to apply, and what it folded is on record.
    EXPECT_FALSE(loaded.info.preprocessing.contains("normalize")) << c.label;
    EXPECT_FALSE(loaded.info.preprocessing.contains("target_normalize")) << c.label;
    EXPECT_EQ(loaded.info.preprocessing["folded"]["normalize"], e.info.preprocessing["normalize"]) << c.label;
    for (const auto& raw : {e.raw1, e.raw5}) {
      double diff = max_diff(loaded.model->forward(raw), e.expected(raw));
      std::cout << "[ onnx     ] " << c.label << " batch " << raw.size(0) << ": kdistill OnnxModel max abs diff " << diff << "\n";
      EXPECT_LE(diff, 1e-4) << c.label;
    }
    // The summary of the graph counts what the zoo model counts (BN statistics aside).
    EXPECT_EQ(loaded.model->summary(c.shape).macs, e.model->summary(c.shape).macs) << c.label;
  }
}

TEST(OnnxExport, MetadataHoldsInfoAndClassNames) {
  TempDir dir;
  Exported e = export_case(cases()[2], dir.path());
  OnnxModel graph(e.path.string());
  std::map<std::string, std::string> meta(graph.metadata().begin(), graph.metadata().end());
  ASSERT_TRUE(meta.count(kOnnxInfoKey));
  // The info, with the normalisation the graph applies itself moved under preprocessing.folded.
  EXPECT_EQ(nlohmann::json::parse(meta[kOnnxInfoKey]), with_folded(e.info, {"normalize"}).to_json());
  EXPECT_TRUE(e.info.preprocessing.contains("normalize"));
  EXPECT_EQ(nlohmann::json::parse(meta[kOnnxClassNamesKey]), nlohmann::json(e.info.class_names));
  EXPECT_EQ(graph.input_names(), std::vector<std::string>{"input"});
  EXPECT_EQ(graph.output_names(), std::vector<std::string>{"output"});
}

TEST(OnnxExport, OnnxruntimeMatchesZooModel) {
  if (auto missing = onnxruntime_missing()) KD_PEER_MISSING(*missing);
  TempDir dir;
  for (const auto& c : cases()) {
    Exported e = export_case(c, dir.path());
    for (const auto& raw : {e.raw1, e.raw5}) {
      double diff = max_diff(onnxruntime_outputs(e.path, raw, dir.path()), e.expected(raw));
      std::cout << "[ onnx     ] " << c.label << " batch " << raw.size(0) << ": onnxruntime max abs diff " << diff << "\n";
      EXPECT_LE(diff, 1e-4) << c.label;
    }
  }
}

// Text families: int64 input_ids in, padding masked as the zoo masks it; kdistill's OnnxModel and
// onnxruntime against the zoo model, on texts of several lengths (padding at the end of each).
struct TextCase {
  std::string label;
  ZooSpec spec;
};

std::vector<TextCase> text_cases() {
  return {
      {"transformer_pre_mean", ZooSpec().arch("transformer").vocab(40).pad_id(0).embedding(16).layers(2).heads(4).ff(24)
                                   .activation("gelu")},
      {"transformer_post_first", ZooSpec().arch("transformer").vocab(30).pad_id(3).embedding(8).layers(1).heads(2)
                                     .norm("post").pooling("first").activation("relu")},
      {"textcnn", ZooSpec().arch("textcnn").vocab(25).pad_id(1).embedding(6).channels({8, 5}).kernel(3).hidden({4})},
      {"bigru_mean", ZooSpec().arch("bigru").vocab(30).pad_id(2).embedding(6).channels({5, 4})},
      {"bigru_max", ZooSpec().arch("bigru").vocab(30).pad_id(0).embedding(4).channels({6}).pooling("max").hidden({4})},
  };
}

// Ids [rows, length]: tokens other than the pad id, then padding (the first row unpadded).
torch::Tensor text_ids(const ZooSpec& spec, int64_t rows, int64_t length) {
  torch::Tensor ids = torch::randint(0, spec.vocab(), {rows, length}, torch::kLong);
  ids.masked_fill_(ids.eq(spec.pad_id()), (spec.pad_id() + 1) % spec.vocab());
  for (int64_t r = 1; r < rows; ++r) ids[r].slice(0, length - (r * 3) % length).fill_(spec.pad_id());
  return ids.to(torch::kFloat);  // as data.format: text gives them
}

TEST(OnnxExport, TextModelsTakeInputIds) {
  if (auto missing = onnxruntime_missing()) KD_PEER_MISSING(*missing);
  TempDir dir;
  const int64_t length = 9, outputs = 3;
  for (const auto& c : text_cases()) {
    torch::manual_seed(5);
    auto model = models::build_zoo_model(c.spec, {length}, outputs);
    model->set_training(false);
    ModelInfo info;
    info.input_shape = {length};
    info.outputs = outputs;
    info.class_names = {"a", "b", "c"};
    info.spec = models::to_json(c.spec);
    fs::path path = dir / (c.label + ".onnx");
    export_onnx(*model, info, path.string());
    OnnxModel graph(path.string());
    EXPECT_EQ(graph.input_names(), std::vector<std::string>{"input_ids"}) << c.label;
    LoadedModel loaded = load_model(path.string());
    for (int64_t rows : {1, 5}) {
      torch::Tensor ids = text_ids(c.spec, rows, length);
      torch::Tensor expected = model->forward(ids);
      double diff = max_diff(loaded.model->forward(ids), expected);
      std::cout << "[ onnx     ] " << c.label << " batch " << rows << ": kdistill OnnxModel max abs diff " << diff << "\n";
      EXPECT_LE(diff, 1e-4) << c.label;

      diff = max_diff(onnxruntime_outputs(path, ids, dir.path()), expected);
      std::cout << "[ onnx     ] " << c.label << " batch " << rows << ": onnxruntime max abs diff " << diff << "\n";
      EXPECT_LE(diff, 1e-4) << c.label;
    }
  }
}

TEST(OnnxExport, PythonOnnxCheckerAccepts) {
  if (!fs::exists("/usr/bin/python3") || !test::python_has("onnx")) KD_PEER_MISSING("/usr/bin/python3 with onnx is missing");
  TempDir dir;
  std::string files;
  for (const auto& c : cases()) files += "'" + export_case(c, dir.path()).path.string() + "', ";
  auto result = test::run_python(
      "import json, onnx\n"
      "for path in [" + files + "]:\n"
      "    model = onnx.load(path)\n"
      "    onnx.checker.check_model(model, full_check=True)\n"
      "    assert model.opset_import[0].version == 13, path\n"
      "    meta = {p.key: p.value for p in model.metadata_props}\n"
      "    assert json.loads(meta['kdistill'])['format'] == 'kdistill-model', path\n"
      "    assert json.loads(meta['class_names'])[0] == 'class 0', path\n"
      "    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == 'N', path\n"
      "print('ok')\n");
  EXPECT_EQ(result.status, 0) << result.output;
}

TEST(OnnxExport, RefusesOtherModelsAndLeavesNoFile) {
  TempDir dir;
  ExportCase c = cases()[0];
  auto model = models::build_zoo_model(ZooSpec().arch("mlp").hidden({16}), c.shape, c.outputs);
  ModelInfo info;
  info.input_shape = c.shape;
  info.outputs = c.outputs;
  info.spec = models::to_json(c.spec);
  std::string path = (dir / "student.onnx").string();
  KD_EXPECT_ERROR(export_onnx(*model, info, path),
                  path + ": onnx export: the mlp model does not match its spec: load_state: \"fc1.weight\": shape [16, 20]");
  EXPECT_FALSE(fs::exists(path));

  // A model that is not from the zoo (here: an exported graph loaded back).
  Exported e = export_case(c, dir.path());
  OnnxModel graph(e.path.string());
  KD_EXPECT_ERROR(export_onnx(graph, e.info, path), path + ": onnx export: only zoo models (mlp, cnn, vgg, resnet, linear, textcnn, transformer, bigru)");

  std::string unwritable = (e.path / "student.onnx").string();  // a file used as a folder
  std::string message = error_of([&] { export_onnx(*e.model, e.info, unwritable); });
  EXPECT_NE(message.find(unwritable), std::string::npos) << message;
}

}  // namespace
}  // namespace kd::exports
