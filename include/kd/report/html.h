// report.html: one self-contained file (inline CSS and SVG, no scripts, no network)
// that shows a run: summary, paired tests, learning curves, calibration, confusion
// matrices, per-class scores, disagreements, size and cost, the recipe and the
// environment. Every section has an id (summary, significance, learning-curves,
// calibration, confusion, per-class, disagreements, size, recipe, environment;
// regression: residuals instead of calibration, confusion and per-class).
//
//   write_report("runs/x");   // reads metrics.json, epochs.csv, recipe.yaml, test_outputs/
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "kd/report/analysis.h"

namespace kd::report {

struct ReportInputs {
  nlohmann::json metrics;           // metrics.json, with add_analysis applied
  std::string epochs_csv;           // epochs.csv ("" = none)
  std::string recipe;               // recipe.yaml as run
  std::vector<TestOutputs> outputs; // per fold (may be empty)
  std::string title = "kdistill report";
};

std::string render_html(const ReportInputs& inputs);

// A run's validation verdict (metrics.json distill.validation) in words, for the summary printed at the
// end of a run and for the report: evidence "on 144 validation rows: distilled 93.06% vs baseline
// 94.44% (McNemar p = 0.688)", conclusion "no significant difference between the distilled student
// and its baseline" (or "distillation helped", "distillation did not help"), and for "hurt" the detail
// "the baseline student is the better model".
struct VerdictWords {
  std::string evidence, conclusion, detail;
  std::string sentence() const { return evidence + ": " + conclusion + (detail.empty() ? "" : ": " + detail); }
};
VerdictWords verdict_words(const nlohmann::json& validation);

// Reads a run folder, recomputes the analysis when its test outputs are there, and writes
// DIR/report.html atomically. kd::Error naming the folder when it has no metrics.json.
std::filesystem::path write_report(const std::filesystem::path& run_dir);

// Versions, machine and time, for metrics.json's "environment" and the report.
nlohmann::json environment_info();

// The sections a report of this task has, in order (the ids above).
std::vector<std::string> report_sections(const std::string& task);

}  // namespace kd::report
