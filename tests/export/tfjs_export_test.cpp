#include "kd/export/tfjs_export.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/cli_util.h"
#include "kd/data/normalize.h"
#include "kd/data/npy.h"
#include "kd/io/model_file.h"
#include "kd/io/tfjs_model.h"
#include "kd/models/zoo.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "test_util.h"
#include "io/tfjs_test_util.h"

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
  std::string scope;  // normalisation scope of the data ("" = none)
  bool raw_inputs;    // whether the export folds the normalisation (else it takes normalised inputs)
};

std::vector<ExportCase> cases() {
  return {
      {"mlp_flat", ZooSpec().arch("mlp").hidden({16, 8}).activation("tanh"), {20}, 3, "feature", true},
      {"mlp_image_bn_dropout",
       ZooSpec().arch("mlp").hidden({24}).batch_norm(true).dropout(0.3).activation("gelu"),
       {2, 6, 5},
       4,
       "feature",
       true},
      {"cnn", ZooSpec().arch("cnn").channels({4, 8}).activation("leaky_relu"), {3, 12, 10}, 5, "channel", true},
      {"cnn_bn_avg_head_flat",
       ZooSpec().arch("cnn").channels({6}).batch_norm(true).pool("avg").kernel(5).hidden({10}).activation("silu"),
       {64},
       10,
       "global",
       true},
      {"cnn_pixel_scope", ZooSpec().arch("cnn").channels({4}).batch_norm(true), {1, 8, 8}, 3, "feature", false},
      {"vgg_flat", ZooSpec().arch("vgg").channels({4}).pool("avg").hidden({5}), {64}, 3, "global", true},
      {"resnet8", ZooSpec().arch("resnet").depth(8).width(4).dropout(0.2), {2, 10, 10}, 3, "channel", true},
      {"resnet14_relu", ZooSpec().arch("resnet").depth(14).width(2).hidden({6}), {3, 9, 9}, 2, "global", true},
      {"linear", ZooSpec().arch("linear").dropout(0.1), {1, 5, 5}, 2, "feature", true},
      {"linear_no_norm", ZooSpec().arch("linear"), {7}, 2, "", true},
  };
}

// A zoo model with non-trivial BN statistics, its info (normalisation fitted on raw data with an offset
// and a spread per feature) and a raw input batch.
struct Exported {
  models::ModelPtr model;
  ModelInfo info;
  data::Normalizer normalizer;
  torch::Tensor raw;       // what a user feeds the exported model when raw_inputs
  torch::Tensor expected;  // the zoo model's output on normalize(raw)
};

Exported make(const ExportCase& c) {
  torch::manual_seed(7);
  Exported e;
  e.model = models::build_zoo_model(c.spec, c.shape, c.outputs);
  torch::Tensor train = torch::randn(batch_shape(64, c.shape)) * (torch::rand(c.shape) * 3 + 0.5) +
                        torch::randn(c.shape) * 2 + 1;
  e.normalizer = data::Normalizer::fit(train, data::NormalizeOptions().mode(c.scope.empty() ? "none" : "standard")
                                                  .scope(c.scope.empty() ? "auto" : c.scope));
  e.model->set_training(true);
  e.model->forward(e.normalizer.apply(train));
  e.model->set_training(false);
  e.info.task = Task::classification;
  e.info.input_shape = c.shape;
  e.info.outputs = c.outputs;
  for (int64_t i = 0; i < c.outputs; ++i) e.info.class_names.push_back("class " + std::to_string(i));
  e.info.spec = models::to_json(c.spec);
  e.info.preprocessing = {{"normalize", e.normalizer.to_json()}};
  e.raw = train.slice(0, 0, 6).contiguous();
  e.expected = e.model->forward(e.normalizer.apply(e.raw));
  return e;
}

TEST(TfjsExport, TfjsModelLoadsTheExport) {
  TempDir dir;
  for (const auto& c : cases()) {
    Exported e = make(c);
    fs::path folder = dir.path() / c.label;
    export_tfjs(*e.model, e.info, folder.string());
    EXPECT_TRUE(fs::exists(folder / "group1-shard1of1.bin")) << c.label;
    TfjsModel loaded((folder / "model.json").string());
    torch::Tensor input = c.raw_inputs ? e.raw : e.normalizer.apply(e.raw);
    torch::Tensor actual = loaded.forward(input);
    ASSERT_EQ(actual.sizes(), e.expected.sizes()) << c.label;
    // The outputs depend on the input (a constant output would match anything), and the difference is
    // small against how much they vary (resnet outputs vary by ~1e-3 only: 7.7e-4 in the Clang build).
    double spread = (e.expected - e.expected.mean(0)).abs().max().item<double>();
    EXPECT_GT(spread, 1e-4) << c.label;
    double diff = (actual - e.expected).abs().max().item<double>();
    EXPECT_LE(diff, 1e-4) << c.label;
    EXPECT_LE(diff, 1e-3 * spread) << c.label;
    RecordProperty(c.label + "_max_abs_diff", fmt::format("{:.2e}", diff));
    RecordProperty(c.label + "_output_spread", fmt::format("{:.2e}", spread));

    const auto& meta = loaded.metadata()["kdistill"];
    EXPECT_EQ(meta["class_names"], nlohmann::json(e.info.class_names)) << c.label;
    bool normalized = !c.raw_inputs && !c.scope.empty();
    EXPECT_EQ(meta["tfjs_input"]["normalized"].get<bool>(), normalized) << c.label;
    // preprocessing lists what a user still applies; a folded normalisation is kept under "folded".
    EXPECT_EQ(meta["preprocessing"].contains("normalize"), normalized) << c.label;
    EXPECT_EQ(meta["preprocessing"].contains("folded"), !normalized) << c.label;
    EXPECT_EQ(ModelInfo::from_json(meta, c.label).input_shape, c.shape) << c.label;
  }
}

TEST(TfjsExport, SummaryMatchesZooWithoutNormalisation) {
  // With nothing folded in, the Keras model has the zoo's parameters and MACs, layer for layer.
  TempDir dir;
  for (const auto& c : cases()) {
    ExportCase plain = c;
    plain.scope = "";
    Exported e = make(plain);
    export_tfjs(*e.model, e.info, (dir.path() / c.label).string());
    TfjsModel loaded((dir.path() / c.label / "model.json").string());
    models::ModelSummary zoo = e.model->summary(c.shape), keras = loaded.summary(c.shape);
    EXPECT_EQ(keras.params, zoo.params) << c.label;
    EXPECT_EQ(keras.macs, zoo.macs) << c.label;
  }
}

TEST(TfjsExport, TfjsInNodeMatchesZooModel) {
  std::string unavailable = test::tfjs_unavailable();
  if (!unavailable.empty()) KD_PEER_MISSING(unavailable);
  TempDir dir;
  for (const auto& c : cases()) {
    Exported e = make(c);
    fs::path folder = dir.path() / c.label;
    export_tfjs(*e.model, e.info, folder.string());
    data::write_npy(dir.path() / (c.label + ".x.npy"), c.raw_inputs ? e.raw : e.normalizer.apply(e.raw));
    fs::path output = dir.path() / (c.label + ".y.npy"), metadata = dir.path() / (c.label + ".meta.json");
    auto result = test::run_node("tests/node/run_tfjs.js",
                                 "'" + folder.string() + "' '" + (dir.path() / (c.label + ".x.npy")).string() + "' '" +
                                     output.string() + "' '" + metadata.string() + "'",
                                 dir.path() / "node.log");
    ASSERT_EQ(result.status, 0) << c.label << ": " << result.output;
    torch::Tensor actual = data::read_npy(output);
    ASSERT_EQ(actual.sizes(), e.expected.sizes()) << c.label;
    double diff = (actual - e.expected).abs().max().item<double>();
    EXPECT_LE(diff, 1e-4) << c.label;
    EXPECT_LE(diff, 1e-3 * (e.expected - e.expected.mean(0)).abs().max().item<double>()) << c.label;
    RecordProperty(c.label + "_max_abs_diff", fmt::format("{:.2e}", diff));
    auto meta = nlohmann::json::parse(read_file(metadata));
    EXPECT_EQ(meta["kdistill"]["class_names"], nlohmann::json(e.info.class_names)) << c.label;
  }
}

TEST(TfjsExport, ReplacesAnExistingFolderAndRefusesOtherModels) {
  TempDir dir;
  Exported e = make(cases()[0]);
  fs::path folder = dir.path() / "student.tfjs";
  fs::create_directories(folder);
  write_file_atomic(folder / "stale.txt", "old");
  export_tfjs(*e.model, e.info, folder.string());
  EXPECT_FALSE(fs::exists(folder / "stale.txt"));
  EXPECT_TRUE(fs::exists(folder / "model.json"));
  // Only the folder itself is left: no temporary siblings.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);

  TfjsModel imported((folder / "model.json").string());
  std::string message = error_of([&] { export_tfjs(imported, e.info, (dir.path() / "again").string()); });
  EXPECT_NE(message.find("again: tfjs export: only zoo models export to TF.js, got a tfjs model"), std::string::npos)
      << message;
  EXPECT_FALSE(fs::exists(dir.path() / "again"));
}

TEST(TfjsExport, UnwritablePlaceIsAnError) {
  TempDir dir;
  write_file_atomic(dir.path() / "file", "not a folder");
  Exported e = make(cases().back());
  fs::path folder = dir.path() / "file" / "student.tfjs";
  std::string message = error_of([&] { export_tfjs(*e.model, e.info, folder.string()); });
  EXPECT_NE(message.find(folder.string()), std::string::npos) << message;
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(TfjsExport, RunExportsTheStudentAndUsesItAsATeacher) {
  // `export: [tfjs]` writes DIR/student.tfjs/, which takes raw features (the standardisation is folded
  // into fc1); a second run (which standardises its features) sees that in the file's metadata and
  // feeds it raw features as its teacher.
  TempDir dir;
  const std::string data = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz";
  if (!fs::exists(data)) KD_PEER_MISSING(data << " is missing");
  std::string common = "task: classification\nseed: 1\n"
                       "student:\n  model: {arch: mlp, hidden: [8]}\n"
                       "distill:\n  epochs: 4\n  batch_size: 64\n  optimizer: {name: adam, lr: 0.01}\n";
  write_file_atomic(dir.path() / "first.yaml",
                    common + "data:\n  train: " + data + "\n  test_fraction: 0.25\n" +
                        "teacher:\n  model: {arch: mlp, hidden: [32]}\n  train: {epochs: 6, batch_size: 64}\n"
                        "export: [tfjs]\n");
  auto first = test::run_kdistill("run " + (dir.path() / "first.yaml").string() + " --out " + (dir.path() / "a").string());
  ASSERT_EQ(first.status, 0) << first.output;
  fs::path model_json = dir.path() / "a/student.tfjs/model.json";
  ASSERT_TRUE(fs::exists(model_json));
  auto metrics = nlohmann::json::parse(read_file(dir.path() / "a/metrics.json"));

  LoadedModel student = load_model((dir.path() / "a/student.kdm").string());
  LoadedModel exported = load_model(model_json.string());
  ASSERT_TRUE(exported.has_info);
  EXPECT_EQ(exported.info.class_names, student.info.class_names);
  auto normalizer = data::Normalizer::from_json(student.info.preprocessing["normalize"]);
  torch::Tensor raw = torch::rand({7, 64}) * 16;
  torch::Tensor expected = student.model->forward(normalizer.apply(raw));
  EXPECT_LE((exported.model->forward(raw) - expected).abs().max().item<double>(), 1e-4);

  write_file_atomic(dir.path() / "second.yaml",
                    common + "data:\n  train: " + data + "\n  test_fraction: 0.25\n" +
                        "teacher:\n  path: " + model_json.string() + "\n");
  auto second = test::run_kdistill("run " + (dir.path() / "second.yaml").string() + " --out " + (dir.path() / "b").string());
  ASSERT_EQ(second.status, 0) << second.output;
  auto again = nlohmann::json::parse(read_file(dir.path() / "b/metrics.json"));
  // The same test rows (same seed and split): the TF.js teacher scores what the student it came from scored.
  EXPECT_NEAR(again["models"]["teacher"]["test"]["accuracy"].get<double>(),
              metrics["models"]["student"]["test"]["accuracy"].get<double>(), 1e-9);
  EXPECT_NE(second.output.find("raw inputs"), std::string::npos) << second.output;
  // Its size on disk is model.json and the weight shard together.
  EXPECT_EQ(again["models"]["teacher"]["bytes"].get<int64_t>(),
            static_cast<int64_t>(fs::file_size(model_json) + fs::file_size(model_json.parent_path() / "group1-shard1of1.bin")));
}

TEST(TfjsExport, RegressionOutputsAreInTheTargetsUnits) {
  // Standardised targets are scaled back inside the last Dense: the file predicts in the targets' units.
  torch::manual_seed(3);
  auto model = models::build_zoo_model(ZooSpec().arch("mlp").hidden({6}), {4}, 2);
  torch::Tensor raw = torch::randn({32, 4}) * 3 + 5;
  auto inputs = data::Normalizer::fit(raw, data::NormalizeOptions());
  auto targets = data::Normalizer::fit(torch::randn({32, 2}) * torch::tensor({10.0f, 0.5f}) + torch::tensor({100.0f, -2.0f}),
                                       data::NormalizeOptions().scope("feature"));
  ModelInfo info;
  info.task = Task::regression;
  info.input_shape = {4};
  info.outputs = 2;
  info.spec = models::to_json(ZooSpec().arch("mlp").hidden({6}));
  info.preprocessing = {{"normalize", inputs.to_json()}, {"target_normalize", targets.to_json()}};
  TempDir dir;
  export_tfjs(*model, info, (dir.path() / "m").string());
  LoadedModel loaded = load_model((dir.path() / "m/model.json").string());
  torch::Tensor expected = targets.invert(model->forward(inputs.apply(raw)));
  EXPECT_LE((loaded.model->forward(raw) - expected).abs().max().item<double>(), 1e-3);
  EXPECT_GT(expected.select(1, 0).mean().item<double>(), 50);  // really in the targets' units
  EXPECT_FALSE(loaded.info.preprocessing.contains("target_normalize"));
  EXPECT_TRUE(loaded.info.preprocessing["folded"].contains("target_normalize"));
}

}  // namespace
}  // namespace kd::exports
