// Every path that runs a teacher from another tool gives that tool's own outputs: `run`'s teacher pass,
// `auto`'s shared cache, `eval`, `predict` and `inspect`. The teachers are made by PyTorch (scripted and
// traced MLPs and CNNs, with nn.Flatten and with view; an ONNX export; tests/fixtures/make_pytorch_teachers.py)
// and by TF.js (a Sequential Keras CNN declared with inputShape [28, 28, 1];
// tests/fixtures/make_tfjs_fashion_teacher.js), all trained on Fashion-MNIST pixels in [0, 1]. The
// recipes keep the default data.normalize (standard) and say nothing of teacher.input: kdistill must
// find by itself that these files take raw pixels. 700 test rows: no teacher batch size divides them.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/cli_util.h"
#include "data/python_helper.h"
#include "io/tfjs_test_util.h"
#include "kd/data/npy.h"
#include "kd/util/fs.h"
#include "test_util.h"

namespace kd::test {
namespace {

namespace fs = std::filesystem;

fs::path teachers(std::string& why) {
  std::string source = std::string(KD_SOURCE_DIR) + "/tests/fixtures/";
  std::string scripts = read_file(source + "make_pytorch_teachers.py") + read_file(source + "make_tfjs_fashion_teacher.js");
  return shared_fixture_dir("kd_fashion_teachers_", scripts, "tfjs_fashion.json", [&source](const fs::path& making) {
    auto python = run_python("import runpy, sys\nsys.argv = ['make_pytorch_teachers.py', '" + making.string() +
                             "']\nrunpy.run_path('" + source + "make_pytorch_teachers.py', run_name='__main__')\n");
    if (python.status != 0) {
      return "make_pytorch_teachers.py failed (scripts/setup.sh installs python3-torch, python3-onnx and "
             "dataset-fashion-mnist): " + python.output;
    }
    if (std::string node = tfjs_unavailable(); !node.empty()) return node;
    auto tfjs = run_node("tests/fixtures/make_tfjs_fashion_teacher.js", "'" + making.string() + "'", making / "node.log");
    if (tfjs.status != 0) return "make_tfjs_fashion_teacher.js failed: " + tfjs.output;
    return std::string();
  }, why);
}

class TeacherPaths : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    dir_ = teachers(why);
    ASSERT_TRUE(why.empty()) << why;
    pytorch_ = nlohmann::json::parse(read_file(dir_ / "pytorch.json"));
  }

  // A recipe on the fixture's images with `teacher` as the teacher file; its path.
  fs::path recipe(const std::string& name, const std::string& teacher) {
    std::string text = "task: classification\nseed: 0\ndata:\n  format: idx\n"
                       "  train: {images: " + (dir_ / "train-images-idx3-ubyte.gz").string() +
                       ", labels: " + (dir_ / "train-labels-idx1-ubyte.gz").string() + "}\n"
                       "  test: {images: " + (dir_ / "test-images-idx3-ubyte.gz").string() +
                       ", labels: " + (dir_ / "test-labels-idx1-ubyte.gz").string() + "}\n"
                       "teacher:\n  path: " + (dir_ / teacher).string() + "\n"
                       "student:\n  model: {arch: mlp, hidden: [16]}\n"
                       "distill:\n  epochs: 1\n  batch_size: 64\n  baseline: false\n";
    fs::path path = runs_.path() / (name + ".yaml");
    write_file_atomic(path, text);
    return path;
  }

  // `kdistill run` of that recipe: metrics.json; the log in `log`.
  nlohmann::json run(const std::string& name, const std::string& teacher, std::string& log) {
    auto result = run_kdistill("run " + recipe(name, teacher).string() + " --out " + (runs_.path() / name).string());
    EXPECT_EQ(result.status, 0) << result.output;
    log = result.output;
    if (result.status != 0) return {};
    return nlohmann::json::parse(read_file(runs_.path() / name / "metrics.json"));
  }

  // `kdistill eval` of `teacher` on that recipe's test rows: the metrics.
  nlohmann::json eval(const std::string& name, const std::string& teacher) {
    fs::path json = runs_.path() / (name + ".eval.json");
    auto result = run_kdistill("eval " + (dir_ / teacher).string() + " --data " + recipe(name, teacher).string() +
                               " --json " + json.string());
    EXPECT_EQ(result.status, 0) << result.output;
    if (result.status != 0) return {};
    return nlohmann::json::parse(read_file(json))["metrics"];
  }

  // `kdistill predict` of `teacher` on the raw test images (uint8 [700, 1, 28, 28]).
  torch::Tensor predict(const std::string& teacher, const std::string& flags = "") {
    fs::path out = runs_.path() / (fs::path(teacher).filename().string() + std::to_string(flags.size()) + ".predicted.npy");
    auto result = run_kdistill("predict " + (dir_ / teacher).string() + " --input " +
                               (dir_ / "test_images.npy").string() + " --output " + out.string() + " " + flags);
    EXPECT_EQ(result.status, 0) << result.output;
    return result.status == 0 ? data::read_npy(out) : torch::Tensor();
  }

  static void expect_same_outputs(const torch::Tensor& ours, const torch::Tensor& theirs, const std::string& what) {
    ASSERT_TRUE(ours.defined()) << what;
    ASSERT_EQ(ours.sizes(), theirs.sizes()) << what;
    EXPECT_TRUE(torch::allclose(ours, theirs, 1e-4, 1e-4))
        << what << ": largest difference " << (ours - theirs).abs().max().item<double>();
  }

  fs::path dir_;  // the teachers (shared, read only)
  TempDir runs_;
  nlohmann::json pytorch_;
};

class PytorchTeacher : public TeacherPaths, public ::testing::WithParamInterface<std::string> {};

TEST_P(PytorchTeacher, EveryPathGivesPytorchsOwnOutputs) {
  const std::string teacher = GetParam();
  const torch::Tensor logits = data::read_npy(dir_ / (teacher + ".logits.npy"));
  const double accuracy = pytorch_["test_accuracy"][teacher].get<double>();

  std::string log;
  auto m = run("run", teacher, log);
  ASSERT_FALSE(m.is_null());
  // Trained on [0, 1] pixels: fed raw, decided from the evidence that the log and metrics.json show.
  EXPECT_NE(log.find("gets raw inputs (teacher.input: auto, NLL on 1000 labelled training rows"), std::string::npos)
      << log;
  EXPECT_EQ(m["teacher_input"]["fed"], "raw") << m["teacher_input"].dump();
  EXPECT_LT(m["teacher_input"]["sample_nll"]["raw"].get<double>(),
            m["teacher_input"]["sample_nll"]["normalized"].get<double>());
  expect_same_outputs(data::read_npy(runs_.path() / "run/test_outputs/teacher.npy"), logits, teacher + " in run");
  const auto& metrics = m["models"]["teacher"];
  EXPECT_NEAR(metrics["test"]["accuracy"].get<double>(), accuracy, 1e-9);
  EXPECT_EQ(metrics["params"], pytorch_["params"][teacher]);

  auto evaluated = eval("eval", teacher);
  ASSERT_FALSE(evaluated.is_null());
  EXPECT_NEAR(evaluated["test"]["accuracy"].get<double>(), accuracy, 1e-9);
  EXPECT_NEAR(evaluated["test"]["nll"].get<double>(), metrics["test"]["nll"].get<double>(), 1e-6);

  expect_same_outputs(predict(teacher), logits, teacher + " in predict");

  // ONNX declares its input; TorchScript does not store one.
  std::string shape = fs::path(teacher).extension() == ".onnx" ? "" : "--input-shape 1,28,28 ";
  auto inspected = run_kdistill("inspect " + shape + (dir_ / teacher).string());
  ASSERT_EQ(inspected.status, 0) << inspected.output;
  EXPECT_NE(inspected.output.find("params        " + pytorch_["params"][teacher].dump() + "\n"), std::string::npos)
      << inspected.output;
}

INSTANTIATE_TEST_SUITE_P(MadeByPytorch, PytorchTeacher,
                         ::testing::Values("mlp_scripted.pt", "mlp_traced.pt", "cnn_scripted.pt", "cnn_traced.pt",
                                           "mlp.onnx"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

TEST_F(TeacherPaths, AutoSearchesWithThePytorchTeachersOwnOutputs) {
  const std::string teacher = "mlp_scripted.pt";
  auto result = run_kdistill("auto " + recipe("auto", teacher).string() + " --budget 5m --trials 2 --out " +
                             (runs_.path() / "auto").string());
  ASSERT_EQ(result.status, 0) << result.output;
  auto m = nlohmann::json::parse(read_file(runs_.path() / "auto/metrics.json"));
  EXPECT_EQ(m["teacher_input"]["fed"], "raw");
  expect_same_outputs(data::read_npy(runs_.path() / "auto/test_outputs/teacher.npy"),
                      data::read_npy(dir_ / (teacher + ".logits.npy")), "auto's final run");
  EXPECT_NEAR(m["models"]["teacher"]["test"]["accuracy"].get<double>(),
              pytorch_["test_accuracy"][teacher].get<double>(), 1e-9);
}

TEST_F(TeacherPaths, KerasSequentialCnnFromTfjs) {
  const std::string teacher = "tfjs_fashion_cnn/model.json";
  const double accuracy =
      nlohmann::json::parse(read_file(dir_ / "tfjs_fashion.json"))["test_accuracy"][teacher].get<double>();
  const torch::Tensor probabilities = data::read_npy(dir_ / "tfjs_fashion_cnn.probabilities.npy");

  std::string log;
  auto m = run("tfjs", teacher, log);
  ASSERT_FALSE(m.is_null());
  EXPECT_NE(log.find("gets raw inputs; its outputs are probabilities, their logarithms are the logits "
                     "(teacher.input: auto"),
            std::string::npos)
      << log;
  // TF.js's float32 kernels and libtorch's may round differently: one argmax of 700 may differ on a near tie.
  EXPECT_NEAR(m["models"]["teacher"]["test"]["accuracy"].get<double>(), accuracy, 1.0 / 700 + 1e-9);
  expect_same_outputs(torch::softmax(data::read_npy(runs_.path() / "tfjs/test_outputs/teacher.npy"), 1), probabilities,
                      "the TF.js teacher in run");
  EXPECT_NE(read_file(runs_.path() / "tfjs/report.html")
                .find("The teacher file was fed raw inputs and its outputs read as probabilities (teacher.input: auto, "
                      "NLL on 1000 labelled training rows"),
            std::string::npos);

  auto evaluated = eval("tfjs-eval", teacher);
  ASSERT_FALSE(evaluated.is_null());
  EXPECT_NEAR(evaluated["test"]["accuracy"].get<double>(), m["models"]["teacher"]["test"]["accuracy"].get<double>(),
              1e-9);

  // Its outputs are probabilities already: predict writes them, with or without --softmax.
  expect_same_outputs(predict(teacher), probabilities, "predict");
  expect_same_outputs(predict(teacher, "--softmax"), probabilities, "predict --softmax");

  // The first layer's batch_input_shape [null, 28, 28, 1] is the input shape: no --input-shape needed.
  auto inspected = run_kdistill("inspect " + (dir_ / teacher).string());
  ASSERT_EQ(inspected.status, 0) << inspected.output;
  EXPECT_NE(inspected.output.find("input         [1, 28, 28] per example\n"), std::string::npos) << inspected.output;
  EXPECT_NE(inspected.output.find("params        14410\n"), std::string::npos) << inspected.output;
}

}  // namespace
}  // namespace kd::test
