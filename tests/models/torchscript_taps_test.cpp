// Taps of TorchScript models made by real PyTorch: a submodule's output, by its path, equals what a
// forward hook on that submodule records in PyTorch, in scripted and traced files, with in-place ReLUs
// and a residual `out += identity` after the tapped module.
#include <gtest/gtest.h>

#include "data/python_helper.h"
#include "kd/data/npy.h"
#include "kd/models/torchscript_model.h"
#include "test_util.h"

namespace kd::models {
namespace {

TEST(TorchScriptTaps, SubmoduleOutputsEqualPyTorchsForwardHooks) {
  if (!test::python_has("torch")) KD_PEER_MISSING("/usr/bin/python3 cannot import torch");
  test::TempDir dir;
  auto python = test::run_python(R"(
import numpy, torch
torch.manual_seed(0)
class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(c)
        self.relu = torch.nn.ReLU(inplace=True)
        self.conv2 = torch.nn.Conv2d(c, c, 3, padding=1)
    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        out += identity
        return self.relu(out)
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(inplace=True))
        self.layer1 = torch.nn.Sequential(Block(4), Block(4))
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(4, 3)
    def forward(self, x):
        x = self.layer1(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))
net = Net().eval()
x = torch.randn(5, 1, 8, 8)
taps = ["stem", "layer1.0.conv2", "layer1.0", "layer1.1.bn1", "pool"]
torch.jit.script(net).save(")" + (dir / "scripted.pt").string() + R"(")
torch.jit.trace(net, x).save(")" + (dir / "traced.pt").string() + R"(")
kept = {}
for name in taps:
    net.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: kept.__setitem__(name, o.detach().clone()))
with torch.no_grad():
    out = net(x)
numpy.save(")" + (dir / "x.npy").string() + R"(", x.numpy())
numpy.save(")" + (dir / "out.npy").string() + R"(", out.numpy())
for i, name in enumerate(taps):
    numpy.save(")" + dir.path().string() + R"(/tap%d.npy" % i, kept[name].numpy())
)");
  ASSERT_EQ(python.status, 0) << python.output;
  std::vector<std::string> taps = {"stem", "layer1.0.conv2", "layer1.0", "layer1.1.bn1", "pool"};
  torch::Tensor x = data::read_npy(dir / "x.npy");
  for (const char* file : {"scripted.pt", "traced.pt"}) {
    SCOPED_TRACE(file);
    auto model = load_torchscript((dir / file).string());
    auto names = model->tap_names();
    EXPECT_NE(std::find(names.begin(), names.end(), "layer1.1.conv1"), names.end());
    torch::NoGradGuard no_grad;
    auto tapped = model->forward_taps(x, taps);
    EXPECT_LT((tapped.output - data::read_npy(dir / "out.npy")).abs().max().item<double>(), 1e-5);
    for (size_t i = 0; i < taps.size(); ++i) {
      torch::Tensor expected = data::read_npy(dir.path() / ("tap" + std::to_string(i) + ".npy"));
      ASSERT_EQ(tapped.taps[i].sizes(), expected.sizes()) << taps[i];
      EXPECT_LT((tapped.taps[i] - expected).abs().max().item<double>(), 1e-5) << taps[i];
    }
    KD_EXPECT_ERROR(model->forward_taps(x, {"layer1.2"}), "tap \"layer1.2\": the torchscript model has no such tap");
  }
}

}  // namespace
}  // namespace kd::models
