// SIGKILL anywhere in a run, then --resume: the resumed run ends with the metrics of an
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

class Crash : public RunFolder {};

TEST_F(Crash, KilledAnywhereAResumedRunEndsTheSame) {
  std::string r = recipe(kRecipe);
  const int kills = 24;
  auto python = run_python(
      "import json, os, random, subprocess, time\n"
      "d = '" + dir_.path().string() + "'\n"
      "cmd = ['" KD_CLI_PATH "', '--threads', '1', 'run', '" + r + "', '--out']\n"
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
  ASSERT_EQ(python.status, 0) << python.output;
  auto report = nlohmann::json::parse(python.output.substr(python.output.rfind("{\"seconds\"")));
  auto whole = nlohmann::json::parse(read_file(dir_ / "whole/metrics.json"));
  std::map<std::string, int> phases;
  for (int k = 0; k < kills; ++k) {
    const auto& result = report["results"][k];
    std::set<std::string> files;
    for (const auto& f : result["files"]) files.insert(f.get<std::string>());
    std::string phase = phase_of(files);
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

}  // namespace
}  // namespace kd::test
