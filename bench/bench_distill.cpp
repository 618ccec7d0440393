// kdistill against the PyTorch knowledge-distillation tutorial loop (bench/peer_tutorial.py, Debian's
// python3-torch), same models, data, batch size, epochs, optimizer (Adam, lr 0.001, constant), loss
// (0.25 soft targets at T = 2 + 0.75 cross-entropy) and thread count, in one invocation, pairs
// interleaved, repeated. Each measurement is a separate process (peak RSS from wait4).
//
// Per setup and repeat:
//   kdistill run (teacher trained here, baseline, distilled student)  vs  peer teacher + peer student
//   kdistill run with the peer's teacher file, no baseline            vs  peer distill (tutorial loop)
//   (--phases bank) the same on shifted images: a bank of 4 views     vs  the tutorial loop, teacher live
// and, once, the machine's own limit: best fp32 and bf16 GEMM GFLOP/s through libtorch.
//
//   build/bench_distill [--threads 2] [--repeats 3] [--setups mlp,cnn,tabular,mlp-b512] [--epochs 10]
//              [--json bench/results/perf.json] [--kdistill build/kdistill] [--keep DIR]
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <oneapi/dnnl/dnnl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kd/util/fs.h"
#include "kd/util/runtime.h"
#include "kd/util/strings.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

const std::string kFashion = "/usr/share/datasets/fashion-mnist/";

struct Setup {
  std::string name;
  std::string peer_setup;   // bench/peer_tutorial.py's SETUP
  std::string data;         // the recipe's data section
  std::string teacher;      // zoo spec of the teacher
  std::string student;      // zoo spec of the student
  int64_t teacher_epochs;
  int64_t batch;
  int64_t teacher_macs;     // per example, forward (for the GEMM fraction)
};

std::vector<Setup> setups(const fs::path& work) {
  std::string fashion = "  format: idx\n"
                        "  train: {images: " + kFashion + "train-images-idx3-ubyte.gz, labels: " + kFashion +
                        "train-labels-idx1-ubyte.gz}\n"
                        "  test: {images: " + kFashion + "t10k-images-idx3-ubyte.gz, labels: " + kFashion +
                        "t10k-labels-idx1-ubyte.gz}\n";
  std::string tabular = "  train: " + (work / "tabular_train.csv").string() + "\n  test: " +
                        (work / "tabular_test.csv").string() + "\n  target: label\n";
  return {
      {"mlp", "mlp", fashion, "{arch: mlp, hidden: [1200, 1200]}", "{arch: mlp, hidden: [32]}", 2, 128,
       784 * 1200 + 1200 * 1200 + 1200 * 10},
      {"cnn", "cnn", fashion, "{arch: cnn, channels: [32, 64], batch_norm: true, hidden: [128]}",
       "{arch: cnn, channels: [16, 32], batch_norm: true, hidden: [32]}", 1, 128, 0},
      {"tabular", "tabular", tabular, "{arch: mlp, hidden: [512, 512]}", "{arch: mlp, hidden: [16]}", 3, 128,
       40 * 512 + 512 * 512 + 512 * 4},
      {"mlp-b512", "mlp", fashion, "{arch: mlp, hidden: [1200, 1200]}", "{arch: mlp, hidden: [32]}", 2, 512,
       784 * 1200 + 1200 * 1200 + 1200 * 10},
  };
}

struct Process {
  int status = -1;
  double wall_seconds = 0;
  double peak_rss_mb = 0;
  std::string output;
};

// Runs argv to completion; stdout and stderr to `log`. wait4 gives this child's own peak RSS.
Process spawn(const std::vector<std::string>& args, const fs::path& log) {
  std::cout.flush();
  std::fflush(nullptr);  // or the child would print what is still buffered here
  auto start = Clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    FILE* out = std::freopen(log.c_str(), "w", stdout);
    if (out == nullptr || dup2(fileno(stdout), STDERR_FILENO) < 0) _exit(127);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  Process p;
  int status = 0;
  struct rusage usage {};
  wait4(pid, &status, 0, &usage);
  p.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  p.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  p.peak_rss_mb = static_cast<double>(usage.ru_maxrss) / 1024.0;
  p.output = kd::read_file(log);
  return p;
}

// Best rate of an n x n x n product through each library libtorch brings: torch::matmul (OpenBLAS for
// float32, oneDNN for bfloat16), oneDNN's inner product (at::mkldnn_linear) on operands already in
// its layout, so that only the product is timed, and oneDNN's sgemm (what kdistill's dense layers use).
enum class Gemm { matmul, onednn_inner_product, onednn_sgemm };

double best_gflops(torch::ScalarType type, int64_t n, int repeats, Gemm gemm = Gemm::matmul) {
  torch::NoGradGuard no_grad;
  auto a = torch::randn({n, n}).to(type), b = torch::randn({n, n}).to(type), c = torch::empty({n, n}, type);
  bool inner_product = gemm == Gemm::onednn_inner_product;
  auto a_onednn = inner_product ? a.to_mkldnn() : a, b_onednn = inner_product ? b.to_mkldnn() : b;
  auto product = [&] {
    if (gemm == Gemm::onednn_sgemm) {
      dnnl_sgemm('N', 'N', n, n, n, 1.0f, a.data_ptr<float>(), n, b.data_ptr<float>(), n, 0.0f, c.data_ptr<float>(), n);
    } else if (inner_product) {
      at::mkldnn_linear(a_onednn, b_onednn, {});
    } else {
      torch::matmul(a, b);
    }
  };
  for (int i = 0; i < 3; ++i) product();
  double best = 0;
  for (int i = 0; i < repeats; ++i) {
    auto start = Clock::now();
    product();
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    best = std::max(best, 2.0 * static_cast<double>(n * n * n) / seconds / 1e9);
  }
  return best;
}

double mean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double sum = 0;
  for (double x : v) sum += x;
  return sum / static_cast<double>(v.size());
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// Sum of a model's epoch training seconds in epochs.csv (model,fold,epoch,train_loss,lr,seconds,...).
double epoch_seconds(const fs::path& csv, const std::string& model) {
  std::istringstream lines(kd::read_file(csv));
  std::string line;
  double total = 0;
  std::getline(lines, line);
  while (std::getline(lines, line)) {
    auto cells = kd::split(line, ',');
    if (cells.size() > 5 && cells[0] == model) total += std::stod(cells[5]);
  }
  return total;
}

json last_json_line(const std::string& output) {
  std::istringstream lines(output);
  std::string line, last;
  while (std::getline(lines, line)) {
    if (!line.empty() && line[0] == '{') last = line;
  }
  return json::parse(last);
}

struct Bench {
  std::string kdistill, python = "/usr/bin/python3", peer;
  int threads = 2;
  int64_t epochs = 10;
  fs::path work;

  // Repeat r runs with seed r on both sides: the accuracies compared are medians over seeds, not one
  // seed's draw (one setup's spread over seeds is as large as the gaps it would otherwise show).
  std::string recipe(const Setup& s, const std::string& teacher_part, bool baseline, int seed) const {
    return "task: classification\nseed: " + std::to_string(seed) + "\ndata:\n" + s.data + "  val_fraction: 0.1\n" + "teacher:\n" +
           teacher_part + "student:\n  model: " + s.student + "\n" +
           fmt::format("distill:\n  epochs: {}\n  batch_size: {}\n  baseline: {}\n", epochs, s.batch,
                       baseline ? "true" : "false") +
           "  optimizer: {name: adam, lr: 0.001}\n  schedule: none\n"
           "  losses: [{kind: kl, weight: 0.25, temperature: 2}, {kind: ce, weight: 0.75}]\n";
  }

  Process kd_run(const std::string& text, const fs::path& dir) const {
    fs::create_directories(dir);
    // A fresh output folder: a teacher kept there from an earlier run would be reused, not trained and timed.
    fs::remove_all(dir / "out");
    kd::write_file_atomic(dir / "recipe.yaml", text);
    return spawn({kdistill, "--threads", std::to_string(threads), "run", (dir / "recipe.yaml").string(), "--out",
                  (dir / "out").string()},
                 dir / "log.txt");
  }

  Process peer_run(const Setup& s, const std::string& phase, int64_t phase_epochs, const fs::path& dir, int seed,
                   int shift = 0) const {
    fs::create_directories(dir);
    return spawn({python, peer, s.peer_setup, phase, "--threads", std::to_string(threads), "--epochs",
                  std::to_string(phase_epochs), "--batch", std::to_string(s.batch), "--out", dir.string(), "--data",
                  work.string(), "--seed", std::to_string(seed), "--shift", std::to_string(shift)},
                 dir / ("peer-" + phase + (shift > 0 ? "-shift" : "") + ".log"));
  }
};

void require(const Process& p, const std::string& what) {
  if (p.status != 0) {
    std::cerr << what << " failed (exit " << p.status << "):\n" << p.output << "\n";
    std::exit(1);
  }
}

void make_tabular(const Bench& bench) {
  std::string script =
      "import numpy as np, sklearn.datasets as d\n"
      "x, y = d.make_classification(n_samples=60000, n_features=40, n_informative=24, n_classes=4,"
      " n_clusters_per_class=3, class_sep=0.8, random_state=0)\n"
      "header = ','.join([f'f{i}' for i in range(40)] + ['label'])\n"
      "t = np.hstack([x, y[:, None]])\n"
      "np.savetxt('" + (bench.work / "tabular_train.csv").string() + "', t[:50000], delimiter=',', fmt='%.6g',"
      " header=header, comments='')\n"
      "np.savetxt('" + (bench.work / "tabular_test.csv").string() + "', t[50000:], delimiter=',', fmt='%.6g',"
      " header=header, comments='')\n";
  kd::write_file_atomic(bench.work / "make_tabular.py", script);
  require(spawn({bench.python, (bench.work / "make_tabular.py").string()}, bench.work / "make_tabular.log"),
          "making the tabular CSV");
}

}  // namespace

int main(int argc, char** argv) {
  kd::use_fitting_blas_kernels();
  Bench bench;
  int repeats = 3;
  std::string json_path, only, keep, phases = "all";
  fs::path self = fs::canonical("/proc/self/exe");
  bench.kdistill = (self.parent_path().parent_path() / "kdistill").string();  // build/bench/.. = build/
  bench.peer = (fs::path(KD_SOURCE_DIR) / "bench/peer_tutorial.py").string();
  const char* usage =
      "usage: bench_distill [--threads N] [--repeats N] [--epochs N] [--setups mlp,cnn,tabular,mlp-b512]\n"
      "                     [--json FILE] [--kdistill PATH] [--keep DIR] [--phases all|fixed|bank]\n"
      "  --phases fixed: only the peer's teacher file and the two fixed-teacher distillation runs\n"
      "  --phases bank: the peer's teacher file, then distillation on shifted images: kdistill's bank of\n"
      "                 4 views against the tutorial loop with the teacher live on each augmented batch\n";
  for (int i = 1; i < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << usage;
      return 0;
    }
    if (i + 1 >= argc) {
      std::cerr << "bench_distill: " << flag << " needs a value\n" << usage;
      return 2;
    }
    std::string value = argv[i + 1];
    if (flag == "--threads") bench.threads = std::stoi(value);
    else if (flag == "--repeats") repeats = std::stoi(value);
    else if (flag == "--epochs") bench.epochs = std::stoll(value);
    else if (flag == "--setups") only = value;
    else if (flag == "--json") json_path = value;
    else if (flag == "--kdistill") bench.kdistill = value;
    else if (flag == "--keep") keep = value;
    else if (flag == "--phases" && (value == "all" || value == "fixed" || value == "bank")) phases = value;
    else {
      std::cerr << "bench_distill: unknown flag " << flag << "\n" << usage;
      return 2;
    }
  }
  kd::configure_threads(bench.threads);
  bench.work = keep.empty() ? fs::temp_directory_path() / fmt::format("kd_perf_{}", getpid()) : fs::path(keep);
  fs::create_directories(bench.work);

  json result;
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  result["machine"] = {{"threads", bench.threads},
                       {"cores", std::thread::hardware_concurrency()},
                       {"openblas_coretype", coretype ? coretype : "(OpenBLAS's choice)"},
                       {"gemm_fp32_openblas_gflops", best_gflops(torch::kFloat, 1024, 10)},
                       {"gemm_fp32_onednn_gflops", best_gflops(torch::kFloat, 1024, 10, Gemm::onednn_inner_product)},
                       {"gemm_fp32_onednn_sgemm_gflops", best_gflops(torch::kFloat, 1024, 10, Gemm::onednn_sgemm)},
                       {"gemm_bf16_gflops", best_gflops(torch::kBFloat16, 1024, 10)}};
  // The machine's fp32 limit: the fastest of the three.
  double gemm = std::max({result["machine"]["gemm_fp32_openblas_gflops"].get<double>(),
                          result["machine"]["gemm_fp32_onednn_gflops"].get<double>(),
                          result["machine"]["gemm_fp32_onednn_sgemm_gflops"].get<double>()});
  result["machine"]["gemm_fp32_gflops"] = gemm;
  std::cout << "machine: " << result["machine"].dump() << "\n";

  std::vector<Setup> chosen;
  for (const auto& s : setups(bench.work)) {
    if (only.empty() || ("," + only + ",").find("," + s.name + ",") != std::string::npos) chosen.push_back(s);
  }
  bool tabular = std::any_of(chosen.begin(), chosen.end(), [](const Setup& s) { return s.peer_setup == "tabular"; });
  if (tabular) make_tabular(bench);

  // setup -> measurement -> values over repeats
  std::map<std::string, std::map<std::string, std::vector<double>>> values;
  for (int r = 0; r < repeats; ++r) {
    for (const auto& s : chosen) {
      auto& v = values[s.name];
      fs::path dir = bench.work / s.name / std::to_string(r);
      // Teacher training and student-only training: one kdistill run (teacher, baseline, student), the peer's
      // teacher and student phases.
      Process peer_teacher = bench.peer_run(s, "teacher", s.teacher_epochs, dir, r);
      require(peer_teacher, "peer teacher");
      if (phases == "all") {
        std::string teacher_part = "  model: " + s.teacher + "\n" +
                                   fmt::format("  train: {{epochs: {}, batch_size: {}, optimizer: {{name: adam, lr: 0.001}},"
                                               " schedule: none}}\n",
                                               s.teacher_epochs, s.batch);
        Process full = bench.kd_run(bench.recipe(s, teacher_part, true, r), dir / "kd_full");
        require(full, "kdistill run " + (dir / "kd_full/recipe.yaml").string());
        Process peer_student = bench.peer_run(s, "student", bench.epochs, dir, r);
        require(peer_student, "peer student");
        auto metrics = json::parse(kd::read_file(dir / "kd_full/out/metrics.json"));
        int64_t rows = metrics["data"]["train"];
        double kd_teacher_s = epoch_seconds(dir / "kd_full/out/epochs.csv", "teacher");
        double kd_student_s = epoch_seconds(dir / "kd_full/out/epochs.csv", "baseline");
        json pt = last_json_line(peer_teacher.output), ps = last_json_line(peer_student.output);
        v["teacher_samples_per_second.kdistill"].push_back(static_cast<double>(rows * s.teacher_epochs) / kd_teacher_s);
        v["teacher_samples_per_second.peer"].push_back(pt["samples_per_second"]);
        v["student_samples_per_second.kdistill"].push_back(static_cast<double>(rows * bench.epochs) / kd_student_s);
        v["student_samples_per_second.peer"].push_back(ps["samples_per_second"]);
        v["teacher_accuracy.kdistill"].push_back(metrics["models"]["teacher"]["test"]["accuracy"]);
        v["teacher_accuracy.peer"].push_back(pt["test_accuracy"]);

        // Teacher training with bfloat16 autocast (--precision bf16 for the teacher): speed and accuracy.
        std::string bf16_part = "  model: " + s.teacher + "\n" +
                                fmt::format("  train: {{epochs: {}, batch_size: {}, optimizer: {{name: adam, lr: 0.001}},"
                                            " schedule: none, precision: bf16}}\n",
                                            s.teacher_epochs, s.batch);
        std::string bf16_recipe = bench.recipe(s, bf16_part, false, r);
        bf16_recipe.replace(bf16_recipe.find(fmt::format("epochs: {}\n  batch_size", bench.epochs)),
                            fmt::format("epochs: {}", bench.epochs).size(), "epochs: 1");
        Process bf16 = bench.kd_run(bf16_recipe, dir / "kd_bf16");
        require(bf16, "kdistill run " + (dir / "kd_bf16/recipe.yaml").string());
        auto bf16_metrics = json::parse(kd::read_file(dir / "kd_bf16/out/metrics.json"));
        v["teacher_bf16_samples_per_second.kdistill"].push_back(
            static_cast<double>(rows * s.teacher_epochs) / epoch_seconds(dir / "kd_bf16/out/epochs.csv", "teacher"));
        v["teacher_bf16_accuracy.kdistill"].push_back(bf16_metrics["models"]["teacher"]["test"]["accuracy"]);
      }

      if (phases == "bank") {
        // Distillation on shifted images: kdistill's soft-label bank of 4 views (4 teacher passes) against
        // the tutorial loop running the teacher live on every augmented batch (one pass per epoch).
        std::string bank_recipe = bench.recipe(s, "  path: " + (dir / "teacher.pt").string() + "\n", false, r) +
                                  "  augment: {shift: 1}\n  views: 4\n";
        Process kd_bank = bench.kd_run(bank_recipe, dir / "kd_bank");
        require(kd_bank, "kdistill run " + (dir / "kd_bank/recipe.yaml").string());
        Process peer_live = bench.peer_run(s, "distill", bench.epochs, dir, r, 1);
        require(peer_live, "peer distill --shift 1");
        auto bank = json::parse(kd::read_file(dir / "kd_bank/out/metrics.json"));
        json pl = last_json_line(peer_live.output);
        double kd_loop = bank["timing"]["teacher_cache_seconds"].get<double>() + bank["timing"]["teacher_bank_seconds"].get<double>();
        for (double e : bank["timing"]["distill_epoch_seconds"]) kd_loop += e;
        v["augmented_distill_wall_seconds.kdistill"].push_back(kd_bank.wall_seconds);
        v["augmented_distill_wall_seconds.peer"].push_back(peer_live.wall_seconds);
        v["augmented_distill_loop_seconds.kdistill"].push_back(kd_loop);
        v["augmented_distill_loop_seconds.peer"].push_back(pl["seconds"]);
        v["augmented_student_accuracy.kdistill"].push_back(bank["models"]["student"]["test"]["accuracy"]);
        v["augmented_student_accuracy.peer"].push_back(pl["test_accuracy"]);
        std::cout << fmt::format("{} repeat {}: shifted-image distillation wall {:.1f} s (bank of 4 views) vs peer {:.1f} s "
                                 "(live teacher); student accuracy {:.4f} vs {:.4f}\n",
                                 s.name, r + 1, kd_bank.wall_seconds, peer_live.wall_seconds,
                                 v["augmented_student_accuracy.kdistill"].back(), v["augmented_student_accuracy.peer"].back());
        continue;
      }
      // The whole distillation run with a fixed teacher (the peer's file): kdistill process vs. tutorial process.
      Process kd_fixed = bench.kd_run(bench.recipe(s, "  path: " + (dir / "teacher.pt").string() + "\n", false, r),
                                      dir / "kd_fixed");
      require(kd_fixed, "kdistill run " + (dir / "kd_fixed/recipe.yaml").string());
      Process peer_distill = bench.peer_run(s, "distill", bench.epochs, dir, r);
      require(peer_distill, "peer distill");
      auto fixed = json::parse(kd::read_file(dir / "kd_fixed/out/metrics.json"));
      json pd = last_json_line(peer_distill.output);
      double kd_loop = fixed["timing"]["teacher_cache_seconds"].get<double>();
      for (double e : fixed["timing"]["distill_epoch_seconds"]) kd_loop += e;
      v["distill_wall_seconds.kdistill"].push_back(kd_fixed.wall_seconds);
      v["distill_wall_seconds.peer"].push_back(peer_distill.wall_seconds);
      v["distill_loop_seconds.kdistill"].push_back(kd_loop);
      v["distill_loop_seconds.peer"].push_back(pd["seconds"]);
      v["distill_peak_rss_mb.kdistill"].push_back(kd_fixed.peak_rss_mb);
      v["distill_peak_rss_mb.peer"].push_back(peer_distill.peak_rss_mb);
      v["student_accuracy.kdistill"].push_back(fixed["models"]["student"]["test"]["accuracy"]);
      v["student_accuracy.peer"].push_back(pd["test_accuracy"]);
      if (phases == "all" && s.teacher_macs > 0) {
        // Training FLOPs: forward 2 * MACs, backward twice that.
        double flops = 6.0 * static_cast<double>(s.teacher_macs);
        v["teacher_gemm_fraction.kdistill"].push_back(flops * v["teacher_samples_per_second.kdistill"].back() / 1e9 / gemm);
        v["teacher_gemm_fraction.peer"].push_back(flops * v["teacher_samples_per_second.peer"].back() / 1e9 / gemm);
      }
      std::cout << fmt::format("{} repeat {}: distill wall {:.1f} s vs peer {:.1f} s; student accuracy {:.4f} vs {:.4f}\n",
                               s.name, r + 1, kd_fixed.wall_seconds, peer_distill.wall_seconds,
                               v["student_accuracy.kdistill"].back(), v["student_accuracy.peer"].back());
    }
  }

  std::cout << fmt::format("\n{:<10} {:<30} {:>12} {:>12} {:>8}\n", "setup", "measure (median of " +
                           std::to_string(repeats) + ")", "kdistill", "peer", "ratio");
  for (const auto& [setup, measures] : values) {
    json& out = result["setups"][setup];
    std::map<std::string, std::pair<double, double>> pairs;
    for (const auto& [key, list] : measures) {
      auto dot = key.rfind('.');
      std::string measure = key.substr(0, dot), who = key.substr(dot + 1);
      out[measure][who] = {{"median", median(list)}, {"mean", mean(list)}, {"runs", list}};
      (who == "kdistill" ? pairs[measure].first : pairs[measure].second) = median(list);
    }
    for (auto& [measure, pair] : pairs) {
      if (!measures.count(measure + ".peer")) {  // kdistill only (the bf16 path)
        std::cout << fmt::format("{:<10} {:<30} {:>12.4g} {:>12} {:>8}\n", setup, measure, pair.first, "-", "-");
        continue;
      }
      // Ratios read as "times better": time and memory peer / kdistill, rates kdistill / peer.
      bool lower_is_better = kd::ends_with(measure, "_seconds") || kd::ends_with(measure, "_mb");
      bool accuracy = measure.find("accuracy") != std::string::npos;
      double ratio = accuracy ? pair.first - pair.second
                              : lower_is_better ? pair.second / pair.first : pair.first / pair.second;
      out[measure][accuracy ? "difference" : "ratio"] = ratio;
      std::cout << fmt::format("{:<10} {:<30} {:>12.4g} {:>12.4g} {:>8}\n", setup, measure, pair.first, pair.second,
                               accuracy ? fmt::format("{:+.2f}pt", 100 * ratio) : fmt::format("{:.2f}x", ratio));
      if (accuracy) {
        // Accuracy over seeds: the mean as well (a median of three seeds is one of them).
        double kd_mean = mean(measures.at(measure + ".kdistill")), peer_mean = mean(measures.at(measure + ".peer"));
        out[measure]["mean_difference"] = kd_mean - peer_mean;
        std::cout << fmt::format("{:<10} {:<30} {:>12.4g} {:>12.4g} {:>8}\n", setup, measure + " (mean)", kd_mean,
                                 peer_mean, fmt::format("{:+.2f}pt", 100 * (kd_mean - peer_mean)));
      }
    }
  }
  result["command"] = kd::join(std::vector<std::string>(argv, argv + argc), " ");
  result["epochs"] = bench.epochs;
  result["repeats"] = repeats;
  if (!json_path.empty()) kd::write_file_atomic(json_path, result.dump(1) + "\n");
  if (keep.empty()) fs::remove_all(bench.work);
  return 0;
}
