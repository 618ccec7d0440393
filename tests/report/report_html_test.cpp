// The analysis added to metrics.json and the report rendered from it, on hand-made outputs.
#include <gtest/gtest.h>

#include "kd/report/analysis.h"
#include "kd/report/html.h"
#include "kd/report/svg.h"
#include "kd/util/fs.h"
#include "test_util.h"

namespace kd::report {
namespace {

// Logits that put 3.0 on the given class of each row.
torch::Tensor logits_for(const std::vector<int64_t>& classes, int64_t c = 3) {
  auto z = torch::zeros({static_cast<int64_t>(classes.size()), c});
  for (size_t i = 0; i < classes.size(); ++i) z[i][classes[i]] = 3.0;
  return z;
}

nlohmann::json base_metrics(const std::string& task) {
  auto model = [](int64_t params, double ms, double accuracy) {
    return nlohmann::json{{"params", params}, {"macs", params}, {"bytes", params * 4},
                          {"latency_ms", {{"batch1", ms}, {"batch256", ms * 10}, {"threads", 2}}},
                          {"test", {{"accuracy", accuracy}, {"rmse", 1 - accuracy}, {"ece", 0.1}}}};
  };
  return {{"task", task}, {"seed", 0},
          {"data", {{"class_names", {"cat", "dog", "eel"}}, {"outputs", 3}, {"folds", 1}}},
          {"models", {{"teacher", model(1000, 2.0, 1.0)}, {"baseline", model(100, 0.5, 0.5)}, {"student", model(100, 0.5, 0.75)}}}};
}

TestOutputs classification_outputs() {
  // Labels 0 1 2 0; teacher all right; baseline right on rows 0, 2; student right on rows 0, 1, 2.
  TestOutputs f;
  f.labels = torch::tensor({0, 1, 2, 0}, torch::kLong);
  f.models["teacher"] = logits_for({0, 1, 2, 0});
  f.models["baseline"] = logits_for({0, 0, 2, 1});
  f.models["student"] = logits_for({0, 1, 2, 1});
  return f;
}

TEST(ReportAnalysis, PairedTestsSizeAndDisagreementsByHand) {
  auto metrics = base_metrics("classification");
  add_analysis(metrics, {classification_outputs()});
  const auto& sb = metrics["comparison"]["student_vs_baseline"];
  EXPECT_EQ(sb["metric"], "accuracy");
  // Row 1 only the student gets right: one discordant row, exact p = 2 * P[X <= 0 | n = 1] = 1.
  EXPECT_EQ(sb["folds"][0]["mcnemar"]["only_a"], 1);
  EXPECT_EQ(sb["folds"][0]["mcnemar"]["only_b"], 0);
  EXPECT_DOUBLE_EQ(sb["folds"][0]["mcnemar"]["p_value"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(sb["folds"][0]["bootstrap"]["difference"].get<double>(), 0.25);
  EXPECT_FALSE(sb.contains("across_folds"));
  // Student vs teacher: the student is wrong on row 3 only.
  EXPECT_EQ(metrics["comparison"]["student_vs_teacher"]["folds"][0]["mcnemar"]["only_b"], 1);
  // Sizes relative to the teacher: 1000 / 100 params, 2.0 / 0.5 ms.
  EXPECT_DOUBLE_EQ(metrics["models"]["student"]["compression_vs_teacher"].get<double>(), 10.0);
  EXPECT_DOUBLE_EQ(metrics["models"]["student"]["speedup_vs_teacher"]["batch1"].get<double>(), 4.0);
  EXPECT_DOUBLE_EQ(metrics["models"]["student"]["throughput_per_s"]["batch256"].get<double>(), 256 * 1000 / 5.0);
  // Confusion of the student: rows true, columns predicted.
  EXPECT_EQ(metrics["models"]["student"]["confusion"], nlohmann::json({{1, 1, 0}, {0, 1, 0}, {0, 0, 1}}));
  EXPECT_EQ(metrics["models"]["baseline"]["per_class"]["support"], nlohmann::json({2, 1, 1}));
  // The row where the student disagrees with the teacher comes first, with class names.
  const auto& d = metrics["disagreements"][0];
  EXPECT_EQ(d["row"], 3);
  EXPECT_EQ(d["teacher"], "cat");
  EXPECT_EQ(d["student"], "dog");
  EXPECT_GT(d["kl"].get<double>(), 1.0);
}

TEST(ReportAnalysis, AcrossFoldsPairedT) {
  auto metrics = base_metrics("classification");
  metrics["models"]["student"]["test"]["accuracy"] = {{"mean", 0.8}, {"std", 0.1}, {"folds", {0.7, 0.9}}};
  metrics["models"]["baseline"]["test"]["accuracy"] = {{"mean", 0.6}, {"std", 0.1}, {"folds", {0.6, 0.6}}};
  metrics["models"]["teacher"]["test"]["accuracy"] = {{"mean", 1.0}, {"std", 0.0}, {"folds", {1.0, 1.0}}};
  add_analysis(metrics, {classification_outputs(), classification_outputs()});
  const auto& t = metrics["comparison"]["student_vs_baseline"]["across_folds"];
  // Differences 0.1 and 0.3: mean 0.2, sd 0.1414, t = 0.2 / (0.1414 / sqrt 2) = 2.0, df 1: p = 0.2952 (scipy).
  EXPECT_NEAR(t["t"].get<double>(), 2.0, 1e-9);
  EXPECT_NEAR(t["p_value"].get<double>(), 0.29516723530086, 1e-9);
  EXPECT_EQ(metrics["comparison"]["student_vs_baseline"]["folds"].size(), 2u);
}

TEST(ReportHtml, EverySectionSelfContained) {
  auto metrics = base_metrics("classification");
  add_analysis(metrics, {classification_outputs()});
  ReportInputs inputs{metrics, "model,fold,epoch,train_loss,lr,seconds,val_metrics,terms\n"
                               "student,1,1,0.9,0.1,1.0,accuracy=0.5;nll=1,0.9\nstudent,1,2,0.7,0.1,1.0,accuracy=0.75;nll=0.8,0.7\n",
                      "task: classification\nseed: <0>\n", {classification_outputs()}, "report <x>"};
  auto html = render_html(inputs);
  for (const auto& id : report_sections("classification")) {
    EXPECT_NE(html.find("<section id=\"" + id + "\">"), std::string::npos) << id;
  }
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
  EXPECT_EQ(html.find("https:"), std::string::npos);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("name=\"viewport\""), std::string::npos);
  EXPECT_NE(html.find("@media print"), std::string::npos);
  // User text is escaped.
  EXPECT_NE(html.find("seed: &lt;0&gt;"), std::string::npos);
  EXPECT_NE(html.find("report &lt;x&gt;"), std::string::npos);
  EXPECT_NE(html.find("Distillation recovered <b>50%</b>"), std::string::npos);
}

TEST(ReportHtml, RegressionSections) {
  auto metrics = base_metrics("regression");
  TestOutputs f;
  f.labels = torch::tensor({1.0, 2.0, 3.0}).unsqueeze(1);
  f.models["teacher"] = torch::tensor({1.0, 2.0, 3.8}).unsqueeze(1);  // student differs by 0.5, 0, 0.8
  f.models["baseline"] = torch::tensor({2.0, 2.0, 2.0}).unsqueeze(1);
  f.models["student"] = torch::tensor({1.5, 2.0, 3.0}).unsqueeze(1);
  add_analysis(metrics, {f});
  // Student residuals 0.5, 0, 0: mean 1/6, max 0.5.
  EXPECT_NEAR(metrics["models"]["student"]["residuals"]["mean"].get<double>(), 1.0 / 6, 1e-6);
  EXPECT_NEAR(metrics["models"]["student"]["residuals"]["max_abs"].get<double>(), 0.5, 1e-6);
  EXPECT_EQ(metrics["comparison"]["student_vs_baseline"]["metric"], "rmse");
  EXPECT_FALSE(metrics["comparison"]["student_vs_baseline"]["folds"][0].contains("mcnemar"));
  // RMSE student sqrt(0.25/3), baseline sqrt(2/3).
  EXPECT_NEAR(metrics["comparison"]["student_vs_baseline"]["folds"][0]["bootstrap"]["difference"].get<double>(),
              std::sqrt(0.25 / 3) - std::sqrt(2.0 / 3), 1e-6);
  EXPECT_EQ(metrics["disagreements"][0]["row"], 2);
  auto html = render_html({metrics, "", "", {f}});
  for (const auto& id : report_sections("regression")) EXPECT_NE(html.find("id=\"" + id + "\""), std::string::npos) << id;
  EXPECT_EQ(html.find("id=\"confusion\""), std::string::npos);
}

TEST(ReportHtml, WriteReportNeedsMetrics) {
  test::TempDir dir;
  KD_EXPECT_ERROR(write_report(dir.path()), "no metrics.json");
  write_file_atomic(dir / "metrics.json", "{\"task\": \"classification\"}");
  KD_EXPECT_ERROR(write_report(dir.path()), "expected the keys task and models.teacher");
}

TEST(Svg, ChartsEscapeAndScale) {
  auto svg = chart_svg({{"a<b", {1, 2, 3}, {0.5, 0.7, 0.9}}}, ChartOptions().title("t & u"));
  EXPECT_NE(svg.find("viewBox=\"0 0 640 300\""), std::string::npos);
  EXPECT_NE(svg.find("t &amp; u"), std::string::npos);
  EXPECT_NE(svg.find("a&lt;b"), std::string::npos);
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
  auto heat = heatmap_svg({{3, 1}, {0, 4}}, {"x", "y"}, "m", "true", "predicted");
  EXPECT_NE(heat.find(">3</text>"), std::string::npos);
  EXPECT_EQ(short_number(28650), "28650");
  EXPECT_EQ(short_number(0.91234), "0.9123");
  EXPECT_EQ(short_number(2.5e6), "2.5e+06");
}

}  // namespace
}  // namespace kd::report
