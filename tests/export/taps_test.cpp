// Taps of kdistill's own ONNX and TF.js exports: a zoo network's layers keep their names in both
// formats, so a teacher exported by kdistill (or any graph with those values) has the same taps, with
// the numbers the zoo network computes (TF.js maps come back as [N, C, H, W]).
#include <gtest/gtest.h>

#include "kd/export/onnx_export.h"
#include "kd/export/tfjs_export.h"
#include "kd/io/onnx_model.h"
#include "kd/io/tfjs_model.h"
#include "kd/models/zoo.h"
#include "test_util.h"

namespace kd::exports {
namespace {

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

}  // namespace
}  // namespace kd::exports
