// Taps of kdistill's own ONNX and TF.js exports: a zoo network's layers keep their names in both
// formats, so a teacher exported by kdistill (or any graph with those values) has the same taps, with
// the numbers the zoo network computes (TF.js maps come back as [N, C, H, W]).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/python_helper.h"
#include "kd/data/npy.h"
#include "kd/export/onnx_export.h"
#include "kd/export/tfjs_export.h"
#include "kd/io/onnx_model.h"
#include "kd/io/tfjs_model.h"
#include "kd/models/zoo.h"
#include "kd/util/fs.h"
#include "test_util.h"

namespace kd::exports {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

TEST(ExportedTaps, OnnxValuesAndTfjsLayersAreTheZooTaps) {
  TempDir dir;
  torch::manual_seed(11);
  auto spec = models::ZooSpec().arch("cnn").channels({4, 6}).batch_norm(true).hidden({8});
  auto model = models::build_zoo_model(spec, {1, 10, 10}, 3);
  torch::Tensor x = torch::randn({5, 1, 10, 10});
  model->set_training(true);
  model->forward(x * 2 + 1);  // batch-norm statistics other than the initial ones
  model->set_training(false);
  io::ModelInfo info;
  info.task = Task::classification;
  info.input_shape = {1, 10, 10};
  info.outputs = 3;
  info.class_names = {"a", "b", "c"};
  info.spec = models::to_json(spec);
  std::string onnx_path = (dir.path() / "m.onnx").string(), tfjs_dir = (dir.path() / "m.tfjs").string();
  export_onnx(*model, info, onnx_path);
  export_tfjs(*model, info, tfjs_dir);
  io::OnnxModel onnx(onnx_path);
  io::TfjsModel tfjs(tfjs_dir + "/model.json");

  std::vector<std::string> taps = {"conv1_act", "conv2_pool", "gap", "fc1_act"};
  auto expected = model->forward_taps(x, taps);
  for (models::Model* loaded : {static_cast<models::Model*>(&onnx), static_cast<models::Model*>(&tfjs)}) {
    SCOPED_TRACE(loaded->kind());
    for (const auto& tap : taps) {
      auto names = loaded->tap_names();
      EXPECT_NE(std::find(names.begin(), names.end(), tap), names.end()) << tap;
    }
    auto actual = loaded->forward_taps(x, taps);
    EXPECT_LT((actual.output - expected.output).abs().max().item<double>(), 1e-4);
    for (size_t i = 0; i < taps.size(); ++i) {
      ASSERT_EQ(actual.taps[i].sizes(), expected.taps[i].sizes()) << taps[i];
      EXPECT_GT(expected.taps[i].abs().max().item<double>(), 1e-3) << taps[i];
      EXPECT_LT((actual.taps[i] - expected.taps[i]).abs().max().item<double>(), 1e-4) << taps[i];
    }
    KD_EXPECT_ERROR(loaded->forward_taps(x, {"conv9"}), "tap \"conv9\": the " + loaded->kind() + " model has no such tap");
  }
}

// A graph exported by PyTorch (torch.onnx.export): each intermediate value, by its name in the graph,
// equals what onnxruntime computes there once the value is added as an output of the graph.
TEST(ExportedTaps, PytorchOnnxValuesEqualOnnxruntimes) {
  if (!test::python_has("onnx")) KD_PEER_MISSING("/usr/bin/python3 cannot import onnx");
  const fs::path node_dir = fs::path(KD_SOURCE_DIR) / "tests" / "node";
  if (std::system("node --version > /dev/null 2>&1") != 0) KD_PEER_MISSING("node is missing");
  if (!fs::exists(node_dir / "node_modules" / "onnxruntime-node")) KD_PEER_MISSING("onnxruntime-node is not installed");
  TempDir dir;
  auto python = test::run_python(R"(
import json, numpy, onnx, torch
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                          torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                          torch.nn.Linear(6 * 2 * 2, 3)).eval()
x = torch.randn(5, 1, 8, 8)
torch.onnx.export(net, x, ")" + (dir.path() / "net.onnx").string() + R"(", input_names=["input"],
                  output_names=["logits"], dynamic_axes={"input": {0: "N"}}, opset_version=13)
numpy.save(")" + (dir.path() / "x.npy").string() + R"(", x.numpy())
model = onnx.load(")" + (dir.path() / "net.onnx").string() + R"(")
values = [out for node in model.graph.node if node.op_type in ("Relu", "MaxPool", "Conv", "Flatten") for out in node.output]
for name in values:
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
onnx.save(model, ")" + (dir.path() / "with_values.onnx").string() + R"(")
print(json.dumps(values))
)");
  ASSERT_EQ(python.status, 0) << python.output;
  std::vector<std::string> values = nlohmann::json::parse(python.output.substr(python.output.rfind('[')));
  ASSERT_GE(values.size(), 5u);
  std::string command = "node '" + (node_dir / "run_onnx_outputs.js").string() + "' '" +
                        (dir.path() / "with_values.onnx").string() + "' '" + (dir.path() / "x.npy").string() + "' '" +
                        (dir.path() / "ort").string() + "' > '" + (dir.path() / "node.log").string() + "' 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << read_file(dir.path() / "node.log");
  std::vector<std::string> names = nlohmann::json::parse(read_file(dir.path() / "ort/names.json"));
  io::OnnxModel onnx((dir.path() / "net.onnx").string());
  auto tapped = onnx.forward_taps(data::read_npy(dir.path() / "x.npy"), values);
  for (size_t i = 0; i < values.size(); ++i) {
    auto at = std::find(names.begin(), names.end(), values[i]) - names.begin();
    torch::Tensor expected = data::read_npy(dir.path() / "ort" / (std::to_string(at) + ".npy"));
    ASSERT_EQ(tapped.taps[i].sizes(), expected.sizes()) << values[i];
    EXPECT_LT((tapped.taps[i] - expected).abs().max().item<double>(), 1e-4) << values[i];
  }
}

}  // namespace
}  // namespace kd::exports
