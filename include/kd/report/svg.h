// Small SVG charts for the self-contained report: no scripts, no external files.
// Every chart scales to its container (viewBox, width 100%).
//
//   std::string svg = chart_svg({{"student", xs, ys}}, ChartOptions().title("val accuracy").x_label("epoch"));
#pragma once

#include <torch/arg.h>

#include <optional>
#include <string>
#include <vector>

namespace kd::report {

struct Series {
  std::string name;
  std::vector<double> x, y;
  std::string style = "line";  // line | points | bars (x: category index 0..n-1)
  std::string color = "";      // "" = by name: teacher, baseline, student, or a palette colour
  std::vector<std::string> labels = {};  // points: a label beside each point
};

struct ChartOptions {
  TORCH_ARG(std::string, title) = "";
  TORCH_ARG(std::string, x_label) = "";
  TORCH_ARG(std::string, y_label) = "";
  TORCH_ARG(int, width) = 640;
  TORCH_ARG(int, height) = 300;
  TORCH_ARG(std::optional<double>, y_min) = std::nullopt;
  TORCH_ARG(std::optional<double>, y_max) = std::nullopt;
  TORCH_ARG(std::optional<double>, x_min) = std::nullopt;
  TORCH_ARG(std::optional<double>, x_max) = std::nullopt;
  TORCH_ARG(bool, diagonal) = false;      // the y = x line (reliability diagrams)
  TORCH_ARG(bool, zero_line) = false;     // the y = 0 line (residuals)
  TORCH_ARG(bool, log_x) = false;
  TORCH_ARG(std::vector<std::string>, categories) = {};  // x tick labels for bar charts
};

std::string chart_svg(const std::vector<Series>& series, const ChartOptions& options);

// A matrix as coloured cells with the value printed in each; colour by row share.
std::string heatmap_svg(const std::vector<std::vector<double>>& values, const std::vector<std::string>& labels,
                        const std::string& title, const std::string& row_label, const std::string& column_label);

// Text safe inside HTML and SVG.
std::string escape_xml(const std::string& text);

// A compact number for axes and tables: 0.912, 1.2e+06, 28650.
std::string short_number(double value);

}  // namespace kd::report
