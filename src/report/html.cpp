#include "kd/report/html.h"

#include <fmt/format.h>
#include <torch/version.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "kd/report/metrics.h"
#include "kd/report/svg.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/runtime.h"
#include "kd/util/strings.h"
#include "kd/util/version.h"

namespace kd::report {

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kModels = {"teacher", "baseline", "student"};

const char* kCss = R"(
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0 auto;max-width:980px;padding:12px}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
nav a{margin-right:.8em;white-space:nowrap}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:.85em}
.charts{display:flex;flex-wrap:wrap;gap:8px}.charts>div{flex:1 1 300px;min-width:0;max-width:640px}
.note{color:#555;font-size:.9em}
.good{color:#1a7f37}.bad{color:#b42318}
svg{max-width:100%;height:auto}
@media (max-width:600px){body{font-size:14px;padding:6px}th,td{padding:2px 4px}}
@media print{nav{display:none}body{max-width:none;font-size:11px}section{break-inside:avoid-page}h2{break-after:avoid}a{color:inherit;text-decoration:none}}
)";

std::string h(const std::string& text) { return escape_xml(text); }

double number(const nlohmann::json& v) {
  if (v.is_object()) return v.at("mean").get<double>();
  return v.is_number() ? v.get<double>() : NAN;
}

// " Its 10 classes were mapped onto the data's ..." for a loaded teacher's evidence, or "" when its
// classes are the data's.
std::string class_mapping_text(const nlohmann::json& evidence) {
  std::string mapping = evidence.value("class_mapping", "");
  if (mapping == "learned") {
    const auto& p = evidence["class_projection"];
    return fmt::format(" Its {} classes were mapped onto the data's by a projection of its log-probabilities "
                       "learned on {} labelled training rows (teacher.classes: learned; accuracy {:.1f}% on them).",
                       p.value("teacher_classes", 0), p.value("rows", 0), 100 * p.value("accuracy", 0.0));
  }
  if (mapping.empty() || !evidence.contains("classes")) return "";
  std::vector<std::string> groups;
  for (const auto& group : evidence["classes"]) groups.push_back(group.dump());
  return fmt::format(" Its outputs were mapped onto the data's classes {} (each class its outputs' summed probability): {}.",
                     mapping == "names" ? "by class name" : "as teacher.classes says", h(join(groups, ", ")));
}

std::string cell(const nlohmann::json& test, const std::string& key, double scale = 1, int decimals = 4) {
  return metric_cell(test, key, scale, decimals);
}

std::vector<std::string> present_models(const nlohmann::json& metrics) {
  std::vector<std::string> out;
  for (const auto& m : kModels) {
    if (metrics.at("models").contains(m)) out.push_back(m);
  }
  return out;
}

std::vector<std::string> class_names(const nlohmann::json& metrics) {
  std::vector<std::string> names;
  if (metrics.contains("data") && metrics["data"].contains("class_names")) {
    names = metrics["data"]["class_names"].get<std::vector<std::string>>();
  }
  int64_t outputs = metrics.contains("data") ? metrics["data"].value("outputs", int64_t{0}) : 0;
  for (auto c = static_cast<int64_t>(names.size()); c < outputs; ++c) names.push_back(std::to_string(c));
  return names;
}

// epochs.csv rows: model, fold, epoch, train_loss, val metrics.
struct EpochRow {
  std::string model;
  int fold = 1, epoch = 0;
  double train_loss = NAN;
  std::map<std::string, double> val;
};

std::vector<EpochRow> parse_epochs(const std::string& csv) {
  std::vector<EpochRow> rows;
  auto lines = split(csv, '\n');
  for (size_t i = 1; i < lines.size(); ++i) {
    auto cells = split(lines[i], ',');
    if (cells.size() < 7) continue;
    EpochRow r;
    r.model = cells[0];
    r.fold = std::atoi(cells[1].c_str());
    r.epoch = std::atoi(cells[2].c_str());
    r.train_loss = std::atof(cells[3].c_str());
    for (const auto& kv : split(cells[6], ';')) {
      auto eq = kv.find('=');
      if (eq != std::string::npos) r.val[kv.substr(0, eq)] = std::atof(kv.substr(eq + 1).c_str());
    }
    rows.push_back(r);
  }
  return rows;
}

std::string section(const std::string& id, const std::string& title, const std::string& body) {
  return fmt::format("<section id=\"{}\"><h2>{}</h2>\n{}</section>\n", id, h(title), body);
}

std::string p_text(double p) { return p < 1e-4 ? fmt::format("{:.1e}", p) : fmt::format("{:.4f}", p); }

// "kl at T 2 (0.5) + ce (0.5)", "mse to teacher (0.5) + mse to labels (0.5)": metrics.json's distill.loss.
std::string objective_text(const nlohmann::json& terms) {
  std::vector<std::string> parts;
  for (const auto& t : terms) {
    std::string kind = t.value("kind", "?");
    bool tempered = t.contains("temperature") && t["temperature"].get<double>() != 1.0;
    std::string target = t.contains("target") && t["target"].is_string() ? " to " + t["target"].get<std::string>() : "";
    parts.push_back(kind + target + (tempered ? fmt::format(" at T {:g}", t["temperature"].get<double>()) : "") +
                    fmt::format(" ({:g})", t.value("weight", 1.0)));
  }
  return join(parts, " + ");
}

// How the distilled student was taught: the objective, its stages, and where the teacher's outputs
// came from (metrics.json distill: loss, stages, epochs_run, augment, teaching).
std::string teaching_text(const nlohmann::json& distill) {
  auto epochs = [](int64_t n) { return fmt::format("{} epoch{}", n, n == 1 ? "" : "s"); };
  std::string text;
  if (distill.contains("stages")) {
    std::vector<std::string> stages;
    for (const auto& s : distill["stages"]) {
      stages.push_back(epochs(s.value("epochs", int64_t{0})) + " of " + join(s.value("losses", std::vector<std::string>{}), " + "));
    }
    text = fmt::format("The distilled student learned in {} stages: {}", stages.size(), join(stages, ", then "));
  } else {
    text = "The distilled student learned from " + objective_text(distill.value("loss", nlohmann::json::array()));
    if (distill.contains("epochs_run")) text += ", " + epochs(distill["epochs_run"].get<int64_t>());
  }
  const auto& teaching = distill.value("teaching", nlohmann::json::object());
  std::string mode = teaching.value("mode", "");
  std::string augment = distill.value("augment", "none");
  auto bytes = [&] { return bytes_text(teaching.value("bytes", 0.0)); };
  if (mode == "cache") {
    text += fmt::format("; the teacher's outputs on the training rows were computed once ({})", bytes());
  } else if (mode == "bank") {
    int64_t top_k = teaching.value("top_k", int64_t{0});
    text += fmt::format("; each epoch's rows were views ({}), taught from a soft-label bank of the teacher's outputs on {} "
                        "views of each row, computed once before training ({}, {}{}{}; {:.1f} s of teacher time)",
                        augment, teaching.value("views", int64_t{0}), bytes(), teaching.value("dtype", "float16"),
                        top_k > 0 ? fmt::format(", the {} largest logits of each view", top_k) : "",
                        teaching.value("storage", "") == "mapped file" ? ", in a memory-mapped file" : "",
                        teaching.value("seconds", 0.0));
  } else if (mode == "online") {
    text += augment == "none" ? "; the teacher ran on every batch"
                              : fmt::format("; the teacher ran on every batch of views ({})", augment);
  }
  return text + ".";
}

std::string summary(const nlohmann::json& metrics, bool classification) {
  std::ostringstream o;
  const auto& models = metrics.at("models");
  size_t folds = metrics.contains("data") ? metrics["data"].value("folds", size_t{1}) : 1;
  o << "<div class=\"scroll\"><table><tr><th>model</th><th>params</th>";
  std::vector<std::pair<std::string, std::string>> columns;
  if (classification) {
    columns = {{"accuracy", "accuracy %"}, {"errors", "errors"}, {"top5_accuracy", "top-5 %"}, {"macro_f1", "macro-F1"},
               {"nll", "NLL"}, {"ece", "ECE"}, {"agreement_with_teacher", "agree %"}, {"kl_to_teacher", "KL to teacher"}};
  } else {
    columns = {{"mae", "MAE"}, {"rmse", "RMSE"}, {"r2", "R²"}, {"mse_to_teacher", "MSE to teacher"}};
  }
  for (const auto& c : columns) o << "<th>" << h(c.second) << "</th>";
  o << "</tr>\n";
  for (const auto& name : present_models(metrics)) {
    const auto& m = models.at(name);
    const auto& t = m.at("test");
    o << "<tr><td>" << name << "</td><td>" << m.value("params", int64_t{0}) << "</td>";
    for (const auto& [key, label] : columns) {
      bool percent = key == "accuracy" || key == "top5_accuracy" || key == "agreement_with_teacher";
      o << "<td>" << cell(t, key, percent ? 100 : 1, key == "errors" ? 0 : percent ? 2 : 4) << "</td>";
    }
    o << "</tr>\n";
  }
  o << "</table></div>\n";
  if (folds > 1) o << fmt::format("<p class=\"note\">Mean ± standard deviation over {} folds (each fold's models on the same test rows).</p>\n", folds);
  if (metrics.contains("teacher_input")) {
    const auto& input = metrics["teacher_input"];
    if (input.contains("ensemble")) {
      o << "<p class=\"note\">Each teacher file was fed as its own evidence says (metrics.json teacher_input).";
      for (const auto& member : input["ensemble"]) o << class_mapping_text(member);
      o << "</p>\n";
    } else {
      o << "<p class=\"note\">The teacher file was fed " << h(input.value("fed", "?")) << " inputs and its outputs read as "
        << h(input.value("outputs", "?")) << " (" << h(input.value("why", "")) << ")." << class_mapping_text(input)
        << "</p>\n";
    }
  }
  if (models.contains("teacher") && models["teacher"].contains("members")) {
    const auto& members = models["teacher"]["members"];
    std::string key = classification ? "accuracy" : "rmse";
    o << "<p class=\"note\">The teacher is an ensemble of " << members.size() << " models. On their own, in test "
      << key << ":";
    for (const auto& member : members) {
      double value = number(member["test"][key]);
      o << " " << h(std::filesystem::path(member.value("file", "")).filename().string()) << " (weight "
        << fmt::format("{:.3g}", member.value("weight", 1.0)) << ") "
        << (classification ? fmt::format("{:.2f}%", 100 * value) : fmt::format("{:.4g}", value)) << ";";
    }
    std::string combine = models["teacher"].value("combine", "");
    if (combine == "correctness") {
      o << " Combined per row by each member's precision for the class it predicts, measured on "
        << models["teacher"]["correctness"].value("rows", 0) << " labelled training rows.";
    } else if (!combine.empty()) {
      o << " Combined by " << h(combine) << ".";
    }
    o << "</p>\n";
  }
  if (metrics.contains("distill") && metrics["distill"].contains("loss")) {
    o << "<p class=\"note\">" << h(teaching_text(metrics["distill"])) << "</p>\n";
  }
  for (const auto& name : present_models(metrics)) {  // training that diverged and went back (metrics.json)
    const auto& m = models.at(name);
    if (!m.contains("training")) continue;
    const auto& training = m["training"];
    for (const auto& fold : training.is_array() ? training : nlohmann::json::array({training})) {
      for (const auto& d : fold.value("divergences", nlohmann::json::array())) {
        o << fmt::format("<p class=\"note\">The {} diverged at epoch {} step {} ({}): training went back to its last "
                         "good state with the learning rate {:g} instead of {:g}.</p>\n",
                         name, d.value("epoch", 0), d.value("step", 0), h(d.value("what", "")),
                         d.value("lr_after", 0.0), d.value("lr", 0.0));
      }
    }
  }
  if (models.contains("baseline")) {
    std::string key = classification ? "accuracy" : "rmse";
    double teacher = number(models["teacher"]["test"][key]), baseline = number(models["baseline"]["test"][key]);
    double student = number(models["student"]["test"][key]);
    bool teacher_better = classification ? teacher > baseline : teacher < baseline;
    if (teacher_better) {
      o << fmt::format("<p>Distillation recovered <b>{:.0f}%</b> of the teacher–baseline gap in test {}.</p>\n",
                       100.0 * (student - baseline) / (teacher - baseline), key);
    } else {
      o << fmt::format("<p>The baseline matched or beat the teacher in test {}: there was no gap to recover.</p>\n", key);
    }
  }
  if (metrics.contains("distill") && metrics["distill"].contains("validation") &&
      !metrics["distill"]["validation"].is_null()) {
    const auto& v = metrics["distill"]["validation"];
    VerdictWords words = verdict_words(v);
    std::string evidence = words.evidence;
    if (!evidence.empty()) evidence[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(evidence[0])));
    bool decided = v.value("verdict", "") != "no significant difference";
    o << "<p>" << h(evidence) << ": " << (decided ? "<b>" + h(words.conclusion) + "</b>" : h(words.conclusion))
      << (words.detail.empty() ? "" : ": " + h(words.detail)) << ".</p>\n";
  }
  return o.str();
}

std::string significance(const nlohmann::json& metrics, bool classification) {
  std::ostringstream o;
  if (!metrics.contains("comparison")) return "<p>No test outputs in this run folder: no paired tests.</p>";
  double scale = classification ? 100 : 1;
  std::string unit = classification ? " points" : "";
  for (const char* key : {"student_vs_baseline", "student_vs_teacher"}) {
    if (!metrics["comparison"].contains(key)) continue;
    const auto& c = metrics["comparison"][key];
    std::string metric = c.at("metric");
    o << fmt::format("<h3>{} vs. {} ({})</h3>\n<div class=\"scroll\"><table><tr><th>fold</th>", c.at("a").get<std::string>(),
                     c.at("b").get<std::string>(), metric);
    if (classification) o << "<th>only student right</th><th>only other right</th><th>McNemar p</th>";
    o << fmt::format("<th>{} difference</th><th>95% bootstrap CI</th><th>verdict</th></tr>\n", metric);
    const auto& folds = c.at("folds");
    for (size_t k = 0; k < folds.size(); ++k) {
      const auto& f = folds[k];
      const auto& b = f.at("bootstrap");
      double low = b.at("low").get<double>(), high = b.at("high").get<double>();
      bool ci_excludes_zero = low > 0 || high < 0;
      bool significant = ci_excludes_zero;
      o << "<tr><td>" << k + 1 << "</td>";
      if (f.contains("mcnemar")) {
        const auto& m = f["mcnemar"];
        significant = significant && m.at("p_value").get<double>() < 0.05;
        o << fmt::format("<td>{}</td><td>{}</td><td>{} ({})</td>", m.at("only_a").get<int64_t>(), m.at("only_b").get<int64_t>(),
                         p_text(m.at("p_value")), m.at("method").get<std::string>());
      }
      double d = b.at("difference").get<double>();
      bool better = classification ? d > 0 : d < 0;
      o << fmt::format("<td>{:+.3f}{}</td><td>[{:+.3f}, {:+.3f}]</td><td class=\"{}\">{}</td></tr>\n", d * scale, unit,
                       low * scale, high * scale, significant ? (better ? "good" : "bad") : "",
                       significant ? (better ? "real gain" : "real loss") : "within noise");
    }
    o << "</table></div>\n";
    if (c.contains("across_folds")) {
      const auto& t = c["across_folds"];
      o << fmt::format("<p>Across {} folds: mean {} difference {:+.4f} (sd {:.4f}), paired t = {}, p = {}.</p>\n",
                       t.at("n").get<int64_t>(), metric, t.at("mean_difference").get<double>() * scale,
                       t.at("std_difference").get<double>() * scale,
                       t.at("t").is_null() ? "-" : fmt::format("{:.3f}", t.at("t").get<double>()), p_text(t.at("p_value")));
    }
  }
  o << "<p class=\"note\">Paired on the same test rows. McNemar: exact binomial below 25 discordant rows, chi-square with "
       "continuity correction otherwise. Bootstrap: "
    << (classification ? "accuracy" : "RMSE")
    << " of the student minus the other model over resampled rows (percentile interval). \"Real\" needs the interval to "
       "exclude 0"
    << (classification ? " and McNemar p &lt; 0.05" : "") << ".</p>\n";
  return o.str();
}

std::string learning_curves(const nlohmann::json& metrics, const std::string& epochs_csv, bool classification) {
  auto rows = parse_epochs(epochs_csv);
  if (rows.empty()) return "<p>No epochs were trained in this run (epochs.csv is empty).</p>";
  std::string metric = classification ? "accuracy" : "rmse";
  std::vector<Series> val, loss;
  for (const auto& name : kModels) {
    Series v{name, {}, {}}, l{name, {}, {}};
    for (const auto& r : rows) {
      if (r.model != name || r.fold != 1) continue;
      v.x.push_back(r.epoch);
      v.y.push_back(r.val.count(metric) ? r.val.at(metric) : NAN);
      l.x.push_back(r.epoch);
      l.y.push_back(r.train_loss);
    }
    if (!v.x.empty()) val.push_back(v), loss.push_back(l);
  }
  std::ostringstream o;
  o << "<div class=\"charts\"><div>"
    << chart_svg(val, ChartOptions().title("validation " + metric).x_label("epoch").y_label(metric)) << "</div><div>"
    << chart_svg(loss, ChartOptions().title("training loss").x_label("epoch").y_label("loss")) << "</div></div>\n";
  size_t folds = metrics.contains("data") ? metrics["data"].value("folds", size_t{1}) : 1;
  if (folds > 1) o << "<p class=\"note\">Fold 1 of " << folds << "; epochs.csv has every fold.</p>\n";
  o << "<p class=\"note\">A loaded teacher has no curve. The student's loss is its distillation objective, not "
       "comparable with the others' cross-entropy.</p>\n";
  return o.str();
}

std::string calibration(const nlohmann::json& metrics) {
  std::vector<Series> series;
  std::ostringstream caption;
  for (const auto& name : present_models(metrics)) {
    const auto& m = metrics["models"][name];
    if (!m.contains("reliability")) continue;
    const auto& r = m["reliability"];
    auto count = r["count"].get<std::vector<int64_t>>();
    auto confidence = r["confidence"].get<std::vector<double>>();
    auto accuracy = r["accuracy"].get<std::vector<double>>();
    Series s{name, {}, {}};
    for (size_t b = 0; b < count.size(); ++b) {
      if (count[b] == 0) continue;
      s.x.push_back(confidence[b]);
      s.y.push_back(accuracy[b]);
    }
    series.push_back(s);
    caption << name << " ECE " << cell(m["test"], "ece") << "; ";
  }
  if (series.empty()) return "<p>No test outputs in this run folder.</p>";
  return "<div class=\"charts\"><div>" +
         chart_svg(series, ChartOptions().title("reliability diagram (15 bins)").x_label("confidence").y_label("accuracy")
                               .x_min(0.0).x_max(1.0).y_min(0.0).y_max(1.0).diagonal(true).height(340)) +
         "</div></div>\n<p class=\"note\">Each point is one confidence bin (empty bins left out); on the dashed line a "
         "model is calibrated. " + h(caption.str()) + "pooled over folds.</p>\n";
}

std::string confusion(const nlohmann::json& metrics) {
  auto names = class_names(metrics);
  std::ostringstream o;
  o << "<div class=\"charts\">";
  for (const auto& name : present_models(metrics)) {
    const auto& m = metrics["models"][name];
    if (!m.contains("confusion")) continue;
    o << "<div>" << heatmap_svg(m["confusion"].get<std::vector<std::vector<double>>>(), names, name, "true", "predicted")
      << "</div>";
  }
  o << "</div>\n<p class=\"note\">Counts of test rows (summed over folds); blue: right, red: wrong, shade by the row's share.</p>\n";
  return o.str();
}

std::string per_class(const nlohmann::json& metrics) {
  auto names = class_names(metrics);
  std::vector<Series> recall, precision;
  std::ostringstream table;
  table << "<div class=\"scroll\"><table><tr><th>class</th><th>support</th>";
  auto models = present_models(metrics);
  for (const auto& name : models) table << "<th>" << name << " P / R / F1</th>";
  table << "</tr>\n";
  for (const auto& name : models) {
    const auto& m = metrics["models"][name];
    if (!m.contains("per_class")) continue;
    Series r{name, {}, m["per_class"]["recall"].get<std::vector<double>>(), "bars"};
    Series p{name, {}, m["per_class"]["precision"].get<std::vector<double>>(), "bars"};
    for (size_t c = 0; c < r.y.size(); ++c) r.x.push_back(static_cast<double>(c)), p.x.push_back(static_cast<double>(c));
    recall.push_back(r);
    precision.push_back(p);
  }
  if (recall.empty()) return "<p>No test outputs in this run folder.</p>";
  const auto& first = metrics["models"][models[0]]["per_class"];
  for (size_t c = 0; c < names.size() && c < first["support"].size(); ++c) {
    table << "<tr><td>" << h(names[c]) << "</td><td>" << first["support"][c].get<int64_t>() << "</td>";
    for (const auto& name : models) {
      const auto& pc = metrics["models"][name]["per_class"];
      table << fmt::format("<td>{:.3f} / {:.3f} / {:.3f}</td>", pc["precision"][c].get<double>(), pc["recall"][c].get<double>(),
                           pc["f1"][c].get<double>());
    }
    table << "</tr>\n";
  }
  table << "</table></div>\n";
  auto options = ChartOptions().categories(names).y_min(0.0).y_max(1.0).x_label("class");
  return "<div class=\"charts\"><div>" + chart_svg(recall, options.title("recall per class").y_label("recall")) +
         "</div><div>" + chart_svg(precision, options.title("precision per class").y_label("precision")) +
         "</div></div>\n" + table.str();
}

std::string disagreements(const nlohmann::json& metrics, bool classification) {
  if (!metrics.contains("disagreements") || metrics["disagreements"].empty()) return "<p>No test outputs in this run folder.</p>";
  std::ostringstream o;
  o << "<div class=\"scroll\"><table><tr><th>fold</th><th>test row</th><th>label</th><th>teacher</th><th>student</th><th>"
    << (classification ? "KL(teacher‖student)" : "|student − teacher|") << "</th></tr>\n";
  auto values = [](const nlohmann::json& v) {
    std::vector<std::string> parts;
    for (const auto& x : v) parts.push_back(short_number(x.get<double>()));
    return join(parts, ", ");
  };
  for (const auto& d : metrics["disagreements"]) {
    o << "<tr><td>" << d.at("fold").get<int64_t>() << "</td><td>" << d.at("row").get<int64_t>() << "</td>";
    if (classification) {
      o << fmt::format("<td>{}</td><td>{} ({:.2f})</td><td>{} ({:.2f})</td><td>{:.3f}</td>", h(d["label"]), h(d["teacher"]),
                       d["teacher_p"].get<double>(), h(d["student"]), d["student_p"].get<double>(), d["kl"].get<double>());
    } else {
      o << fmt::format("<td>{}</td><td>{}</td><td>{}</td><td>{:.4g}</td>", values(d["label"]), values(d["teacher"]),
                       values(d["student"]), d["abs_difference"].get<double>());
    }
    o << "</tr>\n";
  }
  o << "</table></div>\n<p class=\"note\">The test rows (0-based, in the order of the test set) where the student's "
    << (classification ? "probabilities differ most from the teacher's (class and its probability shown)"
                       : "predictions differ most from the teacher's")
    << ".</p>\n";
  return o.str();
}

std::string residuals(const nlohmann::json& metrics, const std::vector<TestOutputs>& outputs) {
  if (outputs.empty()) return "<p>No test outputs in this run folder.</p>";
  const auto& f = outputs[0];
  auto column = [](const torch::Tensor& t) {
    auto c = t.to(torch::kDouble).reshape({t.size(0), -1}).select(1, 0).contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  auto y = column(f.labels);
  std::vector<Series> residual;
  for (const auto& name : kModels) {
    if (!f.models.count(name)) continue;
    auto p = column(f.models.at(name));
    Series s{name, p, {}, "points"};
    for (size_t i = 0; i < p.size(); ++i) s.y.push_back(p[i] - y[i]);
    residual.push_back(s);
  }
  auto teacher = column(f.models.at("teacher"));
  std::vector<Series> versus = {Series{"student", teacher, column(f.models.at("student")), "points"}};
  if (f.models.count("baseline")) versus.push_back(Series{"baseline", teacher, column(f.models.at("baseline")), "points"});
  std::ostringstream o;
  o << "<div class=\"charts\"><div>"
    << chart_svg(residual, ChartOptions().title("residuals (prediction − target)").x_label("prediction").y_label("residual").zero_line(true))
    << "</div><div>"
    << chart_svg(versus, ChartOptions().title("student vs. teacher predictions").x_label("teacher").y_label("model").diagonal(true))
    << "</div></div>\n<div class=\"scroll\"><table><tr><th>model</th><th>mean residual</th><th>sd</th><th>max |residual|</th></tr>\n";
  for (const auto& name : present_models(metrics)) {
    const auto& m = metrics["models"][name];
    if (!m.contains("residuals")) continue;
    o << fmt::format("<tr><td>{}</td><td>{:.4g}</td><td>{:.4g}</td><td>{:.4g}</td></tr>\n", name, m["residuals"]["mean"].get<double>(),
                     m["residuals"]["std"].get<double>(), m["residuals"]["max_abs"].get<double>());
  }
  o << "</table></div><p class=\"note\">Fold 1, first target; in the targets' own units.</p>\n";
  return o.str();
}

std::string size_and_cost(const nlohmann::json& metrics, bool classification) {
  std::ostringstream o;
  int64_t threads = metrics.contains("timing") ? metrics["timing"].value("threads", int64_t{0}) : 0;
  o << "<div class=\"scroll\"><table><tr><th>model</th><th>params</th><th>file bytes</th><th>MACs / example</th>"
       "<th>ms, batch 1</th><th>ms, batch 256</th><th>examples/s, batch 256</th><th>compression</th>"
       "<th>speed-up, batch 1</th><th>speed-up, batch 256</th></tr>\n";
  std::string key = classification ? "accuracy" : "rmse";
  std::vector<Series> points;
  for (const auto& name : present_models(metrics)) {
    const auto& m = metrics["models"][name];
    auto latency = m.value("latency_ms", nlohmann::json::object());
    auto speedup = m.value("speedup_vs_teacher", nlohmann::json::object());
    auto throughput = m.value("throughput_per_s", nlohmann::json::object());
    // The median, and the 10th to 90th percentiles where measured.
    auto ms = [&latency](const std::string& batch) {
      double median = latency.value(batch, NAN);
      if (!latency.contains(batch + "_p10")) return fmt::format("{:.3f}", median);
      return fmt::format("{:.3f} <span class=\"note\">({:.3f}–{:.3f})</span>", median, latency.value(batch + "_p10", NAN),
                         latency.value(batch + "_p90", NAN));
    };
    o << fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0f}</td>"
                     "<td>{:.2f}×</td><td>{:.2f}×</td><td>{:.2f}×</td></tr>\n",
                     name, m.value("params", int64_t{0}), m.value("bytes", int64_t{0}), m.value("macs", int64_t{0}),
                     ms("batch1"), ms("batch256"), throughput.value("batch256", NAN),
                     m.value("compression_vs_teacher", NAN), speedup.value("batch1", NAN), speedup.value("batch256", NAN));
    points.push_back(Series{name, {m.value("params", 0.0)}, {number(m["test"][key]) * (classification ? 100 : 1)}, "points", "", {name}});
  }
  o << "</table></div>\n";
  o << fmt::format("<p class=\"note\">Latency: the median (in brackets the 10th to 90th percentiles) of repeated "
                   "forward passes on test rows after a warm-up, at least 20 at batch 1 and 30 ms of them, {} thread{}. "
                   "Compression and speed-up: the teacher's parameters or latency over the model's.</p>\n",
                   threads, threads == 1 ? "" : "s");
  o << "<div class=\"charts\"><div>"
    << chart_svg(points, ChartOptions().title("size vs. test " + key).x_label("parameters (log scale)").log_x(true)
                             .y_label(classification ? "accuracy %" : key))
    << "</div></div>\n";
  if (metrics.contains("export_bytes") && !metrics["export_bytes"].empty()) {
    o << "<h3>Exported files</h3><div class=\"scroll\"><table><tr><th>file</th><th>bytes</th></tr>\n";
    for (const auto& [file, bytes] : metrics["export_bytes"].items()) {
      o << "<tr><td>" << h(file) << "</td><td>" << bytes.get<int64_t>() << "</td></tr>\n";
    }
    o << "</table></div>\n";
  }
  return o.str();
}


// The search of `kdistill auto`: every trial's validation value against its size, the Pareto front
// and the chosen student.
std::string search_results(const nlohmann::json& metrics) {
  const auto& s = metrics.at("search");
  std::string metric = s.value("metric", "accuracy");
  std::string axis = s.value("front_axis", "params");
  std::set<int64_t> front;
  for (const auto& id : s.value("front", nlohmann::json::array())) front.insert(id.get<int64_t>());
  int64_t chosen = s.contains("chosen") ? s["chosen"].value("trial", int64_t{-1}) : -1;
  Series complete{"complete", {}, {}, "points", "#888888"};
  Series partial{"pruned or stopped", {}, {}, "points", "#cccccc"};
  Series front_line{"Pareto front", {}, {}, "line", "#1f77b4"};
  Series pick{"chosen", {}, {}, "points", "#d62728", {}};
  std::vector<std::pair<double, double>> front_points;
  std::map<int64_t, nlohmann::json> by_trial;
  double x_min = INFINITY, x_max = 0;
  for (const auto& p : s.value("points", nlohmann::json::array())) {
    if (p["value"].is_null() || !(p.value("size", 0.0) > 0)) continue;
    double x = p["size"].get<double>(), y = p["value"].get<double>();
    x_min = std::min(x_min, x);
    x_max = std::max(x_max, x);
    int64_t id = p["trial"].get<int64_t>();
    by_trial[id] = p;
    (p.value("status", "") == "complete" ? complete : partial).x.push_back(x);
    (p.value("status", "") == "complete" ? complete : partial).y.push_back(y);
    if (front.count(id)) front_points.push_back({x, y});
    if (id == chosen) {
      pick.x.push_back(x);
      pick.y.push_back(y);
      pick.labels.push_back("trial " + std::to_string(id));
    }
  }
  // The front's rows by increasing size, as search.json lists them.
  std::ostringstream rows;
  bool size_column = axis != "params";
  for (const auto& id_json : s.value("front", nlohmann::json::array())) {
    int64_t id = id_json.get<int64_t>();
    if (!by_trial.count(id)) continue;
    const auto& p = by_trial[id];
    rows << "<tr><td>" << id << "</td><td>" << p.value("params", int64_t{0}) << "</td>";
    if (size_column) rows << "<td>" << short_number(p["size"].get<double>()) << "</td>";
    rows << fmt::format("<td>{:.4g}</td><td>{}</td><td>{}</td></tr>\n", p["value"].get<double>(),
                        p.value("meets_target", false) ? "yes" : "no",
                        h(p.value("config", "")) + (id == chosen ? " <b>(chosen)</b>" : ""));
  }
  std::sort(front_points.begin(), front_points.end());
  for (const auto& [x, y] : front_points) {
    front_line.x.push_back(x);
    front_line.y.push_back(y);
  }
  std::vector<Series> series = {complete, partial, front_line, pick};
  if (s.contains("threshold") && x_max > 0) {
    double t = s["threshold"].get<double>();
    series.push_back(Series{"threshold", {x_min, x_max}, {t, t}, "line", "#2ca02c"});
  }
  std::ostringstream o;
  std::vector<std::string> counts;
  auto status_counts = s.value("status_counts", nlohmann::json::object());
  for (const auto& [status, n] : status_counts.items()) {
    counts.push_back(fmt::format("{} {}", n.get<int64_t>(), status));
  }
  o << fmt::format("<p>{} trials in {:.0f} s of a {:.0f} s budget ({}); trials of {} epochs, pruned at epochs {} "
                   "(successive halving, η = {}). Target <code>{}</code> on validation rows: threshold {:.4g} "
                   "(teacher {:.4g}). {}</p>\n",
                   s.value("trials", 0), s.value("search_seconds", 0.0), s.value("budget_seconds", 0.0), h(join(counts, ", ")),
                   s.value("epochs", 0), h(s.value("rungs", nlohmann::json::array()).dump()), s.value("eta", 3),
                   h(s.value("target", "")), s.value("threshold", 0.0), s.value("teacher_val", 0.0),
                   s.value("target_reached", false)
                       ? "The chosen student is the smallest complete trial that meets it."
                       : "<b>No complete trial met the target</b>: the chosen student is the best one found.");
  o << "<div class=\"charts\"><div>"
    << chart_svg(series, ChartOptions().title("trials: size vs. validation " + metric).x_label(axis + " (log scale)")
                             .log_x(true).y_label("val " + metric))
    << "</div></div>\n";
  o << "<h3>Pareto front</h3><div class=\"scroll\"><table><tr><th>trial</th><th>params</th>"
    << (size_column ? "<th>" + h(axis) + "</th>" : "") << "<th>val " << h(metric)
    << "</th><th>meets target</th><th>config</th></tr>\n" << rows.str() << "</table></div>\n";
  o << "<p class=\"note\">Every trial is in trials.csv with the <code>--set</code> values that repeat it with "
       "<code>kdistill run</code>. The models above this section are the chosen student retrained with the "
       "baseline, scored once on the test rows.</p>\n";
  return o.str();
}

std::string environment(const nlohmann::json& metrics) {
  nlohmann::json env = metrics.contains("environment") ? metrics["environment"] : environment_info();
  std::ostringstream o;
  o << "<div class=\"scroll\"><table>";
  auto row = [&](const std::string& k, const std::string& v) { o << "<tr><td>" << h(k) << "</td><td>" << h(v) << "</td></tr>\n"; };
  for (const auto& [k, v] : env.items()) row(k, v.is_string() ? v.get<std::string>() : v.dump());
  if (metrics.contains("seed")) row("seed", metrics["seed"].dump());
  if (metrics.contains("timing")) {
    for (const auto& [k, v] : metrics["timing"].items()) {
      if (v.is_number()) row("timing: " + k, fmt::format("{:.4g}", v.get<double>()));
    }
  }
  if (metrics.contains("data")) {
    for (const char* k : {"source", "train", "val", "test", "folds", "labeled", "transfer"}) {
      if (metrics["data"].contains(k)) {
        const auto& v = metrics["data"][k];
        row("data: " + std::string(k), v.is_string() ? v.get<std::string>() : v.dump());
      }
    }
  }
  o << "</table></div>\n";
  if (!metrics.contains("environment")) o << "<p class=\"note\">This run did not record its environment; shown: where the report was rendered.</p>\n";
  return o.str();
}

std::string section_title(const std::string& id) {
  static const std::map<std::string, std::string> titles = {
      {"summary", "Summary"}, {"significance", "Is the gain real?"}, {"learning-curves", "Learning curves"},
      {"calibration", "Calibration"}, {"confusion", "Confusion matrices"}, {"per-class", "Per class"},
      {"residuals", "Residuals"}, {"disagreements", "Where student and teacher disagree most"},
      {"size", "Size and cost"}, {"recipe", "Recipe"}, {"environment", "Environment"}, {"search", "Search"}};
  return titles.at(id);
}

}  // namespace

std::vector<std::string> report_sections(const std::string& task) {
  if (task == "regression") {
    return {"summary", "significance", "learning-curves", "residuals", "disagreements", "size", "recipe", "environment"};
  }
  return {"summary", "significance", "learning-curves", "calibration", "confusion", "per-class", "disagreements",
          "size", "recipe", "environment"};
}

nlohmann::json environment_info() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  std::string cpu = "unknown";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      cpu = trim(line.substr(line.find(':') + 1));
      break;
    }
  }
  std::time_t now = std::time(nullptr);
  char when[64];
  std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  return {{"kdistill", build_version()},
          {"libtorch", TORCH_VERSION},
          {"compiler", fmt::format("{} {}", __GNUC__, __VERSION__)},
          {"machine", host},
          {"cpu", cpu},
          {"cores", std::thread::hardware_concurrency()},
          {"created", when}};
}

VerdictWords verdict_words(const nlohmann::json& v) {
  VerdictWords words;
  std::string verdict = v.value("verdict", "");
  words.conclusion = verdict == "helped" ? "distillation helped"
                     : verdict == "hurt" ? "distillation did not help"
                                         : "no significant difference between the distilled student and its baseline";
  if (verdict == "hurt") words.detail = "the baseline student is the better model";
  if (v.value("test", "") == "mcnemar") {
    words.evidence = fmt::format("on {} validation rows: distilled {:.2f}% vs baseline {:.2f}% (McNemar p = {:.3g})",
                                 v["rows"].get<int64_t>(), 100 * number(v["student"]), 100 * number(v["baseline"]),
                                 number(v["p_value"]));
  } else {
    words.evidence = fmt::format("on {} validation rows: RMSE difference distilled - baseline {:+.4g} (95% CI {:.4g} to {:.4g})",
                                 v["rows"].get<int64_t>(), number(v["difference"]), number(v["low"]), number(v["high"]));
  }
  return words;
}

std::string render_html(const ReportInputs& inputs) {
  const auto& metrics = inputs.metrics;
  std::string task = metrics.value("task", "classification");
  bool classification = task == "classification";
  std::map<std::string, std::string> bodies;
  bodies["summary"] = summary(metrics, classification);
  bodies["significance"] = significance(metrics, classification);
  bodies["learning-curves"] = learning_curves(metrics, inputs.epochs_csv, classification);
  bodies["disagreements"] = disagreements(metrics, classification);
  bodies["size"] = size_and_cost(metrics, classification);
  bodies["recipe"] = "<pre>" + h(inputs.recipe.empty() ? "(recipe.yaml missing)" : inputs.recipe) + "</pre>\n";
  bodies["environment"] = environment(metrics);
  if (classification) {
    bodies["calibration"] = calibration(metrics);
    bodies["confusion"] = confusion(metrics);
    bodies["per-class"] = per_class(metrics);
  } else {
    bodies["residuals"] = residuals(metrics, inputs.outputs);
  }
  std::ostringstream o;
  o << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
       "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
    << "<title>" << h(inputs.title) << "</title><style>" << kCss << "</style></head>\n<body>\n";
  o << "<header><h1>" << h(inputs.title) << "</h1><p>" << h(task);
  if (metrics.contains("data") && metrics["data"].contains("source")) o << " · " << h(metrics["data"]["source"].get<std::string>());
  o << "</p><nav>";
  auto ids = report_sections(task);
  if (metrics.contains("search")) {
    bodies["search"] = search_results(metrics);
    ids.insert(ids.begin() + 1, "search");
  }
  for (const auto& id : ids) o << "<a href=\"#" << id << "\">" << h(section_title(id)) << "</a>\n";
  o << "</nav></header>\n<main>\n";
  for (const auto& id : ids) o << section(id, section_title(id), bodies.at(id));
  o << "</main>\n<footer class=\"note\">Written by kdistill " << build_version() << ".</footer>\n</body></html>\n";
  return o.str();
}

fs::path write_report(const fs::path& run_dir) {
  fs::path metrics_file = run_dir / "metrics.json";
  if (!fs::exists(metrics_file)) {
    fail("{}: no metrics.json; give the folder a `kdistill run --out` wrote", run_dir.string());
  }
  ReportInputs inputs;
  try {
    inputs.metrics = nlohmann::json::parse(read_file(metrics_file));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", metrics_file.string(), e.what());
  }
  if (!inputs.metrics.contains("task") || !inputs.metrics.contains("models") ||
      !inputs.metrics["models"].contains("teacher") || !inputs.metrics["models"].contains("student")) {
    fail("{}: expected the keys task and models.teacher, models.student", metrics_file.string());
  }
  size_t folds = inputs.metrics.contains("data") ? inputs.metrics["data"].value("folds", size_t{1}) : 1;
  inputs.outputs = read_test_outputs(run_dir, folds);
  if (!inputs.outputs.empty()) {
    add_analysis(inputs.metrics, inputs.outputs, AnalysisOptions().seed(inputs.metrics.value("seed", uint64_t{0})));
  }
  if (fs::exists(run_dir / "epochs.csv")) inputs.epochs_csv = read_file(run_dir / "epochs.csv");
  if (fs::exists(run_dir / "recipe.yaml")) inputs.recipe = read_file(run_dir / "recipe.yaml");
  fs::path name = fs::absolute(run_dir).lexically_normal();
  if (name.filename().empty()) name = name.parent_path();
  inputs.title = "kdistill report: " + name.filename().string();
  fs::path out = run_dir / "report.html";
  write_file_atomic(out, render_html(inputs));
  return out;
}

}  // namespace kd::report
