// The distillation report end to end: a small run writes report.html, test outputs, the
// analysis in metrics.json and TensorBoard files; `kdistill report` re-renders the same file;
// `kdistill eval` gives the run's numbers; headless Chromium renders every section.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>

#include "cli/cli_util.h"
#include "kd/report/html.h"
#include "kd/util/fs.h"
#include "kd/util/strings.h"
#include "test_util.h"

namespace kd::test {
namespace {

const std::string kSklearn = "/usr/lib/python3/dist-packages/sklearn/datasets/data/";

std::string digits_recipe() {
  return "task: classification\nseed: 2\n"
         "data:\n  train: " + kSklearn + "digits.csv.gz\n  test_fraction: 0.25\n"
         "teacher:\n  model: {arch: mlp, hidden: [64]}\n  train: {epochs: 4, batch_size: 64, optimizer: {name: adam, lr: 0.003}}\n"
         "student:\n  model: {arch: mlp, hidden: [8]}\n"
         "distill:\n  epochs: 3\n  batch_size: 64\n  optimizer: {name: adam, lr: 0.01}\n"
         "export: [onnx]\n";
}

std::string diabetes_recipe() {
  return "task: regression\nseed: 0\n"
         "data:\n  format: csv\n  train:\n    path: " + kSklearn + "diabetes_data_raw.csv.gz\n    labels: " + kSklearn +
         "diabetes_target.csv.gz\n  test_fraction: 0.2\n  folds: 3\n"
         "teacher:\n  model: {arch: mlp, hidden: [16]}\n  train: {epochs: 3, batch_size: 32}\n"
         "student:\n  model: {arch: linear}\n"
         "distill:\n  losses: [{kind: mse, target: teacher, weight: 0.5}, {kind: mse, target: labels, weight: 0.5}]\n"
         "  epochs: 3\n  batch_size: 32\n";
}

// One classification run shared by the tests of this file (a few seconds).
class Report : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    write_file_atomic(*dir_ / "recipe.yaml", digits_recipe());
    auto r = run_kdistill("run " + (*dir_ / "recipe.yaml").string() + " --out " + (*dir_ / "out").string());
    run_output_ = new std::string(r.output);
    run_status_ = r.status;
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete run_output_;
  }
  void SetUp() override { ASSERT_EQ(run_status_, 0) << *run_output_; }
  static std::filesystem::path out() { return *dir_ / "out"; }
  static nlohmann::json metrics() { return nlohmann::json::parse(read_file(out() / "metrics.json")); }

  static TempDir* dir_;
  static std::string* run_output_;
  static int run_status_;
};
TempDir* Report::dir_ = nullptr;
std::string* Report::run_output_ = nullptr;
int Report::run_status_ = -1;

TEST_F(Report, RunWritesTheReportAndItsInputs) {
  for (const char* file : {"report.html", "test_outputs/labels.npy", "test_outputs/teacher.npy", "test_outputs/baseline.npy",
                           "test_outputs/student.npy"}) {
    EXPECT_TRUE(std::filesystem::exists(out() / file)) << file;
  }
  for (const char* run : {"teacher", "baseline", "student"}) {
    bool found = false;
    for (const auto& e : std::filesystem::directory_iterator(out() / "tensorboard" / run)) {
      found = found || e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
    }
    EXPECT_TRUE(found) << run;
  }
  auto m = metrics();
  // 450 test rows (25% of 1,797); the confusion matrix counts each once.
  int64_t total = 0;
  for (const auto& row : m["models"]["student"]["confusion"]) {
    for (const auto& v : row) total += v.get<int64_t>();
  }
  EXPECT_EQ(total, m["data"]["test"].get<int64_t>());
  EXPECT_EQ(m["models"]["student"]["per_class"]["f1"].size(), 10u);
  EXPECT_EQ(m["models"]["student"]["reliability"]["count"].size(), 15u);
  EXPECT_TRUE(m["models"]["student"]["test"].contains("top5_accuracy"));
  EXPECT_GT(m["models"]["student"]["compression_vs_teacher"].get<double>(), 5.0);
  const auto& mcnemar = m["comparison"]["student_vs_baseline"]["folds"][0]["mcnemar"];
  // McNemar's discordant counts are the accuracy difference in rows.
  double rows = m["data"]["test"].get<double>();
  double difference = m["models"]["student"]["test"]["accuracy"].get<double>() -
                      m["models"]["baseline"]["test"]["accuracy"].get<double>();
  EXPECT_NEAR(mcnemar["only_a"].get<double>() - mcnemar["only_b"].get<double>(), difference * rows, 1e-6);
  EXPECT_EQ(m["disagreements"].size(), 10u);
  EXPECT_TRUE(m["environment"].contains("libtorch"));
  EXPECT_GT(m["export_bytes"]["student.onnx"].get<int64_t>(), 1000);
  EXPECT_NE(run_output_->find("report.html"), std::string::npos);
}

TEST_F(Report, ReportCommandReRendersTheSameFile) {
  std::string before = read_file(out() / "report.html");
  std::filesystem::remove(out() / "report.html");
  auto r = run_kdistill("report " + out().string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_file(out() / "report.html"), before);
  auto missing = run_kdistill("report " + (*dir_ / "nowhere").string());
  EXPECT_EQ(missing.status, 2);
  EXPECT_NE(missing.output.find("nowhere: no metrics.json"), std::string::npos) << missing.output;
}

TEST_F(Report, EvalGivesTheRunsNumbers) {
  auto json_file = (*dir_ / "eval.json").string();
  auto r = run_kdistill("eval " + (out() / "student.kdm").string() + " --data " + (*dir_ / "recipe.yaml").string() +
                        " --teacher " + (out() / "teacher.kdm").string() + " --json " + json_file);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("accuracy"), std::string::npos);
  auto e = nlohmann::json::parse(read_file(json_file))["metrics"];
  auto run = metrics()["models"]["student"];
  for (const char* key : {"accuracy", "errors", "macro_f1", "nll", "ece", "agreement_with_teacher", "kl_to_teacher"}) {
    EXPECT_NEAR(e["test"][key].get<double>(), run["test"][key].get<double>(), 1e-6) << key;
  }
  EXPECT_EQ(e["confusion"], run["confusion"]);
  EXPECT_EQ(e["params"], run["params"]);
  auto wrong = run_kdistill("eval " + (out() / "student.kdm").string() + " --data " + (*dir_ / "recipe.yaml").string() +
                            " --fold 3");
  EXPECT_EQ(wrong.status, 2);
  EXPECT_NE(wrong.output.find("--fold: 3 is past the data's 1 fold"), std::string::npos) << wrong.output;
}

TEST(ReportRegression, KFoldRunHasResidualsAndAcrossFoldTests) {
  TempDir dir;
  write_file_atomic(dir / "recipe.yaml", diabetes_recipe());
  auto r = run_kdistill("run " + (dir / "recipe.yaml").string() + " --out " + (dir / "out").string());
  ASSERT_EQ(r.status, 0) << r.output;
  auto m = nlohmann::json::parse(read_file(dir / "out/metrics.json"));
  const auto& c = m["comparison"]["student_vs_baseline"];
  EXPECT_EQ(c["metric"], "rmse");
  EXPECT_EQ(c["folds"].size(), 3u);
  EXPECT_EQ(c["across_folds"]["n"], 3);
  // The t-test's mean difference is the difference of the fold means.
  EXPECT_NEAR(c["across_folds"]["mean_difference"].get<double>(),
              m["models"]["student"]["test"]["rmse"]["mean"].get<double>() -
                  m["models"]["baseline"]["test"]["rmse"]["mean"].get<double>(),
              1e-9);
  EXPECT_TRUE(m["models"]["student"].contains("residuals"));
  EXPECT_TRUE(std::filesystem::exists(dir / "out/fold-3/test_outputs/student.npy"));
  EXPECT_TRUE(std::filesystem::exists(dir / "out/tensorboard/student/fold-2"));
  auto html = read_file(dir / "out/report.html");
  for (const auto& id : report::report_sections("regression")) EXPECT_NE(html.find("id=\"" + id + "\""), std::string::npos) << id;
}

// Headless Chromium (Debian's chromium, installed by scripts/setup.sh) opens report.html with no network:
// every section is in the rendered DOM, no console message at all (the page has no scripts, so any
// message is an error or a blocked fetch), and screenshots at phone and desktop widths are kept in
// the build folder (test-artifacts/) for a person to look at.
TEST_F(Report, HeadlessChromiumRendersEverySection) {
  const std::string chromium = "/usr/bin/chromium";
  ASSERT_TRUE(std::filesystem::exists(chromium))
      << chromium << " is missing: scripts/setup.sh installs Debian's chromium package";
  auto artifacts = std::filesystem::path(KD_CLI_PATH).parent_path() / "test-artifacts";
  std::filesystem::create_directories(artifacts);
  TempDir profile;
  std::string flags = " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
                      " --disable-component-update --disable-sync --disable-extensions --no-proxy-server"
                      " --user-data-dir=" + profile.path().string() + " --enable-logging=stderr --v=0 ";
  std::string url = "file://" + std::filesystem::absolute(out() / "report.html").string();
  auto dom_file = profile / "dom.html", log_file = profile / "log.txt";
  int status = system((chromium + flags + "--dump-dom " + url + " > " + dom_file.string() + " 2> " + log_file.string()).c_str());
  ASSERT_EQ(status, 0) << read_file(log_file);
  std::string dom = read_file(dom_file);
  for (const auto& id : report::report_sections("classification")) {
    EXPECT_NE(dom.find("<section id=\"" + id + "\">"), std::string::npos) << id;
  }
  EXPECT_NE(dom.find("<svg"), std::string::npos);
  for (const auto& [name, size] : {std::pair<std::string, std::string>{"phone", "412,3000"}, {"desktop", "1280,3000"}}) {
    auto png = artifacts / ("report-" + name + ".png");
    std::filesystem::remove(png);
    status = system((chromium + flags + "--hide-scrollbars --window-size=" + size + " --screenshot=" + png.string() + " " +
                     url + " >> " + log_file.string() + " 2>&1").c_str());
    ASSERT_EQ(status, 0) << read_file(log_file);
    ASSERT_TRUE(std::filesystem::exists(png)) << read_file(log_file);
    std::string bytes = read_file(png);
    EXPECT_EQ(bytes.substr(1, 3), "PNG");
    EXPECT_GT(bytes.size(), 20000u) << "a nearly empty screenshot: " << png;
  }
  for (const auto& line : split(read_file(log_file), '\n')) {
    EXPECT_EQ(line.find(":CONSOLE"), std::string::npos) << line;
    EXPECT_EQ(line.find("Uncaught"), std::string::npos) << line;
  }
}

}  // namespace
}  // namespace kd::test
