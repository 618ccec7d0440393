#include "kd/models/macs.h"

#include <gtest/gtest.h>

#include "../data/python_helper.h"
#include "kd/models/torchscript_model.h"
#include "kd/models/zoo.h"
#include "test_util.h"

namespace kd::models {
namespace {

// The measured count equals the zoo's own layer-by-layer count for every family, with and
// without batch norm, on image and flat input.
TEST(Macs, MeasuredEqualsTheZooCountForEveryFamily) {
  struct Case {
    ZooSpec spec;
    std::vector<int64_t> shape;
  };
  std::vector<Case> cases = {
      {ZooSpec().arch("mlp").hidden({64, 32}).batch_norm(true), {1, 28, 28}},
      {ZooSpec().arch("linear"), {13}},
      {ZooSpec().arch("cnn").channels({8, 16}).hidden({24}).batch_norm(true), {1, 28, 28}},
      {ZooSpec().arch("cnn").channels({4}).kernel(5).pool("avg"), {3, 16, 16}},
      {ZooSpec().arch("resnet").depth(8).width(4), {3, 16, 16}},
  };
  for (const auto& c : cases) {
    auto model = build_zoo_model(c.spec, c.shape, 10);
    int64_t expected = model->summary(c.shape).macs;
    EXPECT_GT(expected, 0);
    EXPECT_EQ(measure_macs(*model, c.shape), expected) << to_json(c.spec).dump();
  }
}

// A TorchScript file from real PyTorch: Conv2d(1, 4, 3, padding=1) on 1x8x8 is 8*8*4*9 = 2304 MACs,
// a grouped Conv2d(4, 4, 3, groups=2, padding=1) is 8*8*4*2*9 = 4608, a transposed
// Conv2d(4, 2, 2, stride=2) on 4x8x8 is 256 inputs * 2 * 4 = 2048, then Linear(512, 10) 5120 and a
// matmul of [1, 10] by a [10, 3] buffer 30: 14,110 in all.
TEST(Macs, TorchScriptModelFromPyTorch) {
  if (!test::python_has("torch")) KD_PEER_MISSING("/usr/bin/python3 cannot import torch");
  test::TempDir dir;
  auto file = (dir / "m.pt").string();
  auto python = test::run_python(R"(
import torch
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 4, 3, groups=2, padding=1)
        self.up = torch.nn.ConvTranspose2d(4, 2, 2, stride=2)
        self.fc = torch.nn.Linear(512, 10)
        self.register_buffer("proj", torch.ones(10, 3))
    def forward(self, x):
        x = self.up(torch.relu(self.b(self.a(x))))
        return torch.matmul(self.fc(x.flatten(1)), self.proj)
torch.jit.script(M()).save(")" + file + "\")\n");
  ASSERT_EQ(python.status, 0) << python.output;
  auto model = load_torchscript(file);
  EXPECT_EQ(measure_macs(*model, {1, 8, 8}), 2304 + 4608 + 2048 + 5120 + 30);
  EXPECT_EQ(model->summary({1, 8, 8}).macs, 14110);
}

TEST(Macs, AModelThatRefusesTheShapeIsAnErrorNotACount) {
  auto model = build_zoo_model(ZooSpec().arch("mlp").hidden({8}), {4}, 2);
  EXPECT_THROW(measure_macs(*model, {5}), kd::Error);
  // The observer is gone after the error: a later count is right.
  EXPECT_EQ(measure_macs(*model, {4}), 4 * 8 + 8 * 2);
}

}  // namespace
}  // namespace kd::models
