// OnnxModel against PyTorch and onnxruntime-independent references: the fixtures come from
// tests/fixtures/make_onnx_models.py, run at test time with /usr/bin/python3 (torch 1.13, onnx 1.12).
#include "kd/io/onnx_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "data/python_helper.h"
#include "kd/data/npy.h"
#include "kd/io/model_file.h"
#include "kd/util/fs.h"
#include "kd/util/shape.h"
#include "test_util.h"

namespace kd::io {
namespace {

namespace fs = std::filesystem;
using test::error_of;
using test::TempDir;

// The fixture folder, made once per test binary; empty with `reason` set when Python cannot make it.
const fs::path& fixtures(std::string& reason) {
  static TempDir dir;
  static std::string why;
  static bool made = false;
  if (!made) {
    made = true;
    if (!fs::exists("/usr/bin/python3")) {
      why = "/usr/bin/python3 is missing";
    } else if (!test::python_has("torch") || !test::python_has("onnx")) {
      why = "/usr/bin/python3 lacks torch or onnx (Debian python3-torch, python3-onnx)";
    } else {
      std::string script = std::string(KD_SOURCE_DIR) + "/tests/fixtures/make_onnx_models.py";
      auto result = test::run_python("import runpy, sys\nsys.argv = ['make_onnx_models.py', '" + dir.path().string() +
                                     "']\nrunpy.run_path('" + script + "', run_name='__main__')\n");
      if (result.status != 0) why = "FAILED: make_onnx_models.py: " + result.output;
    }
  }
  reason = why;
  static const fs::path none;
  return why.empty() ? dir.path() : none;
}

#define KD_ONNX_FIXTURES(dir)                                            \
  std::string reason_;                                                   \
  const fs::path& dir = fixtures(reason_);                               \
  if (reason_.rfind("FAILED", 0) == 0) FAIL() << reason_;                \
  if (!reason_.empty()) KD_PEER_MISSING(reason_)

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return 1e9;
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// Runs NAME.onnx on NAME.in{1,5}.npy and compares with NAME.out{1,5}.npy.
void expect_matches(const fs::path& dir, const std::string& name, const std::string& output = "") {
  OnnxModel model((dir / (name + ".onnx")).string(), output);
  for (int n : {1, 5}) {
    std::string suffix = std::to_string(n) + ".npy";
    torch::Tensor x = data::read_npy(dir / (name + ".in" + suffix));
    torch::Tensor expected = data::read_npy(dir / (name + ".out" + suffix));
    torch::Tensor actual = model.forward(x);
    double diff = max_diff(actual, expected);
    std::cout << "[ onnx     ] " << name << " batch " << n << ": max abs diff " << diff << "\n";
    EXPECT_LE(diff, 1e-4) << name << " batch " << n;
  }
}

TEST(OnnxImport, TorchExportedModelsMatchPyTorch) {
  KD_ONNX_FIXTURES(dir);
  expect_matches(dir, "mlp");     // opset 14: Gemm, LeakyRelu, Tanh
  expect_matches(dir, "cnn_bn");  // opset 13: Conv (BN folded), MaxPool, Pad, AveragePool, GELU, BatchNormalization, Shape...
  expect_matches(dir, "tuple", "logits");
}

// A BERT-style export (Hugging Face's layout: input_ids, attention_mask, token_type_ids): kdistill feeds
// its one input, the ids, to the three by name; the outputs equal PyTorch's and onnxruntime's to 1e-4,
// whatever the batch and text length.
TEST(OnnxImport, BertStyleExportMatchesPyTorchAndOnnxruntime) {
  KD_ONNX_FIXTURES(dir);
  expect_matches(dir, "bert");
  const fs::path node_dir = fs::path(KD_SOURCE_DIR) / "tests" / "node";
  if (std::system("node --version > /dev/null 2>&1") != 0) KD_PEER_MISSING("node is missing");
  if (!fs::exists(node_dir / "node_modules" / "onnxruntime-node")) {
    KD_PEER_MISSING("onnxruntime-node is not installed: run scripts/setup.sh");
  }
  OnnxModel model((dir / "bert.onnx").string());
  EXPECT_EQ(model.input_names(), (std::vector<std::string>{"input_ids", "attention_mask", "token_type_ids"}));
  TempDir work;
  for (int n : {1, 5}) {
    fs::path ids = dir / ("bert.in" + std::to_string(n) + ".npy"), out = work / "ort.npy";
    std::string command = "node '" + (node_dir / "run_onnx.js").string() + "' '" + (dir / "bert.onnx").string() +
                          "' '" + ids.string() + "' '" + out.string() + "' 0 > '" + (work / "node.log").string() + "' 2>&1";
    ASSERT_EQ(std::system(command.c_str()), 0) << read_file(work / "node.log");
    double diff = max_diff(model.forward(data::read_npy(ids)), data::read_npy(out));
    std::cout << "[ onnx     ] bert batch " << n << ": onnxruntime max abs diff " << diff << "\n";
    EXPECT_LE(diff, 1e-4) << "batch " << n;
  }
}

TEST(OnnxImport, HandBuiltGraphsMatchTorch) {
  KD_ONNX_FIXTURES(dir);
  expect_matches(dir, "ops17");
  expect_matches(dir, "ops11");          // attribute forms and Softmax's 2-d coercion before opset 13
  expect_matches(dir, "channels_last");  // declared [N, H, W, C], fed [N, C, H, W]
}

TEST(OnnxImport, OutputByIndexOrName) {
  KD_ONNX_FIXTURES(dir);
  std::string path = (dir / "tuple.onnx").string();
  torch::Tensor x = data::read_npy(dir / "tuple.in5.npy");
  torch::Tensor expected = data::read_npy(dir / "tuple.out5.npy");
  EXPECT_LE(max_diff(OnnxModel(path, "1").forward(x), expected), 1e-4);
  EXPECT_EQ(OnnxModel(path, "0").forward(x).sizes(), (std::vector<int64_t>{5, 10}));
  EXPECT_EQ(OnnxModel(path, "logits").output_names(), (std::vector<std::string>{"features", "logits"}));
  KD_EXPECT_ERROR(load_model(path),
                  "tuple.onnx: the graph has 2 outputs (features, logits); set teacher.output to the index or name "
                  "of the logits");
  KD_EXPECT_ERROR(OnnxModel(path, "probs"), "there is no output \"probs\"");
  KD_EXPECT_ERROR(OnnxModel(path, "2"), "the graph has 2 outputs");
}

TEST(OnnxImport, InputAdaptation) {
  KD_ONNX_FIXTURES(dir);
  // Declared [N, 12], fed [N, 3, 2, 2]: flattened.
  OnnxModel mlp((dir / "mlp.onnx").string());
  torch::Tensor x = data::read_npy(dir / "mlp.in5.npy");
  EXPECT_LE(max_diff(mlp.forward(x.reshape({5, 3, 2, 2})), data::read_npy(dir / "mlp.out5.npy")), 1e-4);
  // Declared [N, 3, 12, 12], fed [N, 432]: reshaped.
  OnnxModel cnn((dir / "cnn_bn.onnx").string());
  torch::Tensor images = data::read_npy(dir / "cnn_bn.in5.npy");
  EXPECT_LE(max_diff(cnn.forward(images.reshape({5, 432})), data::read_npy(dir / "cnn_bn.out5.npy")), 1e-4);
  // Double input is cast to the declared float.
  EXPECT_LE(max_diff(mlp.forward(x.to(torch::kDouble)), data::read_npy(dir / "mlp.out5.npy")), 1e-4);
  KD_EXPECT_ERROR(mlp.forward(torch::zeros({2, 7})),
                  "mlp.onnx: input \"x\" is declared [?, 12]; kdistill's input [2, 7] does not fit it");
}

TEST(OnnxImport, LoadModelAndSummary) {
  KD_ONNX_FIXTURES(dir);
  LoadedModel loaded = load_model((dir / "mlp.onnx").string());
  ASSERT_TRUE(loaded.model);
  EXPECT_EQ(loaded.model->kind(), "onnx");
  EXPECT_FALSE(loaded.has_info);
  EXPECT_TRUE(loaded.model->parameters().empty());
  EXPECT_EQ(loaded.model->state().size(), 6u);  // 3 x (weight, bias)

  // mlp 12 -> 16 -> 8 -> 4: params 12*16+16 + 16*8+8 + 8*4+4 = 380; MACs 12*16 + 16*8 + 8*4 = 352.
  models::ModelSummary mlp = loaded.model->summary({12});
  EXPECT_EQ(mlp.params, 380);
  EXPECT_EQ(mlp.macs, 352);
  EXPECT_EQ(mlp.layers.size(), 5u);

  // cnn_bn at [3, 12, 12]: conv1 3*3*3*8 * 12*12 = 31104; grouped conv2 (8/4)*3*3 * 12*6*6 = 7776;
  // fc 96*16 = 1536; head 16*5 = 80.
  OnnxModel cnn((dir / "cnn_bn.onnx").string());
  models::ModelSummary summary = cnn.summary({3, 12, 12});
  EXPECT_EQ(summary.macs, 31104 + 7776 + 1536 + 80);
  bool found = false;
  for (const auto& line : summary.layers) found = found || (line.find("Conv") != std::string::npos && line.find("[8, 12, 12]") != std::string::npos);
  EXPECT_TRUE(found) << "no Conv row with output [8, 12, 12]";
}

TEST(OnnxImport, BadFilesAreOneLineErrorsNamingTheFile) {
  KD_ONNX_FIXTURES(dir);
  TempDir tmp;
  std::string bytes = read_file(dir / "cnn_bn.onnx");
  write_file_atomic(tmp / "truncated.onnx", bytes.substr(0, bytes.size() / 2));
  std::string random(4096, '\0');
  std::mt19937 rng(7);
  for (auto& c : random) c = static_cast<char>(rng());
  write_file_atomic(tmp / "random.onnx", random);
  write_file_atomic(tmp / "empty.onnx", "");

  for (const char* name : {"truncated.onnx", "random.onnx", "empty.onnx"}) {
    std::string path = (tmp / name).string();
    std::string message = error_of([&] { OnnxModel model(path); });
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
  std::string unsupported = (dir / "unsupported_op.onnx").string();
  KD_EXPECT_ERROR(OnnxModel model(unsupported),
                  unsupported + ": node \"hs_1\": operator HardSwish is not supported (supported: Abs, Add, ");
  std::string missing = (dir / "missing_initializer.onnx").string();
  std::string message = error_of([&] { OnnxModel model(missing); });
  EXPECT_EQ(message.rfind(missing + ": ", 0), 0u) << message;
  EXPECT_NE(message.find("W"), std::string::npos) << message;
  std::string shapes = (dir / "bad_shapes.onnx").string();
  message = error_of([&] { OnnxModel model(shapes); });
  EXPECT_EQ(message.rfind(shapes + ": node \"mm\" (MatMul)", 0), 0u) << message;
  EXPECT_NE(message.find("declared input [1, 4]"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  KD_EXPECT_ERROR(load_model((tmp / "absent.onnx").string()), "absent.onnx");
  // A file past protobuf's 2 GiB is refused by its size, before it is read (a sparse file here).
  std::string big = (tmp / "big.onnx").string();
  write_file_atomic(big, bytes);
  std::filesystem::resize_file(big, uint64_t{1} << 31);
  KD_EXPECT_ERROR(OnnxModel model(big), big + ": 2147483648 bytes, more than a protobuf file can hold (2 GiB)");
}

// A tensor's shape is checked before anything is allocated for it: negative sizes, and more elements
// than any real file holds (or, beside a 0, sizes that would), are refused by name.
TEST(OnnxImport, HugeOrNegativeShapesAreRefusedBeforeAllocating) {
  TempDir tmp;
  for (const std::string dims : {"[2**20, 2**21]", "[4, -3]", "[0, 2**62]"}) {
    std::string path = (tmp / "w.onnx").string();
    auto made = test::run_python(
        "import onnx\nfrom onnx import helper, TensorProto\n"
        "dims = " + dims + "\n"
        "w = TensorProto(name='w', data_type=TensorProto.FLOAT, raw_data=bytes(0 if 0 in dims else 4))\n"
        "w.dims.extend(dims)\n"
        "graph = helper.make_graph([helper.make_node('Add', ['x', 'w'], ['y'])], 'g',\n"
        "    [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 4])],\n"
        "    [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 4])], [w])\n"
        "onnx.save(helper.make_model(graph), '" + path + "')\n");
    ASSERT_EQ(made.status, 0) << made.output;
    std::string message = error_of([&] { OnnxModel model(path); });
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
    EXPECT_NE(message.find(dims == "[4, -3]"       ? "tensor w: shape [4, -3] has a negative size"
                           : dims == "[0, 2**62]" ? "tensor w: shape [0, 4611686018427387904] has sizes that multiply "
                                                    "past 2^40 elements"  // an empty tensor, its strides past int64
                                                  : "tensor w: shape [1048576, 2097152] has more than 2^40 elements"),
              std::string::npos) << message;
  }
}

// Graphs no exporter writes but a damaged or hand-edited file can hold: refused by name, not a crash
// (each was a crash: a division by zero for "same" padding with stride 0, a read past an empty list
// of outputs).
TEST(OnnxImport, ZeroStridesAndNoOutputsAreRefused) {
  TempDir tmp;
  std::string conv = (tmp / "conv.onnx").string();
  auto made = test::run_python(
      "import onnx\nfrom onnx import helper, TensorProto\n"
      "w = helper.make_tensor('w', TensorProto.FLOAT, [1, 1, 3, 3], [0.1] * 9)\n"
      "node = helper.make_node('Conv', ['x', 'w'], ['y'], auto_pad='SAME_UPPER', strides=[0, 1])\n"
      "graph = helper.make_graph([node], 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 1, 4, 4])],\n"
      "    [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 1, 4, 4])], [w])\n"
      "onnx.save(helper.make_model(graph), '" + conv + "')\n"
      "graph = helper.make_graph([node], 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 1, 4, 4])],\n"
      "    [], [w])\n"
      "onnx.save(helper.make_model(graph), '" + (tmp / "none.onnx").string() + "')\n");
  ASSERT_EQ(made.status, 0) << made.output;
  KD_EXPECT_ERROR(OnnxModel model(conv), "kernel_shape [3, 3], strides [0, 1] and dilations [1, 1]: each must be 1 or more");
  std::string none = (tmp / "none.onnx").string();
  KD_EXPECT_ERROR(OnnxModel model(none), none + ": the graph has no outputs; a teacher needs its logits as one");
}

// ONNX's backend node tests (Debian's libonnx-testdata): every test whose operators the importer
// claims runs, and matches the reference outputs.
TEST(OnnxImport, BackendNodeTests) {
  const fs::path root = "/usr/share/libonnx-testdata/data/node";
  if (!fs::exists(root)) KD_PEER_MISSING(root << " is missing (Debian package libonnx-testdata)");
  // Tests of forms kdistill's teachers do not need, and why.
  const std::vector<std::pair<std::string, std::string>> excluded = {
      {"test_training_dropout", "training-mode Dropout draws random masks; teachers run in inference mode"},
      {"test_batchnorm_epsilon_training_mode", "training-mode BatchNormalization; teachers run in inference mode"},
      {"test_batchnorm_example_training_mode", "training-mode BatchNormalization; teachers run in inference mode"},
  };
  int passed = 0, unsupported = 0;
  std::vector<std::string> failures;
  std::vector<fs::path> tests;
  for (const auto& entry : fs::directory_iterator(root)) tests.push_back(entry.path());
  std::sort(tests.begin(), tests.end());
  for (const auto& test : tests) {
    std::string name = test.filename().string();
    if (!fs::exists(test / "model.onnx") || !fs::exists(test / "test_data_set_0")) continue;
    if (std::any_of(excluded.begin(), excluded.end(), [&](const auto& e) { return name.rfind(e.first, 0) == 0; })) continue;
    try {
      auto model = std::make_unique<OnnxModel>((test / "model.onnx").string(), "0");
      std::vector<torch::Tensor> inputs;
      for (size_t i = 0; i < model->input_names().size(); ++i) {
        inputs.push_back(read_onnx_tensor((test / "test_data_set_0" / ("input_" + std::to_string(i) + ".pb")).string()));
      }
      auto outputs = model->run(inputs);
      bool ok = true;
      std::string why;
      for (size_t i = 0; i < outputs.size() && ok; ++i) {
        fs::path file = test / "test_data_set_0" / ("output_" + std::to_string(i) + ".pb");
        if (!fs::exists(file)) continue;
        torch::Tensor expected = read_onnx_tensor(file.string());
        torch::Tensor actual = outputs[i];
        if (actual.sizes() != expected.sizes()) {
          ok = false;
          why = "output " + std::to_string(i) + " shape " + shape_text(actual.sizes()) + ", expected " + shape_text(expected.sizes());
        } else if (expected.is_floating_point()) {
          auto a = actual.to(torch::kDouble), b = expected.to(torch::kDouble);
          ok = torch::allclose(a, b, 1e-3, 1e-5, /*equal_nan=*/true);
          if (!ok) why = "output " + std::to_string(i) + " max abs diff " + std::to_string((a - b).abs().max().item<double>());
        } else {
          ok = torch::equal(actual.to(expected.scalar_type()), expected);
          if (!ok) why = "output " + std::to_string(i) + " differs";
        }
      }
      if (ok) {
        ++passed;
      } else {
        failures.push_back(name + ": " + why);
      }
    } catch (const Error& e) {
      // Operators outside the table, element types torch lacks (uint16/32/64, strings).
      std::string what = e.what();
      if (what.find("is not supported") != std::string::npos) {
        ++unsupported;
      } else {
        failures.push_back(name + ": " + what);
      }
    } catch (const std::exception& e) {
      failures.push_back(name + ": " + first_line(e));
    }
  }
  std::cout << "[ onnx     ] backend node tests: " << passed << " passed, " << failures.size() << " failed, "
            << unsupported << " use operators outside the table\n";
  std::string list;
  for (const auto& f : failures) list += "\n  " + f;
  EXPECT_TRUE(failures.empty()) << failures.size() << " backend tests fail:" << list;
  EXPECT_GE(passed, 297);  // with libonnx-testdata 1.12
}

}  // namespace
}  // namespace kd::io
