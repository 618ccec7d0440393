// `kdistill run` with feature terms: a CNN student taught from its teacher's layers (hint, attention)
// besides its outputs, resumed after a kill, and the recipes it refuses.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "cli/cli_util.h"
#include "data/python_helper.h"
#include "kd/io/model_file.h"
#include "kd/models/model.h"
#include "kd/util/fs.h"
#include "kd/util/strings.h"
#include "test_util.h"

namespace kd::test {
namespace {

// digits (8x8 images as 64 columns): a CNN teacher, a CNN student 10x smaller.
std::string feature_recipe(const std::string& losses, const std::string& extra_distill = "") {
  return "task: classification\nseed: 2\n"
         "data:\n  train: /usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz\n  test_fraction: 0.25\n"
         "teacher:\n  model: {arch: cnn, channels: [16, 32], batch_norm: true}\n"
         "  train: {epochs: 8, batch_size: 64, optimizer: {name: adam, lr: 0.003}}\n"
         "student:\n  model: {arch: cnn, channels: [4, 8], batch_norm: true}\n"
         "distill:\n  epochs: 12\n  batch_size: 64\n  optimizer: {name: adam, lr: 0.01}\n" + extra_distill +
         "  losses:\n" + losses;
}

const std::string kHintAndAttention =
    "    - {kind: kl, weight: 0.5, temperature: 2}\n"
    "    - {kind: ce, weight: 0.5}\n"
    "    - {kind: hint, weight: 1, student: conv2_pool, teacher: conv2_pool}\n"
    "    - {kind: attention, weight: 1000, student: conv1_act, teacher: conv1_act}\n";

class FeatureLosses : public RunFolder {
 protected:
  // Killed after `trainer`'s third epoch and run again with --resume: the student's test metrics are
  // `uninterrupted`'s, exactly, or within `relative` where a run is known to differ from itself that much.
  void expect_resume_after_a_kill(const std::string& path, const std::string& trainer, const nlohmann::json& uninterrupted,
                                  double relative = 0) {
    std::filesystem::remove_all(dir_ / "out");
    auto killed = run_kdistill_with_env("KD_KILL_AFTER_EPOCH='" + trainer + ":3'", "run " + path + " --out " + out() + " --force");
    ASSERT_EQ(killed.status, 137) << killed.output;
    auto resumed = run_kdistill("run " + path + " --out " + out() + " --resume");
    ASSERT_EQ(resumed.status, 0) << resumed.output;
    EXPECT_NE(resumed.output.find(trainer + ": resuming after epoch 3"), std::string::npos) << resumed.output;
    auto resumed_test = metrics()["models"]["student"]["test"];
    if (relative == 0) {
      EXPECT_EQ(resumed_test, uninterrupted);
      return;
    }
    EXPECT_EQ(resumed_test["errors"], uninterrupted["errors"]);
    for (const auto& [key, value] : uninterrupted.items()) {
      EXPECT_NEAR(resumed_test[key].get<double>(), value.get<double>(), relative * std::abs(value.get<double>())) << key;
    }
  }
};

TEST_F(FeatureLosses, HintAndAttentionTeachFromTheTeachersLayersAndResume) {
  auto path = recipe(feature_recipe(kHintAndAttention));
  auto r = run_kdistill("run " + path + " --out " + out() + " --force");
  ASSERT_EQ(r.status, 0) << r.output;
  auto m = metrics();
  // Unaugmented rows: the teacher's tensors at its two taps are cached with its outputs, float16:
  // 1,213 rows x (conv2_pool 32x2x2 + conv1_act 16x8x8) x 2 bytes.
  EXPECT_EQ(m["distill"]["teaching"]["mode"], "cache");
  EXPECT_EQ(m["distill"]["teaching"]["taps_bytes"], 1213 * (32 * 2 * 2 + 16 * 8 * 8) * 2);
  EXPECT_EQ(m["distill"]["loss_parameters"], 8 * 32 + 32);  // the hint's 1x1 projection 8 -> 32 channels
  const auto& hint = m["distill"]["loss"][2];
  EXPECT_EQ(hint["kind"], "hint");
  EXPECT_EQ(hint["student"], "conv2_pool");
  EXPECT_EQ(hint["distance"], "mse");
  EXPECT_FALSE(hint.contains("temperature"));
  EXPECT_DOUBLE_EQ(m["distill"]["alpha"].get<double>(), 0.5);  // of the terms on outputs
  // epochs.csv logs each term an epoch (kl;ce;hint;attention): the hint fell as the student trained.
  std::vector<double> hint_by_epoch;
  for (const auto& line : split(read_file(dir_ / "out/epochs.csv"), '\n')) {
    if (!starts_with(line, "student,")) continue;
    auto terms = split(line.substr(line.rfind(',') + 1), ';');
    ASSERT_EQ(terms.size(), 4u) << line;
    hint_by_epoch.push_back(std::stod(terms[2]));
  }
  ASSERT_EQ(hint_by_epoch.size(), 12u);
  EXPECT_LT(hint_by_epoch.back(), 0.7 * hint_by_epoch.front());
  EXPECT_GT(m["models"]["student"]["test"]["accuracy"].get<double>(), 0.6);
  // The projection is not part of the student.
  EXPECT_EQ(m["models"]["student"]["params"], m["models"]["baseline"]["params"]);
  auto student = io::load_model((dir_ / "out/student.kdm").string());
  EXPECT_EQ(models::count_params(*student.model), m["models"]["baseline"]["params"].get<int64_t>());

  // Killed after the student's third epoch, resumed: the projection comes back from the checkpoint
  // and the result is the uninterrupted run's.
  expect_resume_after_a_kill(path, "student", m["models"]["student"]["test"]);

  // Beyond distill.bank.memory_mb the taps live in mapped, unlinked files: the same numbers, no file left.
  auto spilled = (dir_ / "spilled").string();
  auto r2 = run_kdistill("run " + path + " --out " + spilled + " --set distill.bank.memory_mb=0");
  ASSERT_EQ(r2.status, 0) << r2.output;
  auto m2 = nlohmann::json::parse(read_file(dir_ / "spilled/metrics.json"));
  EXPECT_EQ(m2["distill"]["teaching"]["taps_storage"], "mapped file");
  EXPECT_EQ(m["distill"]["teaching"]["taps_storage"], "memory");
  EXPECT_EQ(m2["models"]["student"]["test"], m["models"]["student"]["test"]);
  for (const auto& entry : std::filesystem::recursive_directory_iterator(spilled)) {
    EXPECT_EQ(entry.path().filename().string().rfind("kdistill-bank", 0), std::string::npos) << entry.path();
  }
}

TEST_F(FeatureLosses, AugmentedViewsRunTheTeacherLiveAndBadTapsAreRefused) {
  auto bad_tap = run_kdistill("run " + recipe(feature_recipe(
      "    - {kind: ce}\n    - {kind: hint, student: conv2_pol, teacher: conv2_pool}\n")) + " --out " + out() + " --force");
  EXPECT_EQ(bad_tap.status, 2) << bad_tap.output;
  EXPECT_NE(bad_tap.output.find("distill.losses[1].student: tap \"conv2_pol\": the cnn model has no such tap (did you "
                                "mean \"conv2_pool\"?)"), std::string::npos) << bad_tap.output;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out/metrics.json"));
  auto teacher_tap = run_kdistill("run " + recipe(feature_recipe("    - {kind: rkd, student: gap, teacher: gapp}\n")) +
                                  " --out " + out() + " --force");
  EXPECT_NE(teacher_tap.output.find("distill.losses[0].teacher: tap \"gapp\""), std::string::npos) << teacher_tap.output;
  // With augmentation the teacher runs on every batch, on the student's view.
  auto live = run_kdistill("run " + recipe(feature_recipe(kHintAndAttention, "  augment: {noise: 0.1}\n")) + " --out " + out() + " --force");
  ASSERT_EQ(live.status, 0) << live.output;
  EXPECT_EQ(metrics()["distill"]["teaching"]["mode"], "online");
  EXPECT_FALSE(metrics()["distill"]["teaching"].contains("taps_bytes"));
  auto bank = run_kdistill("run " + recipe(feature_recipe(kHintAndAttention, "  augment: {noise: 0.1}\n  views: 4\n")) +
                           " --out " + out() + " --force");
  EXPECT_EQ(bank.status, 2) << bank.output;
  EXPECT_NE(bank.output.find("distill.views: a bank of 4 views holds the teacher's outputs, not its tap \"conv2_pool\""),
            std::string::npos) << bank.output;
}

// An ensemble teacher (teacher.members: 2): a feature term reads one member's layer, "m1.conv2_pool";
// the members' taps are cached with their combined outputs in one pass.
TEST_F(FeatureLosses, AnEnsembleTeachersMemberLayerIsATap) {
  std::string text = feature_recipe("    - {kind: kl, weight: 0.5, temperature: 2}\n    - {kind: ce, weight: 0.5}\n"
                                    "    - {kind: hint, weight: 1, student: conv2_pool, teacher: m1.conv2_pool}\n");
  text.replace(text.find("  train: {epochs: 8"), 0, "  members: 2\n");
  auto r = run_kdistill("run " + recipe(text) + " --out " + out() + " --force");
  ASSERT_EQ(r.status, 0) << r.output;
  auto m = metrics();
  EXPECT_EQ(m["distill"]["loss"][2]["teacher"], "m1.conv2_pool");
  EXPECT_GT(m["distill"]["teaching"]["taps_bytes"].get<int64_t>(), 0);
  EXPECT_GT(m["models"]["student"]["test"]["accuracy"].get<double>(), 0.5);
  auto unprefixed = text;
  unprefixed.replace(unprefixed.find("teacher: m1.conv2_pool"), 22, "teacher: conv2_pool");
  auto bad = run_kdistill("run " + recipe(unprefixed) + " --out " + out() + " --force");
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_NE(bad.output.find("tap \"conv2_pool\": the ensemble model has no such tap"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("m0.conv2_pool"), std::string::npos) << bad.output;
}

// Staged training (FitNets): hints alone for 4 epochs, then the outputs for 8, from the hinted weights;
// the baseline gets as many steps in all; killed in the second stage, the run resumes to the same result.
TEST_F(FeatureLosses, StagesTrainOneAfterTheOtherAndResume) {
  std::string text = feature_recipe("    - {kind: kl, weight: 0.5, temperature: 2}\n    - {kind: ce, weight: 0.5}\n",
                                    "  stages:\n"
                                    "    - {epochs: 4, losses: [{kind: hint, student: conv2_pool, teacher: conv2_pool}]}\n"
                                    "    - {epochs: 8}\n");
  auto path = recipe(text);
  auto r = run_kdistill("run " + path + " --out " + out() + " --force");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("student stage 1/2 epoch 4/4"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("student stage 1/2: hint only; validation scores show the head as it stands"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("student stage 2/2 epoch 8/8"), std::string::npos) << r.output;
  auto m = metrics();
  EXPECT_EQ(m["distill"]["stages"], nlohmann::json::parse(R"([{"epochs": 4, "losses": ["hint"]},
                                                             {"epochs": 8, "losses": ["kl", "ce"]}])"));
  EXPECT_EQ(m["distill"]["epochs_run"], 12);
  EXPECT_EQ(m["models"]["student"]["training"]["steps"], m["models"]["baseline"]["training"]["steps"]);
  EXPECT_EQ(m["distill"]["loss_parameters"], 8 * 32 + 32);
  EXPECT_GT(m["models"]["student"]["training"]["best_epoch"].get<int>(), 4);  // chosen in the last stage
  // A staged run (unfused student with taps, then the fused path) differs from itself in the 8th digit
  // in about 1 run of 5 with one thread; the cause is not found yet (single-stage runs agree exactly).
  expect_resume_after_a_kill(path, "student stage 2/2", m["models"]["student"]["test"], 1e-6);

  auto bad = run_kdistill("run " + recipe(feature_recipe("    - {kind: ce}\n", "  stages:\n    - {epochs: 0}\n")) +
                          " --out " + out() + " --force");
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_NE(bad.output.find("distill.stages[0].epochs: 0 is not a number of epochs (1 or more)"), std::string::npos)
      << bad.output;
  // distill.epochs that the stages do not add up to (12 against 4 + 4) is refused, not ignored.
  bad = run_kdistill("run " + recipe(feature_recipe("    - {kind: ce}\n", "  stages:\n    - {epochs: 4}\n    - {epochs: 4}\n")) +
                     " --out " + out() + " --force");
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_NE(bad.output.find("distill.epochs: 12 epochs, but distill.stages train 8 (4 + 4)"), std::string::npos) << bad.output;
}

// A teacher made in PyTorch (TorchScript) taught through a submodule's output: its path is the tap.
TEST_F(FeatureLosses, ATorchScriptTeachersSubmoduleIsATap) {
  if (!python_has("torch")) KD_PEER_MISSING("/usr/bin/python3 cannot import torch");
  auto teacher = (dir_ / "teacher.pt").string();
  auto python = run_python(R"(
import torch
torch.manual_seed(0)
class Teacher(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(inplace=True),
                                            torch.nn.MaxPool2d(2))
        self.head = torch.nn.Linear(16 * 4 * 4, 10)
    def forward(self, x):
        return self.head(torch.flatten(self.features(x.view(-1, 1, 8, 8)), 1))
torch.jit.script(Teacher().eval()).save(")" + teacher + "\")\n");
  ASSERT_EQ(python.status, 0) << python.output;
  std::string text = feature_recipe("    - {kind: ce}\n    - {kind: hint, student: conv1_pool, teacher: features}\n");
  auto at = text.find("teacher:\n");
  text = text.substr(0, at) + "teacher:\n  path: " + teacher + "\n" + text.substr(text.find("student:\n"));
  auto r = run_kdistill("run " + recipe(text) + " --out " + out() + " --force");
  ASSERT_EQ(r.status, 0) << r.output;
  auto m = metrics();
  EXPECT_EQ(m["distill"]["loss_parameters"], 16 * 4 + 16);  // 1x1 projection 4 -> 16 channels
  EXPECT_EQ(m["distill"]["teaching"]["taps_bytes"], 1213 * 16 * 4 * 4 * 2);
}

}  // namespace
}  // namespace kd::test
