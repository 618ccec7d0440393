#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "kd/data/npy.h"
#include "kd/io/model_file.h"
#include "kd/io/tfjs_model.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "test_util.h"
#include "tfjs_test_util.h"

namespace kd::io {
namespace {

namespace fs = std::filesystem;
using test::error_of;
using test::TempDir;

// The fixtures of tests/fixtures/make_tfjs_models.js, made once per test binary run.
class TfjsImport : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    unavailable_ = test::tfjs_unavailable();
    if (!unavailable_.empty()) return;
    dir_ = new TempDir();
    auto result = test::run_node("tests/fixtures/make_tfjs_models.js", "'" + dir_->path().string() + "'",
                                 dir_->path() / "node.log");
    if (result.status != 0) failed_ = result.output;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!unavailable_.empty()) KD_PEER_MISSING(unavailable_);
    ASSERT_TRUE(failed_.empty()) << failed_;
  }
  static fs::path fixture(const std::string& name) { return dir_->path() / name; }

  // Max |TfjsModel(x) - tfjs(x)| for fixture `name`.
  static double max_diff(const std::string& name) {
    TfjsModel model((fixture(name) / "model.json").string());
    torch::Tensor x = data::read_npy(fixture(name + ".x.npy"));
    torch::Tensor expected = data::read_npy(fixture(name + ".y.npy"));
    torch::Tensor actual = model.forward(x);
    EXPECT_EQ(actual.sizes(), expected.sizes()) << name;
    return (actual - expected).abs().max().item<double>();
  }

  static std::string unavailable_, failed_;
  static TempDir* dir_;
};

std::string TfjsImport::unavailable_, TfjsImport::failed_;
TempDir* TfjsImport::dir_ = nullptr;

// A copy of fixture `name` in `dir`, with model.json replaced by `edit(model.json)`.
fs::path edited_copy(const fs::path& from, const fs::path& dir, const std::function<std::string(const std::string&)>& edit) {
  fs::create_directories(dir);
  for (const auto& entry : fs::directory_iterator(from)) fs::copy_file(entry.path(), dir / entry.path().filename());
  write_file_atomic(dir / "model.json", edit(read_file(from / "model.json")));
  return dir / "model.json";
}

TEST_F(TfjsImport, SequentialCnnMatchesTfjs) {
  // Conv2D same (asymmetric) and valid with dilation, BN with moving stats, both poolings with same and
  // valid padding, Flatten in H, W, C order, Dense, Dropout, Activation; NCHW input permuted.
  double diff = max_diff("cnn");
  RecordProperty("max_abs_diff", fmt::format("{:.2e}", diff));
  EXPECT_LE(diff, 1e-4);
}

// Every layer's output as a tap equals TF.js's own model.layers[i].output (transposed from channels
// last), on the sequential CNN and the functional model with its add and concatenate.
TEST_F(TfjsImport, TapsAreTheLayersOutputsInTfjs) {
  for (const char* name : {"cnn", "functional"}) {
    SCOPED_TRACE(name);
    fs::path out = dir_->path() / (std::string(name) + ".layers");
    auto result = test::run_node("tests/node/run_tfjs_layers.js",
                                 "'" + fixture(name).string() + "' '" + fixture(std::string(name) + ".x.npy").string() +
                                     "' '" + out.string() + "'",
                                 dir_->path() / "layers.log");
    ASSERT_EQ(result.status, 0) << result.output;
    std::vector<std::string> layers = nlohmann::json::parse(read_file(out / "names.json"));
    TfjsModel model((fixture(name) / "model.json").string());
    auto tapped = model.forward_taps(data::read_npy(fixture(std::string(name) + ".x.npy")), layers);
    ASSERT_GE(layers.size(), 4u);
    for (size_t i = 0; i < layers.size(); ++i) {
      torch::Tensor expected = data::read_npy(out / (std::to_string(i) + ".npy"));
      if (expected.dim() == 4) expected = expected.permute({0, 3, 1, 2});
      ASSERT_EQ(tapped.taps[i].sizes(), expected.sizes()) << layers[i];
      EXPECT_LT((tapped.taps[i] - expected).abs().max().item<double>(), 1e-4) << layers[i];
    }
  }
}

TEST_F(TfjsImport, FunctionalAddConcatenateMatchesTfjs) {
  double diff = max_diff("functional");
  RecordProperty("max_abs_diff", fmt::format("{:.2e}", diff));
  EXPECT_LE(diff, 1e-4);
}

TEST_F(TfjsImport, DenseMlpMatchesTfjs) {
  double diff = max_diff("mlp");
  RecordProperty("max_abs_diff", fmt::format("{:.2e}", diff));
  EXPECT_LE(diff, 1e-4);
}

TEST_F(TfjsImport, FlatInputIsReshapedInKdistillOrder) {
  TfjsModel model((fixture("cnn") / "model.json").string());
  torch::Tensor x = data::read_npy(fixture("cnn.x.npy"));  // [5, 3, 12, 10]
  torch::Tensor expected = data::read_npy(fixture("cnn.y.npy"));
  EXPECT_EQ(model.keras_input_shape(), (std::vector<int64_t>{12, 10, 3}));
  EXPECT_LE((model.forward(x.reshape({5, -1})) - expected).abs().max().item<double>(), 1e-4);
  KD_EXPECT_ERROR(model.forward(torch::zeros({2, 3, 10, 12})), "does not fit the model's input [12, 10, 3]");
}

TEST_F(TfjsImport, KerasConverterLayoutWithInputLayerAndModelConfig) {
  // tensorflowjs_converter writes Keras's {"model_config": {...}} and a Sequential that starts with an
  // InputLayer; the same network in that layout gives the same numbers.
  TempDir dir;
  fs::path model_json = edited_copy(fixture("mlp"), dir / "keras", [](const std::string& text) {
    auto root = nlohmann::json::parse(text);
    auto& layers = root["modelTopology"]["config"]["layers"];
    layers[0]["config"].erase("batch_input_shape");
    nlohmann::json input = {{"class_name", "InputLayer"},
                            {"config", {{"batch_input_shape", {nullptr, 7}}, {"name", "input_1"}}}};
    layers.insert(layers.begin(), input);
    root["modelTopology"] = {{"keras_version", "2.15.0"}, {"model_config", root["modelTopology"]}};
    return root.dump();
  });
  TfjsModel model(model_json.string());
  torch::Tensor x = data::read_npy(fixture("mlp.x.npy"));
  EXPECT_LE((model.forward(x) - data::read_npy(fixture("mlp.y.npy"))).abs().max().item<double>(), 1e-4);
}

TEST_F(TfjsImport, LoadModelDispatchesOnJson) {
  LoadedModel loaded = load_model((fixture("mlp") / "model.json").string());
  EXPECT_EQ(loaded.model->kind(), "tfjs");
  EXPECT_FALSE(loaded.has_info);
  EXPECT_TRUE(loaded.model->parameters().empty());
  torch::Tensor x = data::read_npy(fixture("mlp.x.npy"));
  EXPECT_LE((loaded.model->forward(x) - data::read_npy(fixture("mlp.y.npy"))).abs().max().item<double>(), 1e-4);
}

TEST_F(TfjsImport, SummaryCountsParamsAndMacs) {
  TfjsModel model((fixture("mlp") / "model.json").string());
  models::ModelSummary s = model.summary({7});
  // Dense 7*16+16, BN beta 16 (scale: false; moving stats are not parameters), Dense 16*8+8, Dense 8*3+3.
  EXPECT_EQ(s.params, 7 * 16 + 16 + 16 + 16 * 8 + 8 + 8 * 3 + 3);
  EXPECT_EQ(s.macs, 7 * 16 + 16 * 8 + 8 * 3);
  EXPECT_EQ(s.layers.size(), 5u);

  TfjsModel functional((fixture("functional") / "model.json").string());
  models::ModelSummary f = functional.summary({2, 8, 8});
  // conv 3x3 2->4 and 1x1 2->4 on 8x8, depthwise 3x3 on 6 channels x2 on 8x8, Dense 12->3.
  EXPECT_EQ(f.macs, 9 * 2 * 4 * 64 + 2 * 4 * 64 + 9 * 12 * 64 + 12 * 3);
  EXPECT_NE(f.layers[0].find("input1"), std::string::npos) << f.layers[0];
}

TEST_F(TfjsImport, StateRoundTrips) {
  TfjsModel model((fixture("functional") / "model.json").string());
  models::NamedTensors state;
  for (const auto& [name, t] : model.state()) state.emplace_back(name, t.clone());
  ASSERT_FALSE(state.empty());
  torch::Tensor x = data::read_npy(fixture("functional.x.npy"));
  torch::Tensor before = model.forward(x);
  models::NamedTensors zeroed;
  for (const auto& [name, t] : state) zeroed.emplace_back(name, torch::zeros_like(t));
  model.load_state(zeroed);
  EXPECT_GT((model.forward(x) - before).abs().max().item<double>(), 1e-3);
  model.load_state(state);
  EXPECT_EQ((model.forward(x) - before).abs().max().item<double>(), 0.0);
  KD_EXPECT_ERROR(model.load_state({}), "missing tensor");
}

TEST_F(TfjsImport, RefusesBadFiles) {
  TempDir dir;
  fs::path good = fixture("cnn");
  std::string json = read_file(good / "model.json");

  fs::path truncated = edited_copy(good, dir / "truncated", [](const std::string& s) { return s.substr(0, s.size() / 2); });
  std::vector<std::string> messages;
  std::string message = error_of([&] { TfjsModel m(truncated.string()); });
  messages.push_back(message);
  EXPECT_NE(message.find(truncated.string() + ": not a TF.js model.json: not valid JSON"), std::string::npos) << message;

  fs::path random = edited_copy(good, dir / "random", [](const std::string&) {
    std::string bytes;
    for (int i = 0; i < 300; ++i) bytes += static_cast<char>((i * 7919 + 13) % 256);
    return bytes;
  });
  message = error_of([&] { TfjsModel m(random.string()); });
  messages.push_back(message);
  EXPECT_NE(message.find(random.string() + ": not a TF.js model.json"), std::string::npos) << message;

  fs::path missing = edited_copy(good, dir / "missing", [](const std::string& s) { return s; });
  fs::remove(dir / "missing" / "group1-shard1of1.bin");
  message = error_of([&] { TfjsModel m(missing.string()); });
  messages.push_back(message);
  EXPECT_NE(message.find(missing.string() + ": weight shard " + (dir / "missing" / "group1-shard1of1.bin").string() +
                         " is missing"),
            std::string::npos)
      << message;

  fs::path short_shard = edited_copy(good, dir / "short", [](const std::string& s) { return s; });
  std::string bytes = read_file(dir / "short" / "group1-shard1of1.bin");
  write_file_atomic(dir / "short" / "group1-shard1of1.bin", bytes.substr(0, bytes.size() - 4));
  message = error_of([&] { TfjsModel m(short_shard.string()); });
  messages.push_back(message);
  EXPECT_NE(message.find(fmt::format("expected {} bytes, found {}", bytes.size(), bytes.size() - 4)), std::string::npos)
      << message;
  EXPECT_NE(message.find(short_shard.string()), std::string::npos) << message;

  fs::path unsupported = edited_copy(good, dir / "unsupported", [](std::string s) {
    auto at = s.find("\"class_name\":\"Flatten\"");
    EXPECT_NE(at, std::string::npos);
    return s.replace(at, 22, "\"class_name\":\"LSTM\"");
  });
  message = error_of([&] { TfjsModel m(unsupported.string()); });
  messages.push_back(message);
  EXPECT_NE(message.find("has class LSTM, which is not supported"), std::string::npos) << message;
  EXPECT_NE(message.find("layer \"flatten_"), std::string::npos) << message;

  fs::path dtype = edited_copy(good, dir / "dtype", [](std::string s) {
    auto at = s.find("\"dtype\":\"float32\"}", s.find("weightsManifest"));
    EXPECT_NE(at, std::string::npos);
    return s.replace(at, 18, "\"dtype\":\"complex64\"}");
  });
  message = error_of([&] { TfjsModel m(dtype.string()); });
  EXPECT_NE(message.find("unsupported dtype \"complex64\""), std::string::npos) << message;
  EXPECT_NE(message.find(dtype.string()), std::string::npos) << message;

  messages.push_back(message);

  // Shard paths stay in the model's folder; shapes are checked before the bytes are counted.
  for (const std::string escape : {"../outside.bin", "/etc/hostname", "a/../../outside.bin"}) {
    fs::path escaping = edited_copy(good, dir / "escaping", [&](std::string s) {
      auto at = s.find("group1-shard1of1.bin");
      EXPECT_NE(at, std::string::npos);
      return s.replace(at, 20, escape);
    });
    message = error_of([&] { TfjsModel m(escaping.string()); });
    messages.push_back(message);
    EXPECT_NE(message.find("weightsManifest[0].paths: \"" + escape + "\" leaves the model's folder"), std::string::npos)
        << message;
    fs::remove_all(dir / "escaping");
  }
  fs::path huge = edited_copy(good, dir / "huge", [](std::string s) {
    auto manifest = s.find("weightsManifest");
    auto at = s.find("\"shape\":[", manifest);
    EXPECT_NE(at, std::string::npos);
    return s.insert(at + 9, "4294967296,4294967296,");
  });
  message = error_of([&] { TfjsModel m(huge.string()); });
  messages.push_back(message);
  EXPECT_NE(message.find("has more than 2^40 elements"), std::string::npos) << message;
  // A model.json of more than 64 MB is refused by its size (a sparse file here), not read.
  fs::path large = edited_copy(good, dir / "large", [](const std::string& s) { return s; });
  fs::resize_file(large, uintmax_t{65} << 20);
  message = error_of([&] { TfjsModel m(large.string()); });
  messages.push_back(message);
  EXPECT_NE(message.find(large.string() + ": 68157440 bytes, not a TF.js model.json (at most 64 MB"), std::string::npos)
      << message;
  for (const auto& m : messages) EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

TEST(TfjsModelFile, QuantizedUint8WeightsAreDequantized) {
  // A one-layer Dense model written by hand: kernel as uint8 with scale/min, bias float16.
  TempDir dir;
  nlohmann::json model = {
      {"format", "layers-model"},
      {"modelTopology",
       {{"class_name", "Sequential"},
        {"config",
         {{"name", "s"},
          {"layers",
           {{{"class_name", "Dense"},
             {"config", {{"name", "d"}, {"units", 2}, {"activation", "linear"}, {"use_bias", true},
                         {"batch_input_shape", {nullptr, 2}}}}}}}}}}},
      {"weightsManifest",
       {{{"paths", {"w.bin"}},
         {"weights",
          {{{"name", "d/kernel"}, {"shape", {2, 2}}, {"dtype", "float32"},
            {"quantization", {{"dtype", "uint8"}, {"scale", 0.5}, {"min", -1.0}}}},
           {{"name", "d/bias"}, {"shape", {2}}, {"dtype", "float32"}, {"quantization", {{"dtype", "float16"}}}}}}}}}};
  write_file_atomic(dir / "model.json", model.dump());
  // kernel q = [0, 2, 4, 6] -> [-1, 0, 1, 2]; bias float16 1.0 = 0x3c00, -2.0 = 0xc000.
  std::string shard = {0, 2, 4, 6, 0x00, 0x3c, 0x00, static_cast<char>(0xc0)};
  write_file_atomic(dir / "w.bin", shard);
  TfjsModel m((dir / "model.json").string());
  torch::Tensor y = m.forward(torch::tensor({{1.0f, 1.0f}}));
  // [1, 1] @ [[-1, 0], [1, 2]] + [1, -2] = [0 + 1, 2 - 2]
  EXPECT_TRUE(torch::allclose(y, torch::tensor({{1.0f, 0.0f}}))) << y;

  model["weightsManifest"][0]["weights"][0]["quantization"]["dtype"] = "int4";
  write_file_atomic(dir / "model.json", model.dump());
  KD_EXPECT_ERROR(TfjsModel((dir / "model.json").string()), "unsupported quantization dtype \"int4\"");
}

TEST(TfjsModelFile, LoadModelNamesTfjsInUnknownFormat) {
  TempDir dir;
  write_file_atomic(dir / "model.onnx2", "x");
  KD_EXPECT_ERROR(load_model((dir / "model.onnx2").string()), "model.json (TF.js layers model)");
}

}  // namespace
}  // namespace kd::io
