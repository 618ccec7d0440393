// SIGKILL anywhere in a run or a search, then --resume: the resumed run ends with the metrics of an
// uninterrupted one. No hook in kdistill: the kill times are spread over an uninterrupted run's wall
// time (jittered by a seeded generator), and the files in the folder at the kill tell which phase
// it hit.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <map>
#include <set>

#include "cli/cli_util.h"

namespace kd::test {
namespace {

namespace fs = std::filesystem;

const char* kRecipe =
    "task: classification\nseed: 1\n"
    "data:\n  train: /usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz\n  test_fraction: 0.25\n"
    "teacher:\n  model: {arch: mlp, hidden: [64]}\n  train: {epochs: 30, batch_size: 64, optimizer: {name: adam, lr: 0.003}}\n"
    "student:\n  model: {arch: mlp, hidden: [8]}\n"
    "distill:\n  epochs: 30\n  batch_size: 64\n  optimizer: {name: adam, lr: 0.01}\n"
    "export: [torchscript, onnx, tfjs]\n";

// The phase a killed run was in, from the files it had written.
std::string phase_of(const std::set<std::string>& files) {
  if (files.count("metrics.json")) return "finished";
  if (files.count("student.kdm")) return "export and report";
  if (files.count("baseline.kdm")) return "student";
  if (files.count("teacher.kdm")) return "teacher outputs and baseline";
  if (files.count("teacher.ckpt")) return "teacher training";
  return "start and data";
}

// Runs `kdistill --threads 1 ARGS --out DIR/whole`, then `kills` times `... --out DIR/kK` killed with
// SIGKILL after a delay spread over the whole run's time (seeded jitter) and the same command with
// --resume: {"seconds": the whole run's, "results": [{delay, files (names in the folder at the kill),
// status and output of the resumed run}]}.
nlohmann::json kill_and_resume(const std::filesystem::path& dir, const std::string& args, int kills) {
  auto python = run_python(
      "import json, os, random, shlex, subprocess, time\n"
      "d = '" + dir.string() + "'\n"
      "cmd = ['" KD_CLI_PATH "', '--threads', '1'] + shlex.split(" + nlohmann::json(args).dump() + ") + ['--out']\n"
      "start = time.time()\n"
      "subprocess.run(cmd + [d + '/whole'], check=True, capture_output=True)\n"
      "whole = time.time() - start\n"
      "rng = random.Random(7)\n"
      "results = []\n"
      "for k in range(" + std::to_string(kills) + "):\n"
      "    out = f'{d}/k{k}'\n"
      "    delay = whole * (k + rng.random()) / " + std::to_string(kills) + "\n"
      "    p = subprocess.Popen(cmd + [out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
      "    time.sleep(delay)\n"
      "    p.kill()\n"
      "    p.wait()\n"
      "    files = sorted(f for _, _, names in os.walk(out) for f in names) if os.path.isdir(out) else []\n"
      "    resumed = subprocess.run(cmd + [out, '--resume'], capture_output=True, text=True)\n"
      "    results.append({'delay': delay, 'files': files, 'status': resumed.returncode,\n"
      "                    'output': resumed.stdout[-1500:] + resumed.stderr[-1500:]})\n"
      "print(json.dumps({'seconds': whole, 'results': results}))\n");
  EXPECT_EQ(python.status, 0) << python.output;
  if (python.status != 0) return {{"seconds", 0.0}, {"results", nlohmann::json::array()}};
  return nlohmann::json::parse(python.output.substr(python.output.rfind("{\"seconds\"")));
}

std::set<std::string> files_of(const nlohmann::json& result) {
  std::set<std::string> files;
  for (const auto& f : result["files"]) files.insert(f.get<std::string>());
  return files;
}

class Crash : public RunFolder {};

TEST_F(Crash, KilledAnywhereAResumedRunEndsTheSame) {
  std::string r = recipe(kRecipe);
  const int kills = 24;
  auto report = kill_and_resume(dir_.path(), "run " + r, kills);
  ASSERT_EQ(report["results"].size(), static_cast<size_t>(kills));
  auto whole = nlohmann::json::parse(read_file(dir_ / "whole/metrics.json"));
  std::map<std::string, int> phases;
  for (int k = 0; k < kills; ++k) {
    const auto& result = report["results"][k];
    std::string phase = phase_of(files_of(result));
    ++phases[phase];
    SCOPED_TRACE("kill " + std::to_string(k) + " after " + std::to_string(result["delay"].get<double>()) + " s, in " + phase);
    ASSERT_EQ(result["status"], 0) << result["output"];
    auto resumed = nlohmann::json::parse(read_file(dir_ / ("k" + std::to_string(k)) / "metrics.json"));
    for (const char* model : {"teacher", "baseline", "student"}) {
      EXPECT_EQ(resumed["models"][model]["test"], whole["models"][model]["test"]) << model;
      EXPECT_EQ(resumed["models"][model]["training"]["steps"], whole["models"][model]["training"]["steps"]) << model;
      EXPECT_EQ(resumed["models"][model]["training"]["best_epoch"], whole["models"][model]["training"]["best_epoch"])
          << model;
    }
    for (const char* file : {"student.onnx", "student.torchscript.pt", "student.tfjs/model.json", "report.html"}) {
      EXPECT_TRUE(std::filesystem::exists(dir_ / ("k" + std::to_string(k)) / file)) << file;
    }
  }
  std::string seen;
  for (const auto& [phase, count] : phases) seen += phase + ": " + std::to_string(count) + "; ";
  std::cout << "uninterrupted run " << report["seconds"].get<double>() << " s; kills by phase: " << seen << "\n";
  // The kills spread over the run reach most of its phases (the shortest may be missed on a fast machine).
  EXPECT_GE(phases.size(), 4u) << seen;
}

// kdistill auto likewise: killed at points spread over a search of 6 trials and its final run, each
// resumed: the same trials (ids, statuses, settings, scores, epochs) and the same final metrics.
TEST_F(Crash, AutoKilledAnywhereResumesToTheSameSearch) {
  const int kills = 12;
  auto report = kill_and_resume(dir_.path(),
                                "auto " KD_SOURCE_DIR "/examples/breast-cancer-auto.yaml --budget 5m --trials 6 "
                                "--set teacher.train.epochs=10 --set data.folds=0",
                                kills);
  ASSERT_EQ(report["results"].size(), static_cast<size_t>(kills));
  auto trials_of = [](const std::filesystem::path& out) {
    nlohmann::json kept = nlohmann::json::array();
    for (const auto& t : nlohmann::json::parse(read_file(out / "trials.json"))["trials"]) {
      kept.push_back({t["trial"], t["status"], t["overrides"], t["value"], t["epochs"]});
    }
    return kept;
  };
  auto whole_trials = trials_of(dir_ / "whole");
  auto whole = nlohmann::json::parse(read_file(dir_ / "whole/metrics.json"));
  std::set<std::string> phases;
  for (int k = 0; k < kills; ++k) {
    const auto& result = report["results"][k];
    auto files = files_of(result);
    phases.insert(files.count("metrics.json")   ? "finished"
                  : files.count("search.json")  ? "final run"
                  : files.count("teacher.kdm")  ? "search"
                  : files.count("teacher.ckpt") ? "teacher"
                                                : "start");
    SCOPED_TRACE("kill " + std::to_string(k) + " after " + std::to_string(result["delay"].get<double>()) + " s");
    ASSERT_EQ(result["status"], 0) << result["output"];
    fs::path out = dir_ / ("k" + std::to_string(k));
    EXPECT_EQ(trials_of(out), whole_trials);
    auto resumed = nlohmann::json::parse(read_file(out / "metrics.json"));
    EXPECT_EQ(resumed["models"]["student"]["test"], whole["models"]["student"]["test"]);
    EXPECT_EQ(resumed["models"]["student"]["params"], whole["models"]["student"]["params"]);
  }
  std::string seen;
  for (const auto& phase : phases) seen += phase + "; ";
  std::cout << "uninterrupted search " << report["seconds"].get<double>() << " s; phases killed in: " << seen << "\n";
  EXPECT_GE(phases.size(), 3u) << seen;
}

}  // namespace
}  // namespace kd::test
