// `kdistill run` end to end on small data: outputs, learning, teacher reuse, resume, bad input.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <csignal>
#include <filesystem>

#include "cli/cli_util.h"
#include "data/python_helper.h"
#include "kd/data/normalize.h"
#include "kd/io/model_file.h"
#include "kd/util/fs.h"
#include "kd/util/strings.h"
#include "test_util.h"

namespace kd::test {
namespace {

const std::string kSklearn = "/usr/lib/python3/dist-packages/sklearn/datasets/data/";

std::string digits_recipe(const std::string& extra_distill = "") {
  return "task: classification\nseed: 1\n"
         "data:\n  train: " + kSklearn + "digits.csv.gz\n  test_fraction: 0.25\n"
         "teacher:\n  model: {arch: mlp, hidden: [64]}\n  train: {epochs: 8, batch_size: 64, optimizer: {name: adam, lr: 0.003}}\n"
         "student:\n  model: {arch: mlp, hidden: [8]}\n"
         "distill:\n  epochs: 8\n  batch_size: 64\n  optimizer: {name: adam, lr: 0.01}\n" + extra_distill +
         "export: [torchscript, onnx]\n";
}

class Run : public RunFolder {};

TEST_F(Run, DigitsEndToEnd) {
  auto r = run_kdistill("run " + recipe(digits_recipe()) + " --out " + out() + " --force");
  ASSERT_EQ(r.status, 0) << r.output;
  // The summary table names the three models.
  EXPECT_NE(r.output.find("teacher"), std::string::npos);
  EXPECT_NE(r.output.find("baseline"), std::string::npos);
  auto m = metrics();
  EXPECT_EQ(m["task"], "classification");
  for (const char* name : {"teacher", "baseline", "student"}) {
    const auto& model = m["models"][name];
    for (const char* key : {"params", "bytes", "macs", "latency_ms"}) EXPECT_TRUE(model.contains(key)) << name << key;
    // Latency: a median within its spread, of at least 20 passes at batch 1 (5 at 256) and 30 ms of them.
    for (const std::string batch : {"batch1", "batch256"}) {
      const auto& latency = model["latency_ms"];
      EXPECT_LE(latency[batch + "_p10"].get<double>(), latency[batch].get<double>()) << name << batch;
      EXPECT_LE(latency[batch].get<double>(), latency[batch + "_p90"].get<double>()) << name << batch;
      EXPECT_GE(latency[batch + "_samples"].get<int64_t>(), batch == "batch1" ? 20 : 5) << name;
    }
    // A model of microseconds a pass: many more passes than 20 fill the 30 ms.
    if (std::string(name) == "student") {
      EXPECT_GT(model["latency_ms"]["batch1_samples"].get<int64_t>(), 200);
    }
    for (const char* key : {"accuracy", "errors", "macro_f1", "ece", "nll"}) EXPECT_TRUE(model["test"].contains(key));
    // 10 classes: chance is 10%; every model must have learned far beyond it.
    EXPECT_GT(model["test"]["accuracy"].get<double>(), 0.6) << name;
  }
  EXPECT_EQ(m["models"]["student"]["params"], 64 * 8 + 8 + 8 * 10 + 10);
  EXPECT_TRUE(m["models"]["student"]["test"].contains("agreement_with_teacher"));
  EXPECT_TRUE(m["models"]["student"]["test"].contains("kl_to_teacher"));
  EXPECT_EQ(m["distill"]["epochs_run"], 8);
  EXPECT_EQ(m["timing"]["distill_epoch_seconds"].size(), 8u);
  // The baseline ran as many optimizer steps as the distilled student.
  EXPECT_EQ(m["models"]["baseline"]["training"]["steps"], m["models"]["student"]["training"]["steps"]);
  for (const char* file : {"metrics.json", "epochs.csv", "recipe.yaml", "teacher.kdm", "baseline.kdm", "student.kdm",
                           "student.torchscript.pt", "student.onnx"}) {
    EXPECT_TRUE(std::filesystem::exists(dir_ / "out" / file)) << file;
  }
  // The ONNX student takes raw inputs: it computes what student.kdm computes on normalised ones.
  auto kdm = io::load_model((dir_ / "out/student.kdm").string());
  auto onnx = io::load_model((dir_ / "out/student.onnx").string());
  torch::Tensor raw = torch::rand({4, 64}) * 16;
  auto normalizer = data::Normalizer::from_json(kdm.info.preprocessing["normalize"]);
  EXPECT_LT((onnx.model->forward(raw) - kdm.model->forward(normalizer.apply(raw))).abs().max().item<double>(), 1e-4);

  // That ONNX file as the teacher of a run with the same data and split: its metadata says it takes raw
  // inputs, so the run feeds it raw ones, and the teacher's accuracy is the exported student's.
  std::string onnx_teacher = digits_recipe();
  auto start = onnx_teacher.find("teacher:");
  onnx_teacher.replace(start, onnx_teacher.find("student:") - start,
                       "teacher:\n  path: " + (dir_ / "out/student.onnx").string() + "\n");
  auto from_onnx = run_kdistill("run " + recipe(onnx_teacher) + " --out " + (dir_ / "onnx_teacher").string());
  ASSERT_EQ(from_onnx.status, 0) << from_onnx.output;
  auto onnx_metrics = nlohmann::json::parse(read_file(dir_ / "onnx_teacher/metrics.json"));
  EXPECT_EQ(onnx_metrics["models"]["teacher"]["test"]["accuracy"], m["models"]["student"]["test"]["accuracy"]);
  // epochs.csv: a header and 8 rows for each of the three models.
  auto lines = split(read_file(dir_ / "out/epochs.csv"), '\n');
  EXPECT_EQ(lines.size(), 1u + 24u + 1u);

  // A second run with the same teacher part reuses the saved teacher, and the same seed gives
  // the same numbers.
  auto again = run_kdistill("run " + recipe(digits_recipe()) + " --out " + out() + " --force");
  ASSERT_EQ(again.status, 0) << again.output;
  EXPECT_NE(again.output.find("reusing"), std::string::npos) << again.output;
  EXPECT_EQ(metrics()["models"]["student"]["test"], m["models"]["student"]["test"]);
}

TEST_F(Run, ResumeAfterAKillGivesTheSameResult) {
  auto path = recipe(digits_recipe());
  ASSERT_EQ(run_kdistill("run " + path + " --out " + out() + " --force").status, 0);
  auto uninterrupted = metrics()["models"];
  std::filesystem::remove_all(dir_ / "out");
  // Killed abruptly after the student's third epoch (see KD_KILL_AFTER_EPOCH in the trainer).
  auto killed = run_kdistill_with_env("KD_KILL_AFTER_EPOCH=student:3", "run " + path + " --out " + out() + " --force");
  ASSERT_EQ(killed.status, 137) << killed.output;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out/metrics.json"));
  auto resumed = run_kdistill("run " + path + " --out " + out() + " --resume");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("student: resuming after epoch 3"), std::string::npos) << resumed.output;
  EXPECT_EQ(metrics()["models"]["student"]["test"], uninterrupted["student"]["test"]);
  EXPECT_EQ(metrics()["models"]["baseline"]["test"], uninterrupted["baseline"]["test"]);
}

// An absurd learning rate: baseline and student go back to their last good state with a tenth of it
// until the loss stays finite; metrics.json and the report say so. Without restarts it is an error.
TEST_F(Run, DivergenceGoesBackWithALowerLearningRate) {
  std::string text = "task: classification\nseed: 1\n"
                     "data: {format: csv, train: " + kSklearn + "iris.csv, target: -1, test_fraction: 0.3}\n"
                     "teacher:\n  model: {arch: mlp, hidden: [16]}\n  train: {epochs: 20}\n"
                     "student:\n  model: {arch: mlp, hidden: [8]}\n"
                     "distill:\n  epochs: 20\n  optimizer: {name: sgd, lr: 100}\n";
  auto path = recipe(text);
  auto run = run_kdistill("run " + path + " --out " + out() + " --force");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("student: the loss became nan at epoch"), std::string::npos) << run.output;
  for (const char* model : {"baseline", "student"}) {
    auto divergences = metrics()["models"][model]["training"]["divergences"];
    ASSERT_FALSE(divergences.empty()) << model;
    EXPECT_EQ(divergences[0]["lr"], 100.0);
    EXPECT_EQ(divergences[0]["lr_after"], 10.0);
    EXPECT_GT(metrics()["models"][model]["test"]["accuracy"].get<double>(), 0.5) << model;
  }
  EXPECT_TRUE(metrics()["models"]["teacher"]["training"]["divergences"].empty());
  EXPECT_NE(read_file(dir_ / "out/report.html").find("The student diverged at epoch"), std::string::npos);
  auto strict = run_kdistill("run " + path + " --out " + (dir_ / "strict").string() +
                             " --set distill.divergence_retries=0");
  EXPECT_EQ(strict.status, 2) << strict.output;
  EXPECT_NE(strict.output.find("(learning rate 100); lower the learning rate or set grad_clip"), std::string::npos)
      << strict.output;
}

// Ctrl-C in the student's training: the step finishes, a checkpoint of the place in the epoch is
// written and the exit status is 130; --resume then ends with the metrics of an uninterrupted run.
// SIGTERM: the same with 143.
TEST_F(Run, CtrlCWritesACheckpointAndResumeFinishesTheRun) {
  auto path = recipe(digits_recipe());
  const std::string longer = " --set distill.epochs=200 --set 'export=[]'";
  ASSERT_EQ(run_kdistill("run " + path + " --out " + (dir_ / "whole").string() + longer).status, 0);
  auto whole = nlohmann::json::parse(read_file(dir_ / "whole/metrics.json"))["models"];
  auto stopped = signal_when("run " + path + " --out " + out() + " --force" + longer, "student epoch 40/200", SIGINT,
                             (dir_ / "int.log").string());
  ASSERT_EQ(stopped["status"], 130) << stopped["log"];
  std::string log = stopped["log"];
  EXPECT_NE(log.find("kdistill: student: stopped by SIGINT after epoch "), std::string::npos) << log;
  EXPECT_NE(log.find("; checkpoint written: the same command with --resume goes on"), std::string::npos) << log;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out/metrics.json"));
  auto resumed = run_kdistill("run " + path + " --out " + out() + " --force" + longer + " --resume");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("student: resuming at epoch "), std::string::npos) << resumed.output;
  EXPECT_EQ(metrics()["models"]["student"]["test"], whole["student"]["test"]);
  EXPECT_EQ(metrics()["models"]["baseline"]["test"], whole["baseline"]["test"]);
  EXPECT_EQ(metrics()["models"]["student"]["training"]["steps"], whole["student"]["training"]["steps"]);

  auto terminated = signal_when("run " + path + " --out " + (dir_ / "term").string() + longer, "student epoch 20/200",
                                SIGTERM, (dir_ / "term.log").string());
  EXPECT_EQ(terminated["status"], 143) << terminated["log"];
  EXPECT_NE(terminated["log"].get<std::string>().find("stopped by SIGTERM"), std::string::npos) << terminated["log"];
}

// A full disk (here a file-size limit, RLIMIT_FSIZE) is a one-line error naming the file and the
// reason; the files of the earlier run in the folder are left whole.
TEST_F(Run, AFullDiskIsAnErrorAndTheEarlierFilesStay) {
  auto path = recipe(digits_recipe());
  ASSERT_EQ(run_kdistill("run " + path + " --out " + out() + " --force").status, 0);
  std::string before = read_file(dir_ / "out/metrics.json");
  for (int kilobytes : {4, 20, 60}) {
    auto full = run_shell("ulimit -f " + std::to_string(kilobytes) + "; " KD_CLI_PATH " --threads 1 run " + path +
                          " --out " + out() + " --force" + " --set distill.epochs=9 2>&1");
    EXPECT_EQ(full.status, 2) << full.output;
    auto error = full.output.find("kdistill: error: " + out() + "/");
    ASSERT_NE(error, std::string::npos) << full.output;
    EXPECT_NE(full.output.find("(File too large)", error), std::string::npos) << full.output;
    EXPECT_NE(full.output.find("is left as it was", error), std::string::npos) << full.output;
    EXPECT_EQ(full.output.find('\n', error), full.output.size() - 1) << full.output;
  }
  EXPECT_EQ(read_file(dir_ / "out/metrics.json"), before);
  for (const char* model : {"teacher.kdm", "baseline.kdm", "student.kdm"}) {
    auto inspected = run_kdistill("inspect " + (dir_ / "out" / model).string());
    EXPECT_EQ(inspected.status, 0) << model << inspected.output;
  }
  EXPECT_TRUE(std::filesystem::exists(dir_ / "out/student.onnx"));
}

TEST_F(Run, ResumeWithAChangedRecipeIsRefused) {
  ASSERT_EQ(run_kdistill("run " + recipe(digits_recipe()) + " --out " + out() + " --force").status, 0);
  auto before = read_file(dir_ / "out/metrics.json");
  auto r = run_kdistill("run " + recipe(digits_recipe()) + " --out " + out() + " --force" + " --resume --set distill.epochs=9");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("--resume: the recipe differs"), std::string::npos) << r.output;
  EXPECT_EQ(read_file(dir_ / "out/metrics.json"), before);  // nothing written over
}

// student.init from the teacher: the 8 hidden units of the student are the teacher's 8 strongest of 64;
// the run logs what it copied and the student's validation accuracy before any training.
TEST_F(Run, StudentInitFromTheTeachersMostImportantUnits) {
  std::string text = digits_recipe();
  const std::string student = "student:\n  model: {arch: mlp, hidden: [8]}\n";
  text.replace(text.find(student), student.size(), student + "  init: {from: teacher, units: importance}\n");
  auto r = run_kdistill("run " + recipe(text) + " --out " + out() + " --force");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("student init: fc1: 8 of 64 units by importance"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("before training: val accuracy"), std::string::npos) << r.output;
  auto init = metrics()["distill"]["student_init_from_teacher"];
  EXPECT_EQ(init["units"], "importance");
  EXPECT_EQ(init["tensors"], 4);  // fc1 and head, weight and bias
  EXPECT_EQ(init["layers"], nlohmann::json::array({"fc1: 8 of 64 units by importance"}));
  EXPECT_TRUE(init["val"].contains("accuracy"));

  auto bad = run_kdistill("run " + recipe(text) + " --out " + out() + " --force" + " --set student.init.units=largest");
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_NE(bad.output.find("student.init.units: \"largest\" is not leading, importance, variance or svd"),
            std::string::npos) << bad.output;

  // By the variance of the teacher's activations on training rows, into the teacher's fc1 by name.
  auto variance = run_kdistill("run " + recipe(text) + " --out " + out() + " --force" +
                               " --set student.init.units=variance --set 'student.init.layers={fc1: fc1}'");
  ASSERT_EQ(variance.status, 0) << variance.output;
  EXPECT_NE(variance.output.find("student init: fc1: 8 of 64 units by activation variance"), std::string::npos)
      << variance.output;
  init = metrics()["distill"]["student_init_from_teacher"];
  EXPECT_EQ(init["units"], "variance");
  EXPECT_EQ(init["layer_map"], nlohmann::json::parse(R"({"fc1": "fc1"})"));
  auto svd = run_kdistill("run " + recipe(text) + " --out " + out() + " --force" + " --set student.init.units=svd");
  ASSERT_EQ(svd.status, 0) << svd.output;
  EXPECT_NE(svd.output.find("student init: fc1: 8 of 64 units as a truncated SVD ("), std::string::npos) << svd.output;
  auto unknown = run_kdistill("run " + recipe(text) + " --out " + out() + " --force" + " --set 'student.init.layers={fc1: fc7}'");
  EXPECT_EQ(unknown.status, 2) << unknown.output;
  EXPECT_NE(unknown.output.find("student.init.layers: \"fc7\" is not a layer of the teacher"), std::string::npos)
      << unknown.output;
}

TEST_F(Run, TargetStopsTrainingEarly) {
  auto r = run_kdistill("run " + recipe(digits_recipe("  target: \"accuracy >= 30\"\n")) + " --out " + out() + " --force");
  ASSERT_EQ(r.status, 0) << r.output;
  auto m = metrics();
  EXPECT_TRUE(m["distill"]["target_reached"].get<bool>());
  EXPECT_LT(m["distill"]["epochs_run"].get<int>(), 8);
  EXPECT_EQ(m["models"]["student"]["training"]["stop_reason"], "target");
}

void expect_refused(const CommandResult& r, const std::string& message) {
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find(message), std::string::npos) << "output: " << r.output << "\nexpected: " << message;
}

TEST_F(Run, BadRecipes) {
  expect_refused(run_kdistill("run " + recipe(digits_recipe("  losses: [{kind: kl, temperature: 0}]\n")) + " --out " + out() + " --force"),
                 "losses[0].temperature");
  expect_refused(run_kdistill("run " + recipe(digits_recipe("  losses: [{kind: kl, weight: 0}, {kind: ce, weight: 0}]\n")) +
                              " --out " + out() + " --force"),
                 "weight");
  expect_refused(run_kdistill("run " + recipe(digits_recipe("  target: \"accuracy >= teachr\"\n")) + " --out " + out() + " --force"),
                 "distill.target");
  std::string missing_teacher = digits_recipe();
  missing_teacher.replace(missing_teacher.find("model: {arch: mlp, hidden: [64]}"),
                          std::string("model: {arch: mlp, hidden: [64]}").size(), "path: " + (dir_ / "t.pt").string());
  missing_teacher.replace(missing_teacher.find("  train: {epochs: 8"), missing_teacher.find("student:") - missing_teacher.find("  train: {epochs: 8"), "");
  expect_refused(run_kdistill("run " + recipe(missing_teacher) + " --out " + out() + " --force"), "t.pt: model file does not exist");
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out/metrics.json"));
}

// A table of 178 rows with nothing but the models given: epochs, batch size and learning rate come
// from the number of rows, and a 4-unit student (71 parameters) trains. With the old fixed defaults
// (10 epochs of 128 rows: 10 steps) it ended at chance.
TEST_F(Run, DefaultsFitASmallTable) {
  std::string text = "task: classification\nseed: 0\n"
                     "data:\n  train: " + kSklearn + "wine_data.csv\n  target: -1\n  test_fraction: 0.2\n"
                     "teacher:\n  model: {arch: mlp, hidden: [64, 64]}\n"
                     "student:\n  model: {arch: mlp, hidden: [4]}\n";
  auto r = run_kdistill("run " + recipe(text) + " --out " + out() + " --force");
  ASSERT_EQ(r.status, 0) << r.output;
  auto m = metrics();
  EXPECT_EQ(m["models"]["student"]["params"], 71);
  for (const char* name : {"teacher", "baseline", "student"}) {
    EXPECT_GE(m["models"][name]["test"]["accuracy"].get<double>(), 0.9) << name << "\n" << r.output;
  }
  // 128 training rows: batches of 16 for 188 epochs.
  EXPECT_EQ(m["distill"]["epochs_run"], 188);
  EXPECT_EQ(m["models"]["student"]["training"]["steps"], 188 * 8);
}

// A list of teacher files is an ensemble: each file loaded and fed as it needs, their probabilities
// averaged; its size is all of them.
TEST_F(Run, AListOfTeacherFilesIsAnEnsemble) {
  std::vector<std::string> files;
  std::vector<double> accuracy;
  for (int seed : {1, 2}) {
    auto text = digits_recipe();
    text.replace(text.find("seed: 1"), 7, "seed: " + std::to_string(seed));
    auto r = run_kdistill("run " + recipe(text) + " --out " + out() + " --force" + " --set distill.epochs=1 --set export=[]");
    ASSERT_EQ(r.status, 0) << r.output;
    accuracy.push_back(metrics()["models"]["teacher"]["test"]["accuracy"].get<double>());
    files.push_back((dir_ / ("teacher-" + std::to_string(seed) + ".kdm")).string());
    std::filesystem::rename(dir_ / "out/teacher.kdm", files.back());
  }
  auto text = digits_recipe();
  text.replace(text.find("  model: {arch: mlp, hidden: [64]}\n"), 0, "  path: [" + files[0] + ", " + files[1] + "]\n");
  auto r = run_kdistill("run " + recipe(text) + " --out " + out() + " --force" + " --set teacher.model=null --set teacher.train=null");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("an ensemble of 2 teachers, probabilities averaged"), std::string::npos) << r.output;
  auto m = metrics();
  EXPECT_EQ(m["teacher_input"]["ensemble"].size(), 2u);
  EXPECT_EQ(m["teacher_input"]["combine"], "probabilities");
  const auto& teacher = m["models"]["teacher"];
  EXPECT_EQ(teacher["params"], 2 * (64 * 64 + 64 + 64 * 10 + 10));
  EXPECT_EQ(teacher["file"], "2 files");
  EXPECT_EQ(teacher["bytes"], std::filesystem::file_size(files[0]) + std::filesystem::file_size(files[1]));
  double ensemble = teacher["test"]["accuracy"].get<double>();
  EXPECT_GE(ensemble, std::min(accuracy[0], accuracy[1]) - 0.02);
  EXPECT_GT(m["models"]["student"]["test"]["accuracy"].get<double>(), 0.6);
  // Each file's own test metrics: the first was trained with this run's seed, on the same split.
  ASSERT_EQ(teacher["members"].size(), 2u) << teacher.dump();
  EXPECT_EQ(teacher["members"][0]["file"], files[0]);
  EXPECT_DOUBLE_EQ(teacher["members"][0]["test"]["accuracy"].get<double>(), accuracy[0]);
  EXPECT_NE(read_file(dir_ / "out/report.html").find("On their own, in test accuracy:"), std::string::npos);
  // Weights per file, and each row weighted by the members' confidence.
  auto weighted = run_kdistill("run " + recipe(text) + " --out " + out() + " --force" + " --set teacher.model=null --set teacher.train=null" +
                               " --set teacher.weights=[3,1] --set teacher.combine=confidence");
  ASSERT_EQ(weighted.status, 0) << weighted.output;
  m = metrics();
  EXPECT_EQ(m["teacher_input"]["combine"], "confidence");
  EXPECT_EQ(m["models"]["teacher"]["members"][0]["weight"], 3.0);
  EXPECT_EQ(m["models"]["teacher"]["members"][1]["weight"], 1.0);
  // Each row weighted by the members' precision for what they predict, measured on labelled rows.
  auto correct = run_kdistill("run " + recipe(text) + " --out " + out() + " --force" + " --set teacher.model=null --set teacher.train=null" +
                              " --set teacher.combine=correctness");
  ASSERT_EQ(correct.status, 0) << correct.output;
  EXPECT_NE(correct.output.find("weighted per row by its precision for the class it predicts"), std::string::npos)
      << correct.output;
  m = metrics();
  EXPECT_EQ(m["models"]["teacher"]["combine"], "correctness");
  const auto& correctness = m["models"]["teacher"]["correctness"];
  ASSERT_EQ(correctness["precision"].size(), 2u);
  EXPECT_EQ(correctness["precision"][0].size(), 10u);
  EXPECT_GT(correctness["rows"].get<int64_t>(), 100);
  for (const auto& member : correctness["precision"]) {
    for (double p : member) EXPECT_TRUE(p > 0 && p < 1) << correctness.dump();
  }
  EXPECT_GE(m["models"]["teacher"]["test"]["accuracy"].get<double>(), std::min(accuracy[0], accuracy[1]) - 0.02);
  EXPECT_NE(read_file(dir_ / "out/report.html").find("by each member's precision"), std::string::npos);
  expect_refused(run_kdistill("run " + recipe(text) + " --out " + out() + " --force" +
                              " --set teacher.model=null --set teacher.train=null --set teacher.weights=[1]"),
                 "teacher.weights: 1 weights for 2 teachers; give one per teacher");
  expect_refused(run_kdistill("run " + recipe(text) + " --out " + out() + " --force" +
                              " --set teacher.model=null --set teacher.train=null --set teacher.weights=[1,-2]"),
                 "teacher.weights: -2 is not a positive weight");
  expect_refused(run_kdistill("run " + recipe(text) + " --out " + out() + " --force" +
                              " --set teacher.model=null --set teacher.train=null --set teacher.combine=vote"),
                 "teacher.combine: \"vote\" is not a way to combine teachers, expected probabilities, logits, "
                 "confidence or correctness");
  expect_refused(run_kdistill("run " + recipe(text) + " --out " + out() + " --force" +
                              " --set teacher.model=null --set teacher.train=null --set teacher.path=[]"),
                 "teacher.path: an empty list");
}

// teacher.members: N trains N zoo teachers (seed, seed + 1, ...) and teaches with their ensemble;
// a second run reuses every member.
TEST_F(Run, TeacherMembersTrainsAnEnsembleHere) {
  auto r = run_kdistill("run " + recipe(digits_recipe()) + " --out " + out() + " --force" + " --set teacher.members=2 --set export=[]");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("an ensemble of 2 teachers trained here, probabilities combined"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("(seed + 1, as teacher-2)"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir_ / "out/teacher.kdm"));
  EXPECT_TRUE(std::filesystem::exists(dir_ / "out/teacher-2.kdm"));
  auto m = metrics();
  const auto& teacher = m["models"]["teacher"];
  EXPECT_EQ(teacher["params"], 2 * (64 * 64 + 64 + 64 * 10 + 10));
  ASSERT_EQ(teacher["members"].size(), 2u);
  EXPECT_NE(teacher["members"][0]["test"]["accuracy"], teacher["members"][1]["test"]["accuracy"]);
  EXPECT_NE(read_file(dir_ / "out/report.html").find("The teacher is an ensemble of 2 models"), std::string::npos);
  auto again = run_kdistill("run " + recipe(digits_recipe()) + " --out " + out() + " --force" + " --set teacher.members=2 --set export=[]");
  ASSERT_EQ(again.status, 0) << again.output;
  EXPECT_NE(again.output.find("reusing " + (dir_ / "out/teacher-2.kdm").string()), std::string::npos) << again.output;
  EXPECT_EQ(metrics()["models"]["teacher"]["test"], teacher["test"]);
  // Three members: the first two are reused, only the third trains.
  auto three = run_kdistill("run " + recipe(digits_recipe()) + " --out " + out() + " --force" + " --set teacher.members=3 --set export=[]" +
                            " --set teacher.combine=logits");
  ASSERT_EQ(three.status, 0) << three.output;
  EXPECT_NE(three.output.find("reusing " + (dir_ / "out/teacher.kdm").string()), std::string::npos) << three.output;
  EXPECT_NE(three.output.find("reusing " + (dir_ / "out/teacher-2.kdm").string()), std::string::npos) << three.output;
  EXPECT_NE(three.output.find("(seed + 2, as teacher-3)"), std::string::npos) << three.output;
  expect_refused(run_kdistill("run " + recipe(digits_recipe()) + " --out " + out() + " --force" + " --set teacher.members=0"),
                 "teacher.members: 0 is not a number of teachers (1 or more)");
  expect_refused(run_kdistill("run " + recipe(digits_recipe()) + " --out " + out() + " --force" + " --set teacher.members=3" +
                              " --set teacher.weights=[1,2]"),
                 "teacher.weights: 2 weights for 3 teachers; give one per teacher");
}

// Augmented rows are taught by a soft-label bank of views, or by the live teacher when batches mix.
TEST_F(Run, AugmentationTeachesFromABankOrALiveTeacher) {
  auto banked = run_kdistill("run " + recipe(digits_recipe("  augment: {noise: 0.1, feature_dropout: 0.05}\n  views: 3\n")) +
                             " --out " + out() + " --force");
  ASSERT_EQ(banked.status, 0) << banked.output;
  auto m = metrics();
  EXPECT_EQ(m["distill"]["augment"], "noise 0.1, feature_dropout 0.05");
  const auto& teaching = m["distill"]["teaching"];
  EXPECT_EQ(teaching["mode"], "bank") << teaching.dump();
  EXPECT_EQ(teaching["views"], 3);
  int64_t rows = m["data"]["train"].get<int64_t>();
  EXPECT_EQ(teaching["bytes"], rows * 3 * 10 * 2);  // float16 outputs of 10 classes
  EXPECT_LT(teaching["float16_max_error"].get<double>(), 0.05);
  EXPECT_GT(m["models"]["student"]["test"]["accuracy"].get<double>(), 0.6);
  EXPECT_NE(banked.output.find("teacher bank: 3 views of"), std::string::npos) << banked.output;
  // More views than the 8 epochs: the bank holds the 8 the epochs train on, and says so.
  auto extra = run_kdistill("run " + recipe(digits_recipe("  augment: noise\n  views: 12\n")) + " --out " + out() +
                            "-views --force");
  ASSERT_EQ(extra.status, 0) << extra.output;
  EXPECT_NE(extra.output.find("distill.views: 12 views for 8 epochs; the bank holds the 8 views the epochs train on"),
            std::string::npos) << extra.output;
  EXPECT_EQ(nlohmann::json::parse(read_file(out() + "-views/metrics.json"))["distill"]["teaching"]["views"], 8);
  // The report says how the student was taught.
  std::string report = read_file(out() + "/report.html");
  EXPECT_NE(report.find("each epoch's rows were views (noise 0.1, feature_dropout 0.05), taught from a soft-label bank "
                        "of the teacher's outputs on 3 views of each row, computed once before training"),
            std::string::npos);

  // The same bank as the 3 largest logits of each view and the rest's mass, over a memory limit of
  // 0 MB: in a mapped file in the run's folder, unlinked at once.
  auto topk = run_kdistill("run " + recipe(digits_recipe("  augment: {noise: 0.1, feature_dropout: 0.05}\n  views: 3\n"
                                                          "  bank: {top_k: 3, memory_mb: 0}\n")) + " --out " + out() + " --force");
  ASSERT_EQ(topk.status, 0) << topk.output;
  m = metrics();
  const auto& compact = m["distill"]["teaching"];
  EXPECT_EQ(compact["top_k"], 3) << compact.dump();
  EXPECT_EQ(compact["storage"], "mapped file");
  EXPECT_EQ(compact["bytes"], rows * 3 * (3 * 2 + 3 * 2 + 2));  // float16 logits, int16 indices, float16 rest
  double rest_mass = compact["top_k_mean_rest_mass"].get<double>();
  EXPECT_GT(rest_mass, 0.0);
  EXPECT_LT(rest_mass, 0.7);
  EXPECT_GT(compact["top_k_max_prob_error"].get<double>(), 0.0);
  EXPECT_GT(m["models"]["student"]["test"]["accuracy"].get<double>(), 0.6);
  for (const auto& entry : std::filesystem::directory_iterator(out())) {
    EXPECT_EQ(entry.path().filename().string().find("kdistill-bank"), std::string::npos) << entry.path();
  }
  // Refused once the data says how many outputs there are, before the teacher trains.
  expect_refused(run_kdistill("run " + recipe(digits_recipe("  augment: noise\n  bank: {top_k: 10}\n")) + " --out " +
                              out() + "-topk"),
                 "distill.bank.top_k: 10 is not below the teacher's 10 outputs");
  EXPECT_FALSE(std::filesystem::exists(out() + "-topk/teacher.kdm"));
  expect_refused(run_kdistill("run " + recipe(digits_recipe("  bank: {top_k: -2}\n")) + " --out " + out() + " --force"),
                 "distill.bank.top_k");
  expect_refused(run_kdistill("run " + recipe(digits_recipe("  bank: {topk: 2}\n")) + " --out " + out() + " --force"),
                 "topk");

  auto mixed = run_kdistill("run " + recipe(digits_recipe("  augment: mixup\n")) + " --out " + out() + " --force");
  ASSERT_EQ(mixed.status, 0) << mixed.output;
  EXPECT_EQ(metrics()["distill"]["teaching"]["mode"], "online");
  EXPECT_EQ(metrics()["distill"]["augment"], "mixup 0.2");
  EXPECT_NE(read_file(out() + "/report.html").find("the teacher ran on every batch of views (mixup 0.2)"), std::string::npos);

  expect_refused(run_kdistill("run " + recipe(digits_recipe("  augment: shift\n")) + " --out " + out() + " --force"),
                 "distill.augment.shift: needs images [C, H, W]; the rows here are [64]");
  expect_refused(run_kdistill("run " + recipe(digits_recipe("  augment: shift+twist\n")) + " --out " + out() + " --force"),
                 "distill.augment: \"twist\" is not one of none, shift, flip, cutout, noise, feature_dropout, mixup, cutmix");
  expect_refused(run_kdistill("run " + recipe(digits_recipe("  augment: mixup\n  views: 4\n")) + " --out " + out() + " --force"),
                 "distill.views: a bank of 4 views cannot hold mixup or cutmix mixtures; use views: online");
  expect_refused(run_kdistill("run " + recipe(digits_recipe("  views: 0\n")) + " --out " + out() + " --force"),
                 "distill.views");
  // Views of rows that are not augmented are the rows: said, and the outputs are cached once.
  auto plain = run_kdistill("run " + recipe(digits_recipe("  views: 4\n")) + " --out " + out() + " --force");
  ASSERT_EQ(plain.status, 0) << plain.output;
  EXPECT_NE(plain.output.find("distill.views: 4 has no effect without distill.augment"), std::string::npos) << plain.output;
  EXPECT_EQ(metrics()["distill"]["teaching"]["mode"], "cache");
  EXPECT_NE(read_file(out() + "/report.html").find("outputs on the training rows were computed once"), std::string::npos);
}

// The run says plainly whether distillation helped, from the validation rows and a paired test.
// A teacher that knows the task (trained on every label) helps a student that sees 60 labels; a
// random, untrained teacher as the only target hurts it.
TEST_F(Run, SaysWhetherDistillationHelpedOnValidation) {
  std::string helped_recipe = digits_recipe("  losses: [{kind: kl, weight: 0.9, temperature: 4}, {kind: ce, weight: 0.1}]\n");
  helped_recipe.replace(helped_recipe.find("  test_fraction: 0.25\n"), std::string("  test_fraction: 0.25\n").size(),
                        "  test_fraction: 0.25\n  val_fraction: 0.25\n  labeled: 60\n");
  helped_recipe.replace(helped_recipe.find("epochs: 8, batch_size: 64"), std::string("epochs: 8").size(), "epochs: 30");
  auto helped = run_kdistill("run " + recipe(helped_recipe) + " --out " + out() + " --force");
  ASSERT_EQ(helped.status, 0) << helped.output;
  auto v = metrics()["distill"]["validation"];
  EXPECT_EQ(v["verdict"], "helped") << v.dump();
  EXPECT_EQ(v["test"], "mcnemar");
  EXPECT_LT(v["p_value"].get<double>(), 0.05);
  EXPECT_GT(v["only_student_right"].get<int64_t>(), v["only_baseline_right"].get<int64_t>());
  EXPECT_GT(v["student"].get<double>(), v["baseline"].get<double>());
  EXPECT_NE(helped.output.find("validation rows: distilled "), std::string::npos) << helped.output;
  EXPECT_NE(helped.output.find("): distillation helped"), std::string::npos) << helped.output;
  EXPECT_NE(read_file(dir_ / "out/report.html").find("<b>distillation helped</b>"), std::string::npos);

  auto teacher = (dir_ / "random.pt").string();
  auto python = test::run_python("import torch\ntorch.manual_seed(0)\ntorch.jit.script(torch.nn.Linear(64, 10)).save('" +
                                 teacher + "')\n");
  ASSERT_EQ(python.status, 0) << python.output;
  std::string hurt_recipe = digits_recipe("  losses: [{kind: kl, weight: 1.0, temperature: 1}]\n");
  auto start = hurt_recipe.find("teacher:");
  hurt_recipe.replace(start, hurt_recipe.find("student:") - start, "teacher:\n  path: " + teacher + "\n");
  auto hurt = run_kdistill("run " + recipe(hurt_recipe) + " --out " + (dir_ / "hurt").string());
  ASSERT_EQ(hurt.status, 0) << hurt.output;
  auto w = nlohmann::json::parse(read_file(dir_ / "hurt/metrics.json"))["distill"]["validation"];
  EXPECT_EQ(w["verdict"], "hurt") << w.dump();
  EXPECT_LT(w["p_value"].get<double>(), 0.05);
  EXPECT_NE(hurt.output.find("distillation did not help: the baseline student is the better model"), std::string::npos)
      << hurt.output;
}

// Regression: a paired bootstrap of the RMSE difference over the validation rows of every fold, pooled.
TEST_F(Run, RegressionVerdictIsAPairedBootstrapOverEveryFold) {
  std::string recipe_file = std::string(KD_SOURCE_DIR) + "/examples/diabetes-regression.yaml";
  auto r = run_kdistill("run " + recipe_file + " --out " + out() + " --force" +
                        " --set teacher.train.epochs=20 --set distill.epochs=20 --set data.folds=3");
  ASSERT_EQ(r.status, 0) << r.output;
  auto m = metrics();
  auto v = m["distill"]["validation"];
  EXPECT_EQ(v["test"], "paired bootstrap") << v.dump();
  for (const auto& fold : {"fold-1", "fold-2", "fold-3"}) EXPECT_TRUE(std::filesystem::exists(dir_ / "out" / fold));
  int64_t val_rows = m["data"]["val"].get<int64_t>();
  EXPECT_GE(v["rows"].get<int64_t>(), 3 * val_rows - 3);  // every fold's validation rows (folds differ by one row)
  double low = v["low"], high = v["high"], difference = v["difference"];
  EXPECT_LE(low, difference);
  EXPECT_LE(difference, high);
  std::string expected = low > 0 ? "hurt" : high < 0 ? "helped" : "no significant difference";
  EXPECT_EQ(v["verdict"], expected);
  EXPECT_NE(r.output.find("validation rows: RMSE difference distilled - baseline"), std::string::npos) << r.output;
}

TEST_F(Run, TeacherWithTheWrongOutputWidth) {
  // A real TorchScript teacher from PyTorch with 7 outputs for the 10 digit classes.
  auto teacher = (dir_ / "teacher.pt").string();
  int status = std::system(("/usr/bin/python3 -c \"import torch; torch.jit.script(torch.nn.Linear(64, 7)).save('" +
                            teacher + "')\"").c_str());
  ASSERT_EQ(status, 0);
  std::string text = digits_recipe();
  auto start = text.find("teacher:");
  text.replace(start, text.find("student:") - start, "teacher:\n  path: " + teacher + "\n");
  expect_refused(run_kdistill("run " + recipe(text) + " --out " + out() + " --force"),
                 "outputs have shape [2, 7], expected [N, 10] (classes in the data); a teacher of other classes needs "
                 "teacher.classes (a list, or learned)");
}

// A teacher of all ten digits teaching a student of three of them: the teacher's file names its
// classes, so they are mapped by name; or teacher.classes maps them (merging where a list says so).
TEST_F(Run, ATeacherOfOtherClassesIsMappedOntoTheData) {
  ASSERT_EQ(run_kdistill("run " + recipe(digits_recipe()) + " --out " + out() + " --force").status, 0);
  auto teacher = (dir_ / "teacher10.kdm").string();
  std::filesystem::copy_file(dir_ / "out/teacher.kdm", teacher);
  auto subset = (dir_ / "three.csv").string();
  auto python = run_python("import csv, gzip\n"
                           "rows = list(csv.reader(gzip.open('" + kSklearn + "digits.csv.gz', 'rt')))\n"
                           "out = csv.writer(open('" + subset + "', 'w'))\n"
                           "out.writerow(['p%d' % i for i in range(64)] + ['digit'])\n"
                           "out.writerows(r for r in rows if r[-1] in ('3', '5', '8'))\n");
  ASSERT_EQ(python.status, 0) << python.output;
  std::string text = digits_recipe();
  text.replace(text.find("train: "), text.find("\n", text.find("train: ")) - text.find("train: "), "train: " + subset);
  auto start = text.find("teacher:");
  auto three = text;
  three.replace(start, text.find("student:") - start, "teacher:\n  path: " + teacher + "\n");
  std::filesystem::remove_all(dir_ / "out");
  auto r = run_kdistill("run " + recipe(three) + " --out " + out() + " --force");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("10 classes mapped onto the data's 3"), std::string::npos) << r.output;
  auto m = metrics();
  EXPECT_EQ(m["teacher_input"]["classes"], nlohmann::json::parse("[[3], [5], [8]]"));
  EXPECT_EQ(m["teacher_input"]["class_mapping"], "names");
  EXPECT_GT(m["models"]["teacher"]["test"]["accuracy"].get<double>(), 0.9);

  auto mapped = three;
  mapped.replace(mapped.find("student:"), 0, "  classes: [\"3\", 5, [8, 9]]\n");
  std::filesystem::remove_all(dir_ / "out");
  ASSERT_EQ(run_kdistill("run " + recipe(mapped) + " --out " + out() + " --force").status, 0);
  EXPECT_EQ(metrics()["teacher_input"]["classes"], nlohmann::json::parse("[[3], [5], [8, 9]]"));
  EXPECT_EQ(metrics()["teacher_input"]["class_mapping"], "recipe");

  // Learned: a projection of the teacher's log-probabilities fitted on the labelled rows; the report says so.
  auto learned = three;
  learned.replace(learned.find("student:"), 0, "  classes: learned\n");
  std::filesystem::remove_all(dir_ / "out");
  r = run_kdistill("run " + recipe(learned) + " --out " + out() + " --force");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("its 10 classes mapped onto the run's 3 by a projection learned on"), std::string::npos)
      << r.output;
  m = metrics();
  EXPECT_EQ(m["teacher_input"]["class_mapping"], "learned");
  EXPECT_GT(m["teacher_input"]["class_projection"]["accuracy"].get<double>(), 0.9);
  EXPECT_GT(m["models"]["teacher"]["test"]["accuracy"].get<double>(), 0.9);
  EXPECT_NE(read_file(dir_ / "out/report.html").find("by a projection of its log-probabilities"), std::string::npos);

  auto too_few = three;
  too_few.replace(too_few.find("student:"), 0, "  classes: [3, 5]\n");
  expect_refused(run_kdistill("run " + recipe(too_few) + " --out " + out() + " --force"),
                 "teacher.classes: 2 entries, expected one for each of the data's 3 classes (3, 5, 8)");
  auto unknown = three;
  unknown.replace(unknown.find("student:"), 0, "  classes: [3, five, 8]\n");
  expect_refused(run_kdistill("run " + recipe(unknown) + " --out " + out() + " --force"),
                 "teacher.classes[1]: \"five\" is not a class of " + teacher);
  auto out_of_range = three;
  out_of_range.replace(out_of_range.find("student:"), 0, "  classes: [3, 5, 10]\n");
  expect_refused(run_kdistill("run " + recipe(out_of_range) + " --out " + out() + " --force"),
                 "teacher.classes[2]: 10 is not an output of " + teacher + ", which has 10 (0..9)");
}

}  // namespace
}  // namespace kd::test
