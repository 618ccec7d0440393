#include "kd/report/analysis.h"

#include <algorithm>
#include <cmath>

#include "kd/data/npy.h"
#include "kd/report/metrics.h"
#include "kd/report/significance.h"
#include "kd/util/error.h"

namespace kd::report {

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kModelNames = {"teacher", "baseline", "student"};

std::vector<double> to_vector(const torch::Tensor& t) {
  auto c = t.to(torch::kDouble).contiguous().view({-1});
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

// The number per fold of a test metric ({mean, std, folds} with K folds, a number with one).
std::vector<double> per_fold(const nlohmann::json& value) {
  if (value.is_object()) return value.at("folds").get<std::vector<double>>();
  return {value.get<double>()};
}

nlohmann::json classification_model(const std::vector<TestOutputs>& folds, const std::string& name,
                                     const AnalysisOptions& options) {
  std::vector<torch::Tensor> logits, labels;
  for (const auto& f : folds) {
    logits.push_back(f.models.at(name));
    labels.push_back(f.labels);
  }
  auto z = torch::cat(logits).to(torch::kDouble);
  auto y = torch::cat(labels).to(torch::kLong);
  int64_t classes = z.size(1);
  auto predicted = z.argmax(1);
  auto scores = per_class_scores(predicted, y, classes);
  auto confusion = confusion_matrix(predicted, y, classes);
  std::vector<std::vector<int64_t>> rows;
  for (int64_t i = 0; i < classes; ++i) {
    auto r = confusion[i].contiguous();
    rows.emplace_back(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + classes);
  }
  auto bins = reliability_bins(torch::softmax(z, 1), y, options.reliability_bins());
  return {{"per_class", {{"precision", scores.precision}, {"recall", scores.recall}, {"f1", scores.f1},
                         {"support", scores.support}}},
          {"confusion", rows},
          {"reliability", {{"count", bins.count}, {"confidence", bins.confidence}, {"accuracy", bins.accuracy}}}};
}

nlohmann::json regression_model(const std::vector<TestOutputs>& folds, const std::string& name) {
  std::vector<torch::Tensor> residuals;
  for (const auto& f : folds) residuals.push_back((f.models.at(name) - f.labels.reshape_as(f.models.at(name))).to(torch::kDouble));
  auto r = torch::cat(residuals);
  return {{"residuals",
           {{"mean", r.mean().item<double>()}, {"std", r.std(false).item<double>()}, {"max_abs", r.abs().max().item<double>()}}}};
}

// Per-row values whose mean (or root mean) is the compared metric.
std::vector<double> per_row(Task task, const TestOutputs& f, const std::string& name) {
  const auto& out = f.models.at(name);
  if (task == Task::classification) return to_vector(out.argmax(1).eq(f.labels).to(torch::kDouble));
  auto error = out.to(torch::kDouble) - f.labels.to(torch::kDouble).reshape_as(out);
  return to_vector(error.pow(2).mean(1));
}

nlohmann::json compare(Task task, const nlohmann::json& models, const std::vector<TestOutputs>& folds,
                       const std::string& a, const std::string& b, const AnalysisOptions& options) {
  std::string metric = task == Task::classification ? "accuracy" : "rmse";
  nlohmann::json out = {{"a", a}, {"b", b}, {"metric", metric}};
  nlohmann::json per_fold_tests = nlohmann::json::array();
  for (size_t k = 0; k < folds.size(); ++k) {
    auto values_a = per_row(task, folds[k], a);
    auto values_b = per_row(task, folds[k], b);
    nlohmann::json fold;
    if (task == Task::classification) {
      std::vector<bool> correct_a(values_a.begin(), values_a.end()), correct_b(values_b.begin(), values_b.end());
      auto m = mcnemar(correct_a, correct_b);
      fold["mcnemar"] = {{"only_a", m.only_a}, {"only_b", m.only_b}, {"statistic", m.statistic},
                         {"p_value", m.p_value}, {"method", m.method}};
    }
    auto ci = paired_bootstrap(values_a, values_b, task == Task::classification ? Statistic::mean : Statistic::root_mean,
                               BootstrapOptions().resamples(options.bootstrap_resamples()).seed(options.seed() + k));
    fold["bootstrap"] = {{"difference", ci.difference}, {"low", ci.low}, {"high", ci.high},
                         {"fraction_positive", ci.fraction_positive}, {"resamples", ci.resamples},
                         {"confidence", ci.confidence}};
    per_fold_tests.push_back(fold);
  }
  out["folds"] = per_fold_tests;
  if (folds.size() > 1) {
    auto t = paired_t_test(per_fold(models.at(a).at("test").at(metric)), per_fold(models.at(b).at("test").at(metric)));
    out["across_folds"] = {{"n", t.n}, {"mean_difference", t.mean_difference}, {"std_difference", t.std_difference},
                           {"t", std::isfinite(t.t) ? nlohmann::json(t.t) : nlohmann::json()}, {"p_value", t.p_value}};
  }
  return out;
}

nlohmann::json disagreements(Task task, const std::vector<TestOutputs>& folds, const nlohmann::json& class_names,
                             int64_t keep) {
  auto name_of = [&](int64_t c) {
    return c < static_cast<int64_t>(class_names.size()) ? class_names[c].get<std::string>() : std::to_string(c);
  };
  // How far apart student and teacher are on each row: KL(teacher || student), or the absolute difference.
  struct Row {
    double score;
    size_t fold;
    int64_t row;
  };
  std::vector<Row> rows;
  for (size_t k = 0; k < folds.size(); ++k) {
    auto s = folds[k].models.at("student").to(torch::kDouble);
    auto t = folds[k].models.at("teacher").to(torch::kDouble);
    torch::Tensor gap;
    if (task == Task::classification) {
      auto log_p = torch::log_softmax(s, 1), log_q = torch::log_softmax(t, 1);
      gap = (log_q.exp() * (log_q - log_p)).sum(1);
    } else {
      gap = (s - t).abs().reshape({s.size(0), -1}).sum(1);
    }
    auto values = to_vector(gap);
    for (size_t i = 0; i < values.size(); ++i) rows.push_back({values[i], k, static_cast<int64_t>(i)});
  }
  std::stable_sort(rows.begin(), rows.end(), [](const Row& x, const Row& y) { return x.score > y.score; });
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < rows.size() && static_cast<int64_t>(i) < keep; ++i) {
    const auto& r = rows[i];
    const auto& f = folds[r.fold];
    auto s = f.models.at("student")[r.row].to(torch::kDouble);
    auto t = f.models.at("teacher")[r.row].to(torch::kDouble);
    nlohmann::json entry = {{"fold", r.fold + 1}, {"row", r.row}};
    if (task == Task::classification) {
      auto p = torch::softmax(s, 0), q = torch::softmax(t, 0);
      int64_t s_class = p.argmax().item<int64_t>(), t_class = q.argmax().item<int64_t>();
      entry.update({{"label", name_of(f.labels[r.row].item<int64_t>())}, {"teacher", name_of(t_class)},
                    {"teacher_p", q[t_class].item<double>()}, {"student", name_of(s_class)},
                    {"student_p", p[s_class].item<double>()}, {"kl", r.score}});
    } else {
      entry.update({{"label", to_vector(f.labels[r.row])}, {"teacher", to_vector(t)}, {"student", to_vector(s)},
                    {"abs_difference", r.score}});
    }
    out.push_back(entry);
  }
  return out;
}

double ratio(double numerator, double denominator) { return denominator > 0 ? numerator / denominator : 0.0; }

}  // namespace

fs::path test_outputs_dir(const fs::path& run_dir, size_t fold, size_t folds) {
  fs::path base = folds == 1 ? run_dir : run_dir / ("fold-" + std::to_string(fold + 1));
  return base / "test_outputs";
}

void write_test_outputs(const fs::path& dir, const TestOutputs& outputs) {
  fs::create_directories(dir);
  data::write_npy(dir / "labels.npy", outputs.labels);
  for (const auto& [name, tensor] : outputs.models) data::write_npy(dir / (name + ".npy"), tensor.to(torch::kFloat));
}

std::vector<TestOutputs> read_test_outputs(const fs::path& run_dir, size_t folds) {
  std::vector<TestOutputs> out;
  for (size_t k = 0; k < folds; ++k) {
    fs::path dir = test_outputs_dir(run_dir, k, folds);
    if (!fs::exists(dir / "labels.npy")) return {};
    TestOutputs f;
    f.labels = data::read_npy(dir / "labels.npy");
    for (const auto& name : kModelNames) {
      if (fs::exists(dir / (name + ".npy"))) f.models[name] = data::read_npy(dir / (name + ".npy"));
    }
    if (!f.models.count("teacher") || !f.models.count("student")) {
      fail("{}: teacher.npy and student.npy are needed beside labels.npy", dir.string());
    }
    for (const auto& [name, tensor] : f.models) {
      if (tensor.size(0) != f.labels.size(0)) {
        fail("{}: {}.npy has {} rows, labels.npy {}", dir.string(), name, tensor.size(0), f.labels.size(0));
      }
    }
    out.push_back(std::move(f));
  }
  return out;
}

nlohmann::json model_analysis(Task task, const std::vector<TestOutputs>& folds, const std::string& name,
                              const AnalysisOptions& options) {
  return task == Task::classification ? classification_model(folds, name, options) : regression_model(folds, name);
}

void add_analysis(nlohmann::json& metrics, const std::vector<TestOutputs>& folds, const AnalysisOptions& options) {
  Task task = parse_task(metrics.at("task").get<std::string>(), "metrics.json: task");
  auto& models = metrics.at("models");
  const auto& teacher = models.at("teacher");
  for (auto& [name, m] : models.items()) {
    if (m.contains("params") && teacher.contains("params")) {
      m["compression_vs_teacher"] = ratio(teacher["params"].get<double>(), m["params"].get<double>());
    }
    if (m.contains("latency_ms")) {
      for (const char* batch : {"batch1", "batch256"}) {
        double ms = m["latency_ms"].value(batch, 0.0);
        m["speedup_vs_teacher"][batch] = ratio(teacher["latency_ms"].value(batch, 0.0), ms);
        m["throughput_per_s"][batch] = ratio((std::string(batch) == "batch1" ? 1.0 : 256.0) * 1000.0, ms);
      }
    }
    if (folds.empty() || !folds[0].models.count(name)) continue;
    m.update(model_analysis(task, folds, name, options));
  }
  if (folds.empty()) return;
  nlohmann::json comparison;
  if (folds[0].models.count("baseline")) {
    comparison["student_vs_baseline"] = compare(task, models, folds, "student", "baseline", options);
  }
  comparison["student_vs_teacher"] = compare(task, models, folds, "student", "teacher", options);
  metrics["comparison"] = comparison;
  nlohmann::json class_names = metrics.contains("data") ? metrics["data"].value("class_names", nlohmann::json::array())
                                                        : nlohmann::json::array();
  metrics["disagreements"] = disagreements(task, folds, class_names, options.disagreements());
}

}  // namespace kd::report
