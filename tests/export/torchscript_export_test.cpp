#include "kd/export/torchscript_export.h"

#include <gtest/gtest.h>
#include <torch/script.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "kd/models/torchscript_model.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "test_util.h"

namespace kd::exports {
namespace {

using namespace kd::io;  // model files, ModelInfo

namespace fs = std::filesystem;
using models::ZooSpec;

using test::batch_shape;
using test::error_of;
using test::TempDir;

struct ExportCase {
  std::string label;
  ZooSpec spec;
  std::vector<int64_t> shape;
  int64_t outputs;
};

std::vector<ExportCase> cases() {
  return {
      {"mlp", ZooSpec().arch("mlp").hidden({32, 16}).activation("tanh"), {20}, 3},
      {"mlp_bn_dropout",
       ZooSpec().arch("mlp").hidden({24}).batch_norm(true).dropout(0.3).activation("gelu"),
       {1, 6, 6},
       4},
      {"cnn", ZooSpec().arch("cnn").channels({4, 8}).activation("leaky_relu"), {3, 12, 12}, 5},
      {"cnn_bn_avg_head",
       ZooSpec().arch("cnn").channels({6}).batch_norm(true).pool("avg").kernel(5).hidden({10}).activation(
           "silu"),
       {64},
       10},
      {"vgg", ZooSpec().arch("vgg").channels({4, 8}).batch_norm(true), {3, 12, 12}, 5},
      {"resnet8", ZooSpec().arch("resnet").depth(8).width(4), {2, 10, 10}, 3},
      {"linear", ZooSpec().arch("linear").dropout(0.1), {1, 5, 5}, 2},
      {"textcnn", ZooSpec().arch("textcnn").vocab(50).pad_id(0).embedding(8).channels({12, 6}).hidden({5}).dropout(0.2),
       {11}, 4},
      {"transformer_pre_mean",
       ZooSpec().arch("transformer").vocab(40).pad_id(0).embedding(16).layers(2).heads(4).ff(24).dropout(0.1).activation(
           "gelu"),
       {9}, 3},
      {"transformer_post_first",
       ZooSpec().arch("transformer").vocab(40).pad_id(3).embedding(8).layers(1).heads(2).norm("post").pooling("first")
           .hidden({6}),
       {7}, 2},
      {"bigru_mean", ZooSpec().arch("bigru").vocab(30).pad_id(2).embedding(6).channels({5, 4}).dropout(0.1), {8}, 3},
      {"bigru_max", ZooSpec().arch("bigru").vocab(30).pad_id(0).embedding(4).channels({6}).pooling("max").hidden({4}),
       {6}, 2},
  };
}

// Inputs for a case: token ids with a padded tail for text families (as data.format: text gives them,
// float32), random numbers otherwise.
torch::Tensor inputs_for(const ExportCase& c, int64_t rows) {
  if (c.spec.vocab() == 0) return torch::randn(batch_shape(rows, c.shape));
  torch::Tensor ids = torch::randint(1, c.spec.vocab(), batch_shape(rows, c.shape)).to(torch::kFloat);
  for (int64_t r = 0; r < rows; ++r) ids[r].slice(0, 1 + r % (c.shape[0] - 1)).fill_(c.spec.pad_id());
  return ids;
}

// A model whose BN statistics are no longer the initial ones.
models::ModelPtr trained_model(const ExportCase& c) {
  torch::manual_seed(3);
  auto model = models::build_zoo_model(c.spec, c.shape, c.outputs);
  model->set_training(true);
  model->forward(c.spec.vocab() > 0 ? inputs_for(c, 8) : torch::randn(batch_shape(8, c.shape)) * 2 + 0.5);
  model->set_training(false);
  return model;
}

void save_tensor(const torch::Tensor& tensor, const fs::path& path) {
  std::vector<char> bytes = torch::pickle_save(tensor);
  write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

torch::Tensor load_tensor(const fs::path& path) {
  std::string bytes = read_file(path);
  return torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end())).toTensor();
}

TEST(TorchScriptExport, CppLoadMatchesZooModel) {
  TempDir dir;
  for (const auto& c : cases()) {
    auto model = trained_model(c);
    fs::path path = dir.path() / (c.label + ".pt");
    export_torchscript(*model, c.spec, c.shape, c.outputs, path);

    torch::jit::ExtraFilesMap extra{{kTorchScriptSpecFile, ""}};
    torch::jit::Module loaded = torch::jit::load(path.string(), torch::kCPU, extra);
    EXPECT_EQ(nlohmann::json::parse(extra[kTorchScriptSpecFile]), models::to_json(c.spec)) << c.label;
    EXPECT_FALSE(loaded.is_training()) << c.label;

    torch::Tensor x = inputs_for(c, 5);
    torch::Tensor expected = model->forward(x);
    torch::Tensor actual = loaded.forward({x}).toTensor();
    ASSERT_EQ(actual.sizes(), expected.sizes()) << c.label;
    EXPECT_LT((actual - expected).abs().max().item<double>(), 1e-5) << c.label;
    // kdistill's own inference of the file (eval mode, no grad) runs on channels-last images, where
    // convolutions are faster: the values of the plain layout.
    auto teacher = models::load_torchscript(path.string());
    {
      torch::NoGradGuard no_grad;
      torch::Tensor fast = teacher->forward(x);
      ASSERT_EQ(fast.sizes(), actual.sizes()) << c.label;
      EXPECT_LT((fast - actual).abs().max().item<double>(), 1e-5) << c.label;
    }

    // Parameters stay parameters (trainable), statistics are buffers.
    int64_t params = 0;
    for (const auto& p : loaded.parameters()) params += p.numel();
    EXPECT_EQ(params, models::count_params(*model)) << c.label;
  }
}

// Inference runs an inference copy of the file's module (aten::linear rewritten to kd::linear) that
// holds the same tensors: weights changed in place (an optimizer step) and load_state reach it, with no
// second copy of the weights.
TEST(TorchScriptExport, InferenceCopyFollowsTheWeights) {
  TempDir dir;
  ExportCase c{"mlp", ZooSpec().arch("mlp").hidden({300}), {200}, 3};
  auto model = trained_model(c);
  fs::path path = dir.path() / "mlp.pt";
  export_torchscript(*model, c.spec, c.shape, c.outputs, path);
  auto teacher = models::load_torchscript(path.string());
  teacher->set_training(false);
  torch::Tensor x = torch::randn({64, 200});
  auto infer = [&] {
    torch::NoGradGuard no_grad;
    return teacher->forward(x);
  };
  auto reference = [&] { return teacher->forward(x).detach(); };  // grad mode: the module itself
  torch::Tensor original = reference();
  EXPECT_LT((infer() - original).abs().max().item<double>(), 1e-5);
  models::NamedTensors saved;
  for (const auto& [name, tensor] : teacher->state()) saved.emplace_back(name, tensor.clone());
  {
    torch::NoGradGuard no_grad;
    for (auto& p : teacher->parameters()) p.mul_(-0.5).add_(0.01);
  }
  torch::Tensor changed = reference();
  EXPECT_GT((changed - original).abs().max().item<double>(), 1e-3);
  EXPECT_LT((infer() - changed).abs().max().item<double>(), 1e-5);
  teacher->load_state(saved);
  EXPECT_LT((infer() - original).abs().max().item<double>(), 1e-5);
}

// A model whose view() the channels-last layout does not allow runs in the plain layout instead:
// the same values, no error, on the first call and after.
TEST(TorchScriptExport, InferenceFallsBackToThePlainLayoutWhereAViewNeedsIt) {
  torch::manual_seed(5);
  torch::jit::Module module("ConvThenView");
  module.register_attribute("training", c10::BoolType::get(), true);  // as a scripted nn.Module has
  module.register_parameter("w", torch::randn({4, 3, 3, 3}), false);
  module.define(R"(
def forward(self, x):
    y = torch.conv2d(x, self.w, None, [1, 1], [1, 1])
    return y.view(y.size(0), -1)
)");
  module.eval();
  ASSERT_FALSE(module.is_training());  // eval mode without grad: kdistill's inference path
  torch::Tensor x = torch::randn({2, 3, 5, 5});
  EXPECT_THROW(module.forward({x.contiguous(torch::MemoryFormat::ChannelsLast)}),
               std::exception);  // the layout's limit
  torch::Tensor expected = module.forward({x}).toTensor();
  models::TorchScriptModel model(module, "conv_then_view.pt", "");
  torch::NoGradGuard no_grad;
  for (int call = 0; call < 2; ++call) {
    torch::Tensor y = model.forward(x);
    ASSERT_EQ(y.sizes(), expected.sizes());
    EXPECT_LT((y - expected).abs().max().item<double>(), 1e-5) << "call " << call;
  }
  // An input the module cannot take is an error naming the file and the input, in either layout.
  std::string message = error_of([&] { model.forward(torch::randn({2, 5, 5, 5})); });
  EXPECT_NE(message.find("conv_then_view.pt: forward failed on input [2, 5, 5, 5]"), std::string::npos)
      << message;
}

TEST(TorchScriptExport, TrainingModeMatchesAndTrains) {
  // Training-mode forward (batch statistics, running-stat updates) agrees with the ZooModel, and the
  // loaded file takes gradients: a student can be exported, loaded and trained further.
  TempDir dir;
  ExportCase c{"resnet8", ZooSpec().arch("resnet").depth(8).width(4), {1, 8, 8}, 3};
  auto model = trained_model(c);
  fs::path path = dir.path() / "student.pt";
  export_torchscript(*model, c.spec, c.shape, c.outputs, path);
  torch::jit::Module loaded = torch::jit::load(path.string());

  model->set_training(true);
  loaded.train(true);
  torch::Tensor x = torch::randn({6, 1, 8, 8});
  torch::Tensor expected = model->forward(x);
  torch::Tensor actual = loaded.forward({x}).toTensor();
  EXPECT_LT((actual - expected).abs().max().item<double>(), 1e-5);
  torch::Tensor zoo_mean, zoo_count;
  for (const auto& [name, t] : model->state()) {
    if (name == "stem_bn.running_mean") zoo_mean = t;
    if (name == "stem_bn.num_batches_tracked") zoo_count = t;
  }
  EXPECT_LT((loaded.attr("stem_bn_running_mean").toTensor() - zoo_mean).abs().max().item<double>(), 1e-6);
  EXPECT_EQ(loaded.attr("stem_bn_num_batches_tracked").toTensor().item<int64_t>(), zoo_count.item<int64_t>());

  actual.sum().backward();
  torch::Tensor grad = loaded.attr("head_weight").toTensor().grad();
  ASSERT_TRUE(grad.defined());
  EXPECT_GT(grad.abs().sum().item<double>(), 0);
}

TEST(TorchScriptExport, PythonLoadMatchesZooModel) {
  const char* python = "/usr/bin/python3";
  if (!fs::exists(python)) KD_PEER_MISSING(python << " is missing");
  TempDir dir;
  std::vector<ExportCase> all = cases();
  std::vector<torch::Tensor> expected;
  for (const auto& c : all) {
    auto model = trained_model(c);
    export_torchscript(*model, c.spec, c.shape, c.outputs, dir.path() / (c.label + ".pt"));
    torch::Tensor x = inputs_for(c, 5);
    save_tensor(x, dir.path() / (c.label + ".input.pt"));
    expected.push_back(model->forward(x));
  }
  // One interpreter for every case: importing torch takes seconds.
  std::string script = R"(
import json, sys, torch
d = sys.argv[1]
for label in sys.argv[2:]:
    extra = {"kdistill/spec.json": ""}
    m = torch.jit.load(f"{d}/{label}.pt", _extra_files=extra)
    assert json.loads(extra["kdistill/spec.json"])["arch"] in ("mlp", "cnn", "vgg", "resnet", "linear", "textcnn", "transformer", "bigru")
    assert not m.training
    x = torch.load(f"{d}/{label}.input.pt")
    with torch.no_grad():
        torch.save(m(x), f"{d}/{label}.output.pt")
)";
  write_file_atomic(dir.path() / "run.py", script);
  std::string command =
      std::string(python) + " " + (dir.path() / "run.py").string() + " " + dir.path().string();
  for (const auto& c : all) command += " " + c.label;
  command += " > " + (dir.path() / "python.log").string() + " 2>&1";
  int status = std::system(command.c_str());
  ASSERT_EQ(status, 0) << read_file(dir.path() / "python.log");
  for (size_t i = 0; i < all.size(); ++i) {
    torch::Tensor actual = load_tensor(dir.path() / (all[i].label + ".output.pt"));
    ASSERT_EQ(actual.sizes(), expected[i].sizes()) << all[i].label;
    EXPECT_LT((actual - expected[i]).abs().max().item<double>(), 1e-5) << all[i].label;
  }
}

TEST(TorchScriptExport, RefusesModelOfAnotherSpec) {
  TempDir dir;
  auto model = models::build_zoo_model(ZooSpec().arch("mlp").hidden({32}), {8}, 2);
  fs::path path = dir.path() / "student.pt";
  std::string message =
      error_of([&] { export_torchscript(*model, ZooSpec().arch("mlp").hidden({16}), {8}, 2, path); });
  EXPECT_NE(message.find("student.pt: torchscript export: the mlp model does not match its spec: load_state: "
                         "\"fc1.weight\": shape [32, 8] in the state, but the mlp model has [16, 8]"),
            std::string::npos)
      << message;
  EXPECT_FALSE(fs::exists(path));
}

TEST(TorchScriptExport, UnwritablePathIsAnErrorAndLeavesNoFile) {
  TempDir dir;
  write_file_atomic(dir.path() / "file", "not a folder");
  auto model = models::build_zoo_model(ZooSpec().arch("linear"), {4}, 2);
  fs::path path = dir.path() / "file" / "student.pt";
  std::string message = error_of([&] { export_torchscript(*model, ZooSpec().arch("linear"), {4}, 2, path); });
  EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

}  // namespace
}  // namespace kd::exports
