#include "kd/report/svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <sstream>

namespace kd::report {

namespace {

std::string color_for(const Series& s, size_t index) {
  if (!s.color.empty()) return s.color;
  static const std::map<std::string, std::string> named = {
      {"teacher", "#1f77b4"}, {"baseline", "#ff7f0e"}, {"student", "#2ca02c"}};
  auto it = named.find(s.name);
  if (it != named.end()) return it->second;
  static const std::vector<std::string> palette = {"#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"};
  return palette[index % palette.size()];
}

// About five round tick values covering [low, high].
std::vector<double> ticks(double low, double high) {
  double span = high - low;
  if (!(span > 0)) return {low};
  double step = std::pow(10.0, std::floor(std::log10(span / 5)));
  for (double m : {2.0, 5.0, 10.0}) {
    if (span / step <= 6) break;
    step = std::pow(10.0, std::floor(std::log10(span / 5))) * m;
  }
  std::vector<double> out;
  for (double v = std::ceil(low / step) * step; v <= high + step * 1e-9; v += step) out.push_back(std::abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

}  // namespace

std::string escape_xml(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string short_number(double value) {
  if (!std::isfinite(value)) return "-";
  double a = std::abs(value);
  if (a != 0 && (a >= 1e6 || a < 1e-3)) return fmt::format("{:.3g}", value);
  if (a >= 100 || value == std::round(value)) return fmt::format("{:.0f}", value);
  return fmt::format("{:.4g}", value);
}

std::string chart_svg(const std::vector<Series>& series, const ChartOptions& options) {
  const double width = options.width(), height = options.height();
  const double left = 56, right = 12, top = options.title().empty() ? 12 : 28, bottom = 44;
  const double legend_height = 18;
  const double plot_w = width - left - right, plot_h = height - top - bottom - legend_height;
  bool bars = std::any_of(series.begin(), series.end(), [](const Series& s) { return s.style == "bars"; });
  auto transform_x = [&](double x) { return options.log_x() ? std::log10(std::max(x, 1e-300)) : x; };

  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
  for (const auto& s : series) {
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      x_lo = std::min(x_lo, transform_x(s.x[i]));
      x_hi = std::max(x_hi, transform_x(s.x[i]));
      y_lo = std::min(y_lo, s.y[i]);
      y_hi = std::max(y_hi, s.y[i]);
    }
  }
  if (!std::isfinite(x_lo)) x_lo = 0, x_hi = 1, y_lo = 0, y_hi = 1;
  if (bars) x_lo = -0.5, x_hi = static_cast<double>(options.categories().size()) - 0.5, y_lo = std::min(0.0, y_lo);
  if (options.x_min()) x_lo = transform_x(*options.x_min());
  if (options.x_max()) x_hi = transform_x(*options.x_max());
  if (options.y_min()) y_lo = *options.y_min();
  if (options.y_max()) y_hi = *options.y_max();
  if (x_hi - x_lo <= 0) x_lo -= 0.5, x_hi += 0.5;
  if (y_hi - y_lo <= 0) y_lo -= 0.5, y_hi += 0.5;
  if (!options.y_min() && !options.y_max() && !bars) {
    double pad = (y_hi - y_lo) * 0.05;
    y_lo -= pad;
    y_hi += pad;
  }
  // Room for the points and their labels at the edges.
  bool labelled = std::any_of(series.begin(), series.end(), [](const Series& s) { return !s.labels.empty(); });
  if (labelled && !options.x_min() && !options.x_max()) {
    double pad = (x_hi - x_lo) * 0.12;
    x_lo -= pad;
    x_hi += pad;
  }
  auto px = [&](double x) { return left + (transform_x(x) - x_lo) / (x_hi - x_lo) * plot_w; };
  auto px_raw = [&](double tx) { return left + (tx - x_lo) / (x_hi - x_lo) * plot_w; };
  auto py = [&](double y) { return top + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h; };

  std::ostringstream o;
  o << fmt::format(R"(<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" role="img" aria-label="{}">)",
                   width, height, escape_xml(options.title()));
  o << "<style>text{font:11px sans-serif;fill:#333}.t{font-weight:bold;font-size:12px}</style>";
  if (!options.title().empty()) o << fmt::format(R"(<text class="t" x="{}" y="16">{}</text>)", left, escape_xml(options.title()));
  // Axes and grid.
  for (double t : ticks(y_lo, y_hi)) {
    o << fmt::format(R"(<line x1="{:.1f}" x2="{:.1f}" y1="{:.1f}" y2="{:.1f}" stroke="#ddd"/>)", left, left + plot_w, py(t), py(t));
    o << fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="end">{}</text>)", left - 4, py(t) + 4, short_number(t));
  }
  if (bars) {
    for (size_t i = 0; i < options.categories().size(); ++i) {
      o << fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="middle">{}</text>)", px(static_cast<double>(i)),
                       top + plot_h + 14, escape_xml(options.categories()[i]));
    }
  } else {
    std::vector<double> x_ticks;
    if (options.log_x()) {
      // 1, 2, 5 times the powers of ten in range (in log10 units).
      for (double decade = std::floor(x_lo); decade <= std::ceil(x_hi); decade += 1) {
        for (double m : {1.0, 2.0, 5.0}) {
          double t = decade + std::log10(m);
          if (t >= x_lo && t <= x_hi) x_ticks.push_back(t);
        }
      }
    } else {
      x_ticks = ticks(x_lo, x_hi);
    }
    for (double t : x_ticks) {
      std::string label = options.log_x() ? short_number(std::pow(10.0, t)) : short_number(t);
      o << fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="middle">{}</text>)", px_raw(t), top + plot_h + 14, label);
    }
  }
  o << fmt::format(R"(<rect x="{}" y="{}" width="{:.1f}" height="{:.1f}" fill="none" stroke="#999"/>)", left, top, plot_w, plot_h);
  o << fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="middle">{}</text>)", left + plot_w / 2, top + plot_h + 30,
                   escape_xml(options.x_label()));
  o << fmt::format(R"~(<text transform="translate(12,{:.1f}) rotate(-90)" text-anchor="middle">{}</text>)~", top + plot_h / 2,
                   escape_xml(options.y_label()));
  if (options.diagonal()) {
    double lo = std::max(x_lo, y_lo), hi = std::min(x_hi, y_hi);
    o << fmt::format(R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#888" stroke-dasharray="4 3"/>)",
                     px_raw(lo), py(lo), px_raw(hi), py(hi));
  }
  if (options.zero_line() && y_lo < 0 && y_hi > 0) {
    o << fmt::format(R"(<line x1="{}" x2="{:.1f}" y1="{:.1f}" y2="{:.1f}" stroke="#888" stroke-dasharray="4 3"/>)", left,
                     left + plot_w, py(0), py(0));
  }
  // Data.
  size_t bar_series = std::count_if(series.begin(), series.end(), [](const Series& s) { return s.style == "bars"; });
  size_t bar_index = 0;
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    std::string color = color_for(s, k);
    if (s.style == "bars") {
      double band = plot_w / static_cast<double>(std::max<size_t>(1, options.categories().size()));
      double bar_w = band * 0.8 / static_cast<double>(bar_series);
      for (size_t i = 0; i < s.y.size(); ++i) {
        double x0 = px(s.x[i]) - band * 0.4 + bar_w * static_cast<double>(bar_index);
        double y0 = py(std::max(0.0, s.y[i])), y1 = py(std::min(0.0, s.y[i]));
        o << fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}"><title>{} {}: {}</title></rect>)",
                         x0, y0, bar_w, std::max(0.0, y1 - y0), color, escape_xml(s.name),
                         i < options.categories().size() ? escape_xml(options.categories()[i]) : "", short_number(s.y[i]));
      }
      ++bar_index;
    } else if (s.style == "points") {
      for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
        if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
        o << fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="3" fill="{}" fill-opacity="0.7"/>)", px(s.x[i]), py(s.y[i]), color);
        if (i < s.labels.size()) {
          o << fmt::format(R"(<text x="{:.1f}" y="{:.1f}">{}</text>)", px(s.x[i]) + 5, py(s.y[i]) - 5, escape_xml(s.labels[i]));
        }
      }
    } else {
      std::string points;
      for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
        if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) points += fmt::format("{:.1f},{:.1f} ", px(s.x[i]), py(s.y[i]));
      }
      o << fmt::format(R"(<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>)", points, color);
      for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
        if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
          o << fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="2" fill="{}"/>)", px(s.x[i]), py(s.y[i]), color);
        }
      }
    }
  }
  // Legend.
  double lx = left;
  for (size_t k = 0; k < series.size(); ++k) {
    if (series[k].name.empty()) continue;
    o << fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="10" height="10" fill="{}"/>)", lx, height - 14, color_for(series[k], k));
    o << fmt::format(R"(<text x="{:.1f}" y="{:.1f}">{}</text>)", lx + 14, height - 5, escape_xml(series[k].name));
    lx += 24 + 7.0 * static_cast<double>(series[k].name.size());
  }
  o << "</svg>";
  return o.str();
}

std::string heatmap_svg(const std::vector<std::vector<double>>& values, const std::vector<std::string>& labels,
                        const std::string& title, const std::string& row_label, const std::string& column_label) {
  size_t n = values.size();
  double cell = n <= 10 ? 34 : std::max(12.0, 340.0 / static_cast<double>(n));
  double label_w = 90, top = 40;
  double width = label_w + cell * static_cast<double>(n) + 10, height = top + cell * static_cast<double>(n) + 40;
  std::ostringstream o;
  o << fmt::format(R"(<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {:.0f} {:.0f}" width="100%" role="img" aria-label="{}">)",
                   width, height, escape_xml(title));
  o << "<style>text{font:10px sans-serif;fill:#333}.t{font-weight:bold;font-size:12px}</style>";
  o << fmt::format(R"(<text class="t" x="4" y="14">{}</text>)", escape_xml(title));
  o << fmt::format(R"(<text x="{:.1f}" y="30" text-anchor="middle">{}</text>)", label_w + cell * static_cast<double>(n) / 2,
                   escape_xml(column_label));
  for (size_t i = 0; i < n; ++i) {
    double row_sum = 0;
    for (double v : values[i]) row_sum += v;
    std::string name = i < labels.size() ? labels[i] : std::to_string(i);
    o << fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="end">{}</text>)", label_w - 4,
                     top + cell * (static_cast<double>(i) + 0.6), escape_xml(name.substr(0, 14)));
    for (size_t j = 0; j < values[i].size(); ++j) {
      double share = row_sum > 0 ? values[i][j] / row_sum : 0;
      // White to dark blue (diagonal) or dark red (off the diagonal).
      int shade = static_cast<int>(255 - 200 * share);
      std::string fill = i == j ? fmt::format("rgb({},{},255)", shade, shade) : fmt::format("rgb(255,{},{})", shade, shade);
      double x = label_w + cell * static_cast<double>(j), y = top + cell * static_cast<double>(i);
      o << fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}" stroke="#fff"><title>{} -> {}: {}</title></rect>)",
                       x, y, cell, cell, fill, escape_xml(name), j < labels.size() ? escape_xml(labels[j]) : std::to_string(j),
                       short_number(values[i][j]));
      if (cell >= 20) {
        o << fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="middle" fill="{}">{}</text>)", x + cell / 2,
                         y + cell * 0.62, share > 0.6 ? "#fff" : "#333", short_number(values[i][j]));
      }
    }
  }
  o << fmt::format(R"(<text x="4" y="{:.1f}">{} (rows) / {} (columns)</text>)", height - 8, escape_xml(row_label),
                   escape_xml(column_label));
  o << "</svg>";
  return o.str();
}

}  // namespace kd::report
