// `kdistill run` with teachers made and trained by the real frameworks: PyTorch (an ONNX file and a
// TorchScript file with a dict output, tests/fixtures/make_digits_teachers.py) and TF.js in Node.js
// (a Functional model with a softmax head, tests/fixtures/make_tfjs_digits_teacher.js), all trained on
// the raw pixels of the same digits split. The teacher's test accuracy inside kdistill must be the one
// its own framework measured, and the distilled student must learn from it.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "cli/cli_util.h"
#include "data/python_helper.h"
#include "io/tfjs_test_util.h"
#include "kd/util/fs.h"
#include "test_util.h"

namespace kd::test {
namespace {

namespace fs = std::filesystem;

// The teachers, made once for all test processes (test_util.h's shared_fixture_dir).
fs::path teachers(std::string& why) {
  std::string source = std::string(KD_SOURCE_DIR) + "/tests/fixtures/";
  std::string scripts = read_file(source + "make_digits_teachers.py") + read_file(source + "make_tfjs_digits_teacher.js");
  return shared_fixture_dir("kd_digits_teachers_", scripts, "tfjs.json", [&source](const fs::path& making) {
    auto python = run_python("import runpy, sys\nsys.argv = ['make_digits_teachers.py', '" + making.string() +
                             "']\nrunpy.run_path('" + source + "make_digits_teachers.py', run_name='__main__')\n");
    if (python.status != 0) {
      return "make_digits_teachers.py failed (scripts/setup.sh installs python3-torch, python3-onnx): " + python.output;
    }
    if (std::string node = tfjs_unavailable(); !node.empty()) return node;
    auto tfjs = run_node("tests/fixtures/make_tfjs_digits_teacher.js", "'" + making.string() + "'", making / "node.log");
    if (tfjs.status != 0) return "make_tfjs_digits_teacher.js failed: " + tfjs.output;
    return std::string();
  }, why);
}

// The accuracy the producing framework measured on digits_test.csv.
double framework_accuracy(const fs::path& dir, const std::string& json_file, const std::string& model) {
  return nlohmann::json::parse(read_file(dir / json_file))["test_accuracy"][model].get<double>();
}

class InteropRun : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    dir_ = teachers(why);
    ASSERT_TRUE(why.empty()) << why;
  }

  // Runs a recipe whose teacher part is `teacher` (YAML lines under "teacher:"); metrics.json.
  nlohmann::json run(const std::string& name, const std::string& teacher, std::string* output = nullptr) {
    fs::path runs = runs_.path();
    std::string recipe = "task: classification\nseed: 0\n"
                         "data:\n  train: " + (dir_ / "digits_train.csv").string() +
                         "\n  test: " + (dir_ / "digits_test.csv").string() + "\n  target: label\n"
                         "teacher:\n" + teacher +
                         "student:\n  model: {arch: mlp, hidden: [16]}\n"
                         "distill:\n  epochs: 10\n  batch_size: 64\n  optimizer: {name: adam, lr: 0.01}\n"
                         "  losses: [{kind: kl, weight: 0.9, temperature: 4}, {kind: ce, weight: 0.1}]\n";
    fs::path path = runs / (name + ".yaml");
    write_file_atomic(path, recipe);
    auto result = run_kdistill("run " + path.string() + " --out " + (runs / name).string());
    EXPECT_EQ(result.status, 0) << result.output;
    if (output) *output = result.output;
    if (result.status != 0) return {};
    return nlohmann::json::parse(read_file(runs / name / "metrics.json"));
  }

  // The distilled student learned the task and follows its teacher.
  static void expect_student_learned(const nlohmann::json& m) {
    const auto& student = m["models"]["student"]["test"];
    EXPECT_GT(student["accuracy"].get<double>(), 0.85);
    EXPECT_GT(student["agreement_with_teacher"].get<double>(), 0.85);
    EXPECT_TRUE(std::isfinite(student["kl_to_teacher"].get<double>()));
  }

  fs::path dir_;   // the teachers (shared, read only)
  TempDir runs_;   // this test's runs
};

TEST_F(InteropRun, PytorchOnnxTeacher) {
  std::string output;
  auto m = run("onnx", "  path: " + (dir_ / "pytorch_mlp.onnx").string() + "\n  input: raw\n", &output);
  ASSERT_FALSE(m.is_null());
  EXPECT_NE(output.find("raw inputs (teacher.input: raw)"), std::string::npos) << output;
  // 450 test rows: the same predictions as PyTorch's give the same accuracy to the last digit.
  EXPECT_NEAR(m["models"]["teacher"]["test"]["accuracy"].get<double>(),
              framework_accuracy(dir_, "pytorch.json", "pytorch_mlp.onnx"), 1e-9);
  EXPECT_EQ(m["models"]["teacher"]["params"], 64 * 64 + 64 + 64 * 10 + 10);
  expect_student_learned(m);
}

TEST_F(InteropRun, PytorchTorchScriptTeacherWithADictOutput) {
  auto m = run("torchscript",
               "  path: " + (dir_ / "pytorch_cnn.pt").string() + "\n  output: logits\n  input: raw\n");
  ASSERT_FALSE(m.is_null());
  EXPECT_NEAR(m["models"]["teacher"]["test"]["accuracy"].get<double>(),
              framework_accuracy(dir_, "pytorch.json", "pytorch_cnn.pt"), 1e-9);
  expect_student_learned(m);
}

TEST_F(InteropRun, TfjsTeacherWithASoftmaxHead) {
  std::string output;
  fs::path model_json = dir_ / "tfjs_cnn/model.json";
  auto m = run("tfjs", "  path: " + model_json.string() + "\n  input: raw\n", &output);
  ASSERT_FALSE(m.is_null());
  // Its outputs are probabilities; kdistill distils from their logarithms.
  EXPECT_NE(output.find("outputs are probabilities"), std::string::npos) << output;
  // TF.js's float32 kernels and libtorch's may round differently: at most one of the 450 argmaxes may
  // differ on a near tie.
  EXPECT_NEAR(m["models"]["teacher"]["test"]["accuracy"].get<double>(),
              framework_accuracy(dir_, "tfjs.json", "tfjs_cnn/model.json"), 1.0 / 450 + 1e-9);
  expect_student_learned(m);
  // Its size on disk: model.json and its weight shard.
  EXPECT_EQ(m["models"]["teacher"]["bytes"].get<int64_t>(),
            static_cast<int64_t>(fs::file_size(model_json) + fs::file_size(dir_ / "tfjs_cnn/group1-shard1of1.bin")));
}

TEST_F(InteropRun, UnknownInputKindIsAnError) {
  fs::path path = runs_.path() / "bad.yaml";
  write_file_atomic(path, "task: classification\ndata:\n  train: " + (dir_ / "digits_train.csv").string() +
                              "\n  target: label\nteacher:\n  path: " + (dir_ / "pytorch_mlp.onnx").string() +
                              "\n  input: pixels\nstudent:\n  model: {arch: linear}\n");
  auto result = run_kdistill("run " + path.string() + " --out " + (runs_.path() / "bad").string());
  EXPECT_EQ(result.status, 2);
  EXPECT_NE(result.output.find("teacher.input: \"pixels\" is not an input kind, expected auto, raw or normalized"),
            std::string::npos)
      << result.output;
}

}  // namespace
}  // namespace kd::test
