// `kdistill auto` end to end on breast_cancer: trials, the front, the chosen student retrained
// by `run` to the same validation numbers, an impossible target, --resume and bad input.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <set>

#include "cli/cli_util.h"
#include "kd/util/fs.h"
#include "kd/util/strings.h"
#include "test_util.h"

namespace kd::test {
namespace {

const std::string kBreastCancer = "/usr/lib/python3/dist-packages/sklearn/datasets/data/breast_cancer.csv";

std::string cancer_recipe(const std::string& search = "") {
  return "task: classification\nseed: 2\n"
         "data:\n  train: " + kBreastCancer + "\n  target: -1\n  test_fraction: 0.2\n  val_fraction: 0.2\n"
         "teacher:\n  model: {arch: mlp, hidden: [64]}\n  train: {epochs: 15, batch_size: 32, optimizer: {name: adam, lr: 0.003}}\n"
         "student:\n  model: {arch: mlp, hidden: [8]}\n"
         "distill:\n  epochs: 9\n  batch_size: 32\n  optimizer: {name: adam, lr: 0.01}\n"
         "search:\n  startup_trials: 4\n" + search;
}

class Auto : public ::testing::Test {
 protected:
  std::string recipe(const std::string& text, const std::string& name = "recipe.yaml") {
    auto path = (dir_ / name).string();
    write_file_atomic(path, text);
    return path;
  }
  std::string out() const { return (dir_ / "out").string(); }
  nlohmann::json json(const std::string& name) const { return nlohmann::json::parse(read_file(dir_ / "out" / name)); }
  std::vector<std::string> csv_lines(const std::string& name) const { return split(trim(read_file(dir_ / "out" / name)), '\n'); }
  TempDir dir_;
};

// The student's best validation accuracy (percent) in the run's epochs.csv.
double best_student_val_accuracy(const std::string& epochs_csv) {
  double best = -1;
  for (const auto& line : split(epochs_csv, '\n')) {
    if (!starts_with(line, "student,")) continue;
    auto cells = split(line, ',');
    for (const auto& kv : split(cells[6], ';')) {
      if (starts_with(kv, "accuracy=")) best = std::max(best, 100 * std::stod(kv.substr(9)));
    }
  }
  return best;
}

TEST_F(Auto, SearchesPrunesChoosesAndRetrainsTheChosenStudent) {
  auto r = run_kdistill("auto " + recipe(cancer_recipe()) + " --budget 10m --trials 8 --out " + out());
  ASSERT_EQ(r.status, 0) << r.output;
  auto lines = csv_lines("trials.csv");
  ASSERT_EQ(lines.size(), 9u) << read_file(dir_ / "out/trials.csv");
  EXPECT_TRUE(starts_with(lines[0], "trial,status,epochs,val_accuracy,"));
  auto s = json("search.json");
  EXPECT_EQ(s["trials"], 8);
  EXPECT_EQ(s["rungs"], nlohmann::json({1, 3}));
  EXPECT_EQ(s["target"], "accuracy >= teacher - 1.0");
  // Eight trials: some went the full 9 epochs, and successive halving stopped some early.
  EXPECT_GE(s["status_counts"].value("complete", 0), 1) << s.dump();
  EXPECT_GE(s["status_counts"].value("pruned", 0), 1) << s.dump();
  int64_t pruned_epochs = 0;
  for (const auto& p : s["points"]) {
    if (p["status"] == "pruned") pruned_epochs = std::max<int64_t>(pruned_epochs, p["epochs"]);
  }
  EXPECT_LE(pruned_epochs, 3);
  // The front is of complete trials, no one beaten in both validation accuracy and size.
  ASSERT_FALSE(s["front"].empty());
  const auto& chosen = s["chosen"];
  ASSERT_EQ(chosen["status"], "complete");
  EXPECT_NEAR(s["threshold"].get<double>(), s["teacher_val"].get<double>() - 1.0, 1e-9);
  if (s["target_reached"].get<bool>()) {
    // The smallest complete trial that meets the target.
    for (const auto& p : s["points"]) {
      if (p["status"] == "complete" && p["meets_target"].get<bool>()) {
        EXPECT_GE(p["params"], chosen["params"]);
      }
    }
  }
  // The final run is the chosen trial's recipe: same student size, same validation accuracy.
  auto m = json("metrics.json");
  EXPECT_EQ(m["models"]["student"]["params"], chosen["params"]);
  EXPECT_TRUE(m.contains("search"));
  // (epochs.csv keeps 6 significant digits)
  EXPECT_NEAR(best_student_val_accuracy(read_file(dir_ / "out/epochs.csv")), chosen["value"].get<double>(), 1e-3);
  auto recipe_as_run = read_file(dir_ / "out/recipe.yaml");
  for (const auto& set : chosen["overrides"]) {
    auto key = split(set.get<std::string>(), '=')[0];
    EXPECT_NE(recipe_as_run.find(split(key, '.').back()), std::string::npos) << key;
  }
  auto html = read_file(dir_ / "out/report.html");
  EXPECT_NE(html.find("<section id=\"search\">"), std::string::npos);
  EXPECT_NE(html.find("Pareto front"), std::string::npos);
  EXPECT_NE(r.output.find("chosen: trial"), std::string::npos) << r.output;
}

TEST_F(Auto, ImpossibleTargetSaysSoAndReturnsTheBestFound) {
  auto r = run_kdistill("auto " + recipe(cancer_recipe("  epochs: 3\n")) +
                        " --budget 5m --trials 4 --no-final --target 'accuracy >= 100.5' --out " + out());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("target not reached"), std::string::npos) << r.output;
  auto s = json("search.json");
  EXPECT_FALSE(s["target_reached"].get<bool>());
  EXPECT_FALSE(s["front"].empty());
  // The best found: no complete trial has a higher validation accuracy.
  for (const auto& p : s["points"]) {
    if (p["status"] == "complete") {
      EXPECT_LE(p["value"].get<double>(), s["chosen"]["value"].get<double>());
    }
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out/metrics.json"));  // --no-final
}

TEST_F(Auto, StopsWhenTheSmallestStudentMeetsTheTarget) {
  // Width and depth at their smallest (1 hidden unit): the first complete trial that meets an easy target ends it.
  auto r = run_kdistill("auto " + recipe(cancer_recipe("  epochs: 3\n  width: [0.125, 0.13]\n  depth: 1\n")) +
                        " --budget 5m --trials 30 --no-final --target 'accuracy >= teacher - 30' --out " + out());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("nothing smaller to find"), std::string::npos) << r.output;
  auto s = json("search.json");
  EXPECT_EQ(s["stopped_by"], "smallest");
  EXPECT_LT(s["trials"].get<int64_t>(), 30);
  EXPECT_EQ(s["chosen"]["params"], 30 * 1 + 1 + 1 * 2 + 2);  // 30 features -> 1 hidden unit -> 2 classes
}

TEST_F(Auto, WithOneStudentSizeTheBestScoreWins) {
  // Width and depth fixed: no trial is skipped and the search does not stop at the first that meets the target.
  auto r = run_kdistill("auto " + recipe(cancer_recipe("  epochs: 3\n  width: 0.5\n  depth: 1\n")) +
                        " --budget 5m --trials 5 --no-final --target 'accuracy >= teacher - 30' --out " + out());
  ASSERT_EQ(r.status, 0) << r.output;
  auto s = json("search.json");
  EXPECT_EQ(s["trials"], 5);
  EXPECT_EQ(s["stopped_by"], "trials");
  for (const auto& p : s["points"]) {
    EXPECT_NE(p["status"], "skipped");
    if (p["status"] == "complete") {
      EXPECT_LE(p["value"].get<double>(), s["chosen"]["value"].get<double>());
    }
  }
}

// With per-row augmentation the trials are taught by one soft-label bank of consistent views, made
// once, not by a live teacher on every batch of every trial.
TEST_F(Auto, TrialsShareOneSoftLabelBank) {
  auto text = cancer_recipe();
  text.insert(text.find("search:"), "  augment: noise\n");
  auto r = run_kdistill("auto " + recipe(text) + " --budget 5m --trials 4 --out " + out());
  ASSERT_EQ(r.status, 0) << r.output;
  auto s = json("search.json");
  const auto& teaching = s["teaching"];
  EXPECT_EQ(teaching["mode"], "bank") << teaching.dump();
  EXPECT_EQ(teaching["views"], 8);  // min(epochs, 8), as `kdistill run` would
  EXPECT_GT(teaching["seconds"].get<double>(), 0.0);
  EXPECT_EQ(s["trials"], 4);
  // Made once; the final retraining (9 epochs, 8 views) replays it too.
  size_t made = 0;
  for (size_t at = r.output.find("teacher bank: 8 views"); at != std::string::npos;
       at = r.output.find("teacher bank: 8 views", at + 1)) {
    ++made;
  }
  EXPECT_EQ(made, 1u) << r.output;
  EXPECT_NE(r.output.find("teacher bank: the search's bank of 8 views"), std::string::npos) << r.output;
  EXPECT_EQ(json("metrics.json")["distill"]["teaching"]["mode"], "bank");
}

TEST_F(Auto, ResumeContinuesWithoutRepeatingFinishedTrials) {
  auto path = recipe(cancer_recipe("  epochs: 3\n"));
  auto first = run_kdistill("auto " + path + " --budget 5m --trials 3 --no-final --out " + out());
  ASSERT_EQ(first.status, 0) << first.output;
  auto before = json("trials.json")["trials"];
  ASSERT_EQ(before.size(), 3u);
  auto second = run_kdistill("auto " + path + " --budget 5m --trials 5 --no-final --resume --out " + out());
  ASSERT_EQ(second.status, 0) << second.output;
  EXPECT_NE(second.output.find("resuming after 3 trials"), std::string::npos) << second.output;
  auto after = json("trials.json")["trials"];
  ASSERT_EQ(after.size(), 5u);
  // The first three are the records of the first search, seconds included: not run again.
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(after[i], before[i]) << i;
  // And the teacher was reused, not trained again.
  EXPECT_NE(second.output.find("reusing"), std::string::npos);
  // Same seed and --trials from scratch: the same five configurations.
  auto fresh_out = (dir_ / "fresh").string();
  auto fresh = run_kdistill("auto " + path + " --budget 5m --trials 5 --no-final --out " + fresh_out);
  ASSERT_EQ(fresh.status, 0) << fresh.output;
  auto again = nlohmann::json::parse(read_file(dir_ / "fresh/trials.json"))["trials"];
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(again[i]["config"], after[i]["config"]) << i;
  // A different recipe cannot resume this search.
  auto changed = recipe(cancer_recipe("  epochs: 4\n"), "changed.yaml");
  auto refused = run_kdistill("auto " + changed + " --budget 5m --resume --no-final --out " + out());
  EXPECT_EQ(refused.status, 2);
  EXPECT_NE(refused.output.find("--resume: "), std::string::npos) << refused.output;
}

TEST_F(Auto, WorkersShareOneLedger) {
  // An unreachable target: the search runs to the end of the budget, long enough for the second worker.
  auto r = run_kdistill("auto " + recipe(cancer_recipe("  epochs: 30\n")) +
                        " --budget 20s --workers 2 --no-final --target 'accuracy >= 100.5' --out " + out());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("search: 2 worker processes of 1 thread each"), std::string::npos) << r.output;
  auto trials = json("trials.json")["trials"];
  std::set<int64_t> ids, workers;
  for (const auto& t : trials) {
    ids.insert(t["trial"].get<int64_t>());
    workers.insert(t["worker"].get<int64_t>());
    EXPECT_NE(t["status"], "running") << t.dump();
  }
  // Numbered without gaps or repeats across both processes, and both ran trials.
  EXPECT_EQ(ids.size(), trials.size());
  EXPECT_EQ(*ids.rbegin(), static_cast<int64_t>(trials.size()) - 1);
  EXPECT_EQ(workers, (std::set<int64_t>{0, 1}));
  EXPECT_EQ(json("search.json")["trials"], trials.size());
}

TEST_F(Auto, MaxParamsLeavesLargeStudentsUntrained) {
  auto r = run_kdistill("auto " + recipe(cancer_recipe("  epochs: 3\n")) +
                        " --budget 5m --trials 6 --no-final --max-params 200 --out " + out());
  ASSERT_EQ(r.status, 0) << r.output;
  auto s = json("search.json");
  for (const auto& p : s["points"]) {
    if (p["params"].get<int64_t>() > 200) EXPECT_EQ(p["status"], "infeasible") << p.dump();
    else EXPECT_NE(p["status"], "infeasible") << p.dump();
  }
  EXPECT_LE(s["chosen"]["params"].get<int64_t>(), 200);
}

TEST_F(Auto, RecipeStagesGiveWayToTheSearchedObjective) {
  // Staged FitNets in the recipe read the student's second hidden layer; the search keeps one layer,
  // which has no fc2. Trials and the final retraining train one stage on the searched objective.
  std::string text = cancer_recipe("  epochs: 3\n  width: 1\n  depth: 1\n");
  auto edit = [&text](const std::string& from, const std::string& to) {
    auto at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
  };
  edit("hidden: [8]}", "hidden: [8, 8]}");
  edit("distill:\n", "distill:\n  stages: [{epochs: 2, losses: [{kind: hint, student: fc2, teacher: fc1}]}, {epochs: 7}]\n");
  auto r = run_kdistill("auto " + recipe(text) + " --budget 5m --trials 2 --out " + out());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(json("search.json")["chosen"]["overrides"].back(), "distill.stages=null");
  auto m = json("metrics.json");
  EXPECT_EQ(m["models"]["student"]["params"], 30 * 8 + 8 + 8 * 2 + 2);  // one hidden layer of 8
  EXPECT_FALSE(m["distill"].contains("stages")) << m["distill"].dump();
}

TEST_F(Auto, BadInputIsOneLineNamingTheProblem) {
  auto path = recipe(cancer_recipe());
  auto r = run_kdistill("auto " + path + " --budget soon --out " + out());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("--budget: \"soon\" is not a duration"), std::string::npos) << r.output;
  r = run_kdistill("auto " + path + " --budget 1m --target 'speed >= 3' --out " + out());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("--target"), std::string::npos) << r.output;
  r = run_kdistill("auto " + recipe(cancer_recipe("  width: [4, 2]\n"), "bad.yaml") + " --budget 1m --out " + out());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("search.width: the range [4, 2] is empty"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace kd::test
