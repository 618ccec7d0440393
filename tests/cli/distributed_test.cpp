// Data-parallel runs over several processes on one host (c10d's TCPStore and Gloo on 127.0.0.1):
// two ranks train the student one process trains, rank 0 alone writes, a lost rank stops the other
// within the timeout and a relaunch resumes; mismatched ranks are refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <csignal>
#include <set>

#include "cli/cli_util.h"
#include "data/python_helper.h"
#include "kd/util/fs.h"

namespace kd::test {
namespace {

namespace fs = std::filesystem;

// A port of this test process's own, so that tests running side by side do not meet: 20 ports a
// process (offsets 0-19) in 20000-31999, below the ephemeral ports the kernel hands out for outgoing
// connections (32768 up) and apart from the gradient-bucket test's (32000-32699). Two test processes
// share none unless their pids agree modulo 600 (a stride of 7 with offsets up to 16, as before, made
// processes 1 or 2 pids apart meet).
std::string port(int offset) { return std::to_string(20000 + (getpid() % 600) * 20 + offset); }

// Digits with a dropout-free teacher (dropout draws masks per rank): every step is the same sum on
// one or two processes.
std::string digits_recipe(int student_epochs = 6) {
  return "task: classification\nseed: 3\n"
         "data:\n  format: csv\n  train: /usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz\n"
         "  target: -1\n  test_fraction: 0.2\n"
         "teacher:\n  model: {arch: mlp, hidden: [64]}\n  train: {epochs: 4, batch_size: 32, optimizer: {name: adam, lr: 0.003}}\n"
         "student:\n  model: {arch: mlp, hidden: [16]}\n"
         "distill:\n  losses: [{kind: kl, weight: 0.7, temperature: 3}, {kind: ce, weight: 0.3}]\n"
         "  epochs: " + std::to_string(student_epochs) + "\n  batch_size: 32\n  optimizer: {name: adam, lr: 0.01}\n"
         "export: [torchscript]\n";
}

std::string cli() { return std::string(KD_CLI_PATH) + " --threads 1"; }

// `kdistill launch --nproc 2` of `command` with its rendezvous at 127.0.0.1:`port`.
CommandResult launch_two(const std::string& port, const std::string& command) {
  return run_shell(cli() + " launch --nproc 2 --master 127.0.0.1:" + port + " -- " + command);
}

// The teacher's, baseline's and student's test metrics are the same in both metrics.json.
void expect_same_test_metrics(const nlohmann::json& a, const nlohmann::json& b) {
  for (const char* model : {"teacher", "baseline", "student"}) {
    EXPECT_EQ(a["models"][model]["test"], b["models"][model]["test"]) << model;
  }
}

// Starts ranks 0 and 1 of a group of two at 127.0.0.1:`port`, each running `command` (a list of Python
// strings, e.g. "'run', 'r.yaml'"), waits until rank 1's log (after `after`, when given) shows `shown`,
// kills rank 1 with SIGKILL and waits for rank 0: {"status": its exit status, "seconds": after the kill}.
// The ranks' logs are DIR/rank0.log and DIR/rank1.log.
nlohmann::json kill_rank_one(const fs::path& dir, const std::string& port, const std::string& command,
                             const std::string& shown, const std::string& after = "") {
  auto python = run_python(
      "import json, signal, subprocess, time\n"
      "d = '" + dir.string() + "'\n"
      "cmd = lambda rank: ['" KD_CLI_PATH "', '--threads', '1', '--rank', str(rank), '--world-size', '2',\n"
      "                    '--master-port', '" + port + "', " + command + "]\n"
      "logs = [open(f'{d}/rank{r}.log', 'w') for r in (0, 1)]\n"
      "ranks = [subprocess.Popen(cmd(r), stdout=logs[r], stderr=subprocess.STDOUT) for r in (0, 1)]\n"
      "deadline = time.time() + 300\n"
      "after = " + nlohmann::json(after).dump() + "\n"
      "def log(): text = open(f'{d}/rank1.log').read(); return text.split(after)[-1] if after else text\n"
      "while " + nlohmann::json(shown).dump() + " not in log():\n"
      "    assert time.time() < deadline and ranks[1].poll() is None, open(f'{d}/rank1.log').read()\n"
      "    time.sleep(0.02)\n"
      "ranks[1].send_signal(signal.SIGKILL)\n"
      "start = time.time()\n"
      "status = ranks[0].wait(timeout=300)\n"
      "print(json.dumps({'status': status, 'seconds': time.time() - start}))\n");
  EXPECT_EQ(python.status, 0) << python.output;
  if (python.status != 0) return {{"status", -1}, {"seconds", 0.0}};
  return nlohmann::json::parse(python.output.substr(python.output.rfind("{\"status\"")));
}

class Distributed : public RunFolder {};

TEST_F(Distributed, TwoRanksTrainWhatOneProcessTrains) {
  std::string r = recipe(digits_recipe());
  auto one = run_shell(cli() + " run " + r + " --out " + (dir_ / "one").string());
  ASSERT_EQ(one.status, 0) << one.output;
  auto two = run_shell(cli() + " launch --nproc 2 --master 127.0.0.1:" + port(0) + " -- run " + r + " --out " +
                   (dir_ / "two").string());
  ASSERT_EQ(two.status, 0) << two.output;
  EXPECT_NE(two.output.find("rank 1/2: student epoch 6/6"), std::string::npos) << two.output;
  auto m1 = nlohmann::json::parse(read_file(dir_ / "one/metrics.json"));
  auto m2 = nlohmann::json::parse(read_file(dir_ / "two/metrics.json"));
  for (const char* model : {"teacher", "baseline", "student"}) {
    EXPECT_EQ(m1["models"][model]["test"]["accuracy"], m2["models"][model]["test"]["accuracy"]) << model;
    EXPECT_NEAR(m1["models"][model]["test"]["nll"].get<double>(), m2["models"][model]["test"]["nll"].get<double>(), 1e-5)
        << model;
  }
  EXPECT_EQ(m1["distill"]["epochs_run"], m2["distill"]["epochs_run"]);
  // The students' parameters, from their TorchScript files.
  auto same = run_python("import torch\n"
                         "a = torch.jit.load('" + (dir_ / "one/student.torchscript.pt").string() + "').state_dict()\n"
                         "b = torch.jit.load('" + (dir_ / "two/student.torchscript.pt").string() + "').state_dict()\n"
                         "assert a.keys() == b.keys()\n"
                         "d = max((a[k] - b[k]).abs().max().item() for k in a)\n"
                         "print('largest parameter difference', d)\n"
                         "assert d < 1e-5, d\n");
  EXPECT_EQ(same.status, 0) << same.output;
  // With a feature term: each rank caches the teacher's outputs and taps of its own rows only.
  std::string hint = " --set 'distill.losses=[{kind: kl, weight: 0.7, temperature: 3}, {kind: ce, weight: 0.3}, "
                     "{kind: hint, weight: 0.1, student: fc1, teacher: fc1}]'";
  auto one_hint = run_shell(cli() + " run " + r + " --out " + (dir_ / "one-hint").string() + hint);
  ASSERT_EQ(one_hint.status, 0) << one_hint.output;
  auto two_hint = run_shell(cli() + " launch --nproc 2 --master 127.0.0.1:" + port(6) + " -- run " + r + " --out " +
                            (dir_ / "two-hint").string() + hint);
  ASSERT_EQ(two_hint.status, 0) << two_hint.output;
  EXPECT_NE(two_hint.output.find("rank 1/2: teacher taps: fc1 of 647 rows"), std::string::npos) << two_hint.output;
  auto h1 = nlohmann::json::parse(read_file(dir_ / "one-hint/metrics.json"));
  auto h2 = nlohmann::json::parse(read_file(dir_ / "two-hint/metrics.json"));
  EXPECT_EQ(h1["models"]["student"]["test"]["accuracy"], h2["models"]["student"]["test"]["accuracy"]);
  EXPECT_EQ(h2["distill"]["teaching"]["bytes"].get<int64_t>() * 2, h1["distill"]["teaching"]["bytes"].get<int64_t>());

  // With a soft-label bank of augmented views: each rank holds the views of its own rows only.
  std::string bank = " --set distill.augment=noise --set distill.views=4";
  auto one_bank = run_shell(cli() + " run " + r + " --out " + (dir_ / "one-bank").string() + bank);
  ASSERT_EQ(one_bank.status, 0) << one_bank.output;
  auto two_bank = run_shell(cli() + " launch --nproc 2 --master 127.0.0.1:" + port(12) + " -- run " + r + " --out " +
                            (dir_ / "two-bank").string() + bank);
  ASSERT_EQ(two_bank.status, 0) << two_bank.output;
  auto b1 = nlohmann::json::parse(read_file(dir_ / "one-bank/metrics.json"));
  auto b2 = nlohmann::json::parse(read_file(dir_ / "two-bank/metrics.json"));
  EXPECT_EQ(b1["models"]["student"]["test"]["accuracy"], b2["models"]["student"]["test"]["accuracy"]);
  EXPECT_EQ(b2["distill"]["teaching"]["mode"], "bank");
  EXPECT_EQ(b2["distill"]["teaching"]["bytes"].get<int64_t>() * 2, b1["distill"]["teaching"]["bytes"].get<int64_t>());

  // eval under the launcher: each rank scores half the test rows; rank 0 prints and writes the same
  // metrics as one process.
  std::string student = (dir_ / "two/student.kdm").string();
  auto eval_one = run_shell(cli() + " eval " + student + " --data " + r + " --json " + (dir_ / "eval1.json").string());
  ASSERT_EQ(eval_one.status, 0) << eval_one.output;
  auto eval_two = run_shell(cli() + " launch --nproc 2 --master 127.0.0.1:" + port(13) + " -- eval " + student +
                            " --data " + r + " --json " + (dir_ / "eval2.json").string());
  ASSERT_EQ(eval_two.status, 0) << eval_two.output;
  EXPECT_EQ(eval_two.output.find("rank 1/2: accuracy"), std::string::npos) << eval_two.output;
  auto e1 = nlohmann::json::parse(read_file(dir_ / "eval1.json"))["metrics"];
  auto e2 = nlohmann::json::parse(read_file(dir_ / "eval2.json"))["metrics"];
  EXPECT_EQ(e1["test"]["accuracy"], e2["test"]["accuracy"]);
  EXPECT_NEAR(e1["test"]["nll"].get<double>(), e2["test"]["nll"].get<double>(), 1e-6);
  EXPECT_EQ(e1["test"]["accuracy"], m2["models"]["student"]["test"]["accuracy"]);

  // Rank 0 wrote the folder; rank 1 nothing of its own.
  std::vector<std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir_ / "two")) files.push_back(entry.path().filename());
  EXPECT_EQ(std::count(files.begin(), files.end(), "metrics.json"), 1);
}

// Two "hosts": network namespaces joined by a veth pair (10.23.0.1 and .2), one rank in each, Gloo on
// the veth interfaces: the same student as one process. Skipped, with the reason, where this sandbox
// may not make namespaces.
TEST_F(Distributed, TwoHostsInNetworkNamespacesTrainWhatOneProcessTrains) {
  std::string id = std::to_string(getpid() % 100000);
  std::string a = "kd0-" + id, b = "kd1-" + id, va = "kdva" + id, vb = "kdvb" + id;
  auto cleanup = [&] { run_shell("ip netns del " + a + "; ip netns del " + b); };
  auto made = run_shell("ip netns add " + a + " && ip netns add " + b + " && ip link add " + va + " type veth peer name " +
                        vb + " && ip link set " + va + " netns " + a + " && ip link set " + vb + " netns " + b +
                        " && ip -n " + a + " addr add 10.23.0.1/24 dev " + va + " && ip -n " + b +
                        " addr add 10.23.0.2/24 dev " + vb + " && ip -n " + a + " link set " + va + " up && ip -n " + b +
                        " link set " + vb + " up && ip -n " + a + " link set lo up && ip -n " + b + " link set lo up");
  if (made.status != 0) {
    cleanup();
    GTEST_SKIP() << "network namespaces are not permitted here: " << made.output;
  }
  std::string r = recipe(digits_recipe());
  auto host = [&](const std::string& ns, const std::string& device, int k) {
    return "GLOO_SOCKET_IFNAME=" + device + " ip netns exec " + ns + " " + cli() + " --rank " + std::to_string(k) +
           " --world-size 2 --master-addr 10.23.0.1 --master-port 29500 --dist-timeout 60 run " + r + " --out " +
           (dir_ / "hosts").string();
  };
  auto two = run_shell("(" + host(a, va, 0) + " & " + host(b, vb, 1) + "; wait)");
  cleanup();
  ASSERT_TRUE(fs::exists(dir_ / "hosts/metrics.json")) << two.output;
  EXPECT_NE(two.output.find("rank 1/2: student epoch 6/6"), std::string::npos) << two.output;
  auto one = run_shell(cli() + " run " + r + " --out " + (dir_ / "one").string());
  ASSERT_EQ(one.status, 0) << one.output;
  auto m1 = nlohmann::json::parse(read_file(dir_ / "one/metrics.json"));
  auto m2 = nlohmann::json::parse(read_file(dir_ / "hosts/metrics.json"));
  for (const char* model : {"teacher", "baseline", "student"}) {
    EXPECT_EQ(m1["models"][model]["test"]["accuracy"], m2["models"][model]["test"]["accuracy"]) << model;
  }
}

// Under torchrun the agent serves the store at MASTER_PORT and sets TORCHELASTIC_USE_AGENT_STORE: rank 0
// joins that store (here one a Python TCPStore serves, as torchrun's agent does) instead of serving its own.
TEST_F(Distributed, UnderTorchrunRankZeroJoinsTheAgentsStore) {
  std::string r = recipe(digits_recipe());
  auto python = run_python(
      "import datetime, os, subprocess\n"
      "import torch.distributed as dist\n"
      "port = " + port(10) + "\n"
      "store = dist.TCPStore('127.0.0.1', port, 3, True, timeout=datetime.timedelta(seconds=60), wait_for_workers=False)\n"
      "env = dict(os.environ, TORCHELASTIC_USE_AGENT_STORE='True', WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',\n"
      "           MASTER_PORT=str(port))\n"
      "cmd = ['" KD_CLI_PATH "', '--threads', '1', 'run', '" + r + "', '--out', '" + out() + "']\n"
      "ranks = [subprocess.Popen(cmd, env=dict(env, RANK=str(k), LOCAL_RANK=str(k)), stdout=subprocess.DEVNULL,\n"
      "                          stderr=subprocess.DEVNULL) for k in (0, 1)]\n"
      "print('statuses', [p.wait(timeout=300) for p in ranks])\n");
  ASSERT_EQ(python.status, 0) << python.output;
  EXPECT_NE(python.output.find("statuses [0, 0]"), std::string::npos) << python.output;
  EXPECT_TRUE(fs::exists(dir_ / "out/metrics.json"));
}

TEST_F(Distributed, RanksThatDisagreeAreRefused) {
  std::string r = recipe(digits_recipe());
  // Two recipes: rank 1 runs more epochs than rank 0.
  std::string p = port(1);
  auto recipes = run_shell("(" + cli() + " --rank 0 --world-size 2 --master-port " + p + " --dist-timeout 20 run " + r +
                       " --out " + out() + " & " + cli() + " --rank 1 --world-size 2 --master-port " + p +
                       " --dist-timeout 20 run " + r + " --out " + out() + " --set distill.epochs=7; wait)");
  EXPECT_NE(recipes.output.find("rank 1 has another recipe than rank 0; every rank must run the same"),
            std::string::npos) << recipes.output;
  // A group size that differs between the ranks.
  p = port(2);
  auto sizes = run_shell("(" + cli() + " --rank 0 --world-size 2 --master-port " + p + " --dist-timeout 10 run " + r +
                     " --out " + out() + " & " + cli() + " --rank 1 --world-size 3 --master-port " + p +
                     " --dist-timeout 10 run " + r + " --out " + out() + "; wait)");
  EXPECT_NE(sizes.output.find("WORLD_SIZE: rank 1 was started with 3 and rank 0 with 2"), std::string::npos)
      << sizes.output;
  auto rank = run_shell(cli() + " --rank 2 --world-size 2 run " + r + " --out " + out());
  EXPECT_EQ(rank.status, 2) << rank.output;
  EXPECT_NE(rank.output.find("RANK (or --rank): 2 is not a rank of a group of 2 (WORLD_SIZE): expected 0 to 1"),
            std::string::npos) << rank.output;
}

// SIGKILL one of two ranks during the student's training: the other stops within the timeout, naming
// the lost rank; launching both again with --resume finishes with the metrics of an uninterrupted run.
TEST_F(Distributed, ALostRankStopsTheOtherAndTheGroupResumes) {
  std::string r = recipe(digits_recipe(40));
  auto whole = launch_two(port(3), "run " + r + " --out " + (dir_ / "whole").string());
  ASSERT_EQ(whole.status, 0) << whole.output;
  auto report = kill_rank_one(dir_.path(), port(4),
                              "'--dist-timeout', '15', 'run', '" + r + "', '--out', '" + out() + "'",
                              "student epoch 8/40");
  EXPECT_NE(report["status"].get<int>(), 0) << report.dump();
  EXPECT_LT(report["seconds"].get<double>(), 30.0) << report.dump();
  std::string log = read_file(dir_ / "rank0.log");
  EXPECT_NE(log.find("lost rank 1"), std::string::npos) << log;

  auto resumed = launch_two(port(5), "run " + r + " --out " + out() + " --resume");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("student: resuming after epoch"), std::string::npos) << resumed.output;
  expect_same_test_metrics(nlohmann::json::parse(read_file(dir_ / "whole/metrics.json")), metrics());
}

// Ctrl-C to the launcher: it passes the signal on to its ranks (in a process group of their own), the
// ranks agree in the step's all-reduce to stop after the same step, rank 0 writes the checkpoint and
// all exit 130; launching again with --resume ends with the metrics of an uninterrupted run.
TEST_F(Distributed, CtrlCStopsTheGroupAfterOneStepAndItResumes) {
  std::string r = recipe(digits_recipe(60));
  auto whole = launch_two(port(14), "run " + r + " --out " + (dir_ / "whole").string());
  ASSERT_EQ(whole.status, 0) << whole.output;
  auto stopped = signal_when("launch --nproc 2 --master 127.0.0.1:" + port(15) + " -- run " + r + " --out " + out(),
                             "rank 1/2: student epoch 12/60", SIGINT, (dir_ / "launch.log").string());
  std::string log = stopped["log"];
  EXPECT_EQ(stopped["status"], 130) << log;
  // Both ranks stopped after the same step, rank 1 without a signal of its own being needed.
  auto stopped_at = [&](const std::string& rank) {
    auto at = log.find(rank + ": student: stopped by SIGINT after epoch ");
    return at == std::string::npos ? std::string("none") : log.substr(at + rank.size(), log.find(';', at) - at - rank.size());
  };
  EXPECT_NE(stopped_at("rank 0/2"), "none") << log;
  EXPECT_EQ(stopped_at("rank 0/2"), stopped_at("rank 1/2")) << log;
  auto resumed = launch_two(port(16), "run " + r + " --out " + out() + " --resume");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("rank 1/2: student: resuming at epoch"), std::string::npos) << resumed.output;
  expect_same_test_metrics(nlohmann::json::parse(read_file(dir_ / "whole/metrics.json")), metrics());
}

// kdistill auto over a group: both ranks run trials, sharing them through the store; rank 0 writes
// trials.json and the outputs; the chosen student's final run trains on both ranks.
TEST_F(Distributed, AutoRanksShareTheTrialsThroughTheStore) {
  std::string r = KD_SOURCE_DIR "/examples/breast-cancer-auto.yaml";
  auto two = run_shell(cli() + " launch --nproc 2 --master 127.0.0.1:" + port(7) + " -- auto " + r +
                       " --budget 5m --trials 8 --out " + out() + " --set teacher.train.epochs=10 --set data.folds=0");
  ASSERT_EQ(two.status, 0) << two.output;
  auto trials = nlohmann::json::parse(read_file(dir_ / "out/trials.json"))["trials"];
  ASSERT_EQ(trials.size(), 8u) << trials.dump();
  std::set<int64_t> workers;
  for (const auto& t : trials) workers.insert(t["worker"].get<int64_t>());
  EXPECT_EQ(workers, (std::set<int64_t>{0, 1})) << trials.dump();
  EXPECT_NE(two.output.find("rank 1/2: student epoch"), std::string::npos) << two.output;  // the final run, on both
  EXPECT_TRUE(metrics().contains("search"));
  size_t printed = 0;  // the table, by rank 0 alone
  for (size_t at = two.output.find("Pareto front"); at != std::string::npos; at = two.output.find("Pareto front", at + 1)) ++printed;
  EXPECT_EQ(printed, 1u) << two.output;
  // Without the final run every rank ends once rank 0 has chosen (rank 0 waits until they have read it).
  auto search_only = run_shell(cli() + " launch --nproc 2 --master 127.0.0.1:" + port(9) + " -- auto " + r +
                               " --budget 5m --trials 6 --no-final --out " + (dir_ / "search-only").string() +
                               " --set teacher.train.epochs=10 --set data.folds=0");
  EXPECT_EQ(search_only.status, 0) << search_only.output;
  EXPECT_TRUE(fs::exists(dir_ / "search-only/search.json")) << search_only.output;
  // --resume: rank 0 reads trials.json into the store; the group goes on to the new trial limit.
  auto resumed = run_shell(cli() + " launch --nproc 2 --master 127.0.0.1:" + port(11) + " -- auto " + r +
                           " --budget 5m --trials 8 --no-final --resume --out " + (dir_ / "search-only").string() +
                           " --set teacher.train.epochs=10 --set data.folds=0");
  EXPECT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("rank 0/2: search: resuming after 6 trials"), std::string::npos) << resumed.output;
  EXPECT_EQ(nlohmann::json::parse(read_file(dir_ / "search-only/trials.json"))["trials"].size(), 8u);
}

// A rank killed during the search loses only its running trial: rank 0 finishes the search and
// retrains the chosen student alone.
TEST_F(Distributed, AutoGoesOnWhenARankDies) {
  std::string r = KD_SOURCE_DIR "/examples/breast-cancer-auto.yaml";
  auto report = kill_rank_one(dir_.path(), port(8),
                              "'--dist-timeout', '30', 'auto', '" + r + "', '--budget', '5m', '--trials', '10', '--out', '" +
                                  out() + "', '--set', 'teacher.train.epochs=10', '--set', 'data.folds=0'",
                              "trial ", "search: budget");
  EXPECT_EQ(report["status"].get<int>(), 0) << read_file(dir_ / "rank0.log");
  std::string log = read_file(dir_ / "rank0.log");
  EXPECT_NE(log.find("search: rank 1 was lost; its finished trials are kept"), std::string::npos) << log;
  auto trials = nlohmann::json::parse(read_file(dir_ / "out/trials.json"))["trials"];
  EXPECT_EQ(trials.size(), 10u) << trials.dump();
  EXPECT_TRUE(metrics().contains("search"));
}

}  // namespace
}  // namespace kd::test
