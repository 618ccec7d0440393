#include "kd/train/target.h"

#include <sstream>

#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::train {

namespace {
const std::vector<std::string> kMetrics = {"accuracy", "error", "macro_f1", "nll", "ece", "rmse", "mae", "r2"};

// Splits "accuracy>=teacher-0.5" into tokens: words, numbers, operators.
std::vector<std::string> tokenize(const std::string& text) {
  std::vector<std::string> tokens;
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < text.size() && (std::isalnum(static_cast<unsigned char>(text[j])) || text[j] == '_')) ++j;
      tokens.push_back(text.substr(i, j - i));
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') {
      size_t j = i;
      while (j < text.size() && (std::isdigit(static_cast<unsigned char>(text[j])) || text[j] == '.' ||
                                 text[j] == 'e' || ((text[j] == '-' || text[j] == '+') && text[j - 1] == 'e'))) {
        ++j;
      }
      tokens.push_back(text.substr(i, j - i));
      i = j;
    } else if ((c == '>' || c == '<') && i + 1 < text.size() && text[i + 1] == '=') {
      tokens.push_back(text.substr(i, 2));
      i += 2;
    } else {
      tokens.emplace_back(1, c);
      ++i;
    }
  }
  return tokens;
}
}  // namespace

double metric_value(const report::Metrics& metrics, const std::string& metric) {
  if (metric == "accuracy") return 100.0 * metrics.at("accuracy");
  if (metric == "error") return 100.0 * (1.0 - metrics.at("accuracy"));
  if (metric == "macro_f1") return 100.0 * metrics.at("macro_f1");
  auto it = metrics.find(metric);
  KD_CHECK(it != metrics.end(), "metric {} not computed", metric);
  return it->second;
}

bool higher_is_better(const std::string& metric) {
  return metric == "accuracy" || metric == "macro_f1" || metric == "r2";
}

Target Target::parse(const std::string& text, const std::string& field) {
  Target target;
  target.text_ = trim(text);
  auto tokens = tokenize(text);
  auto bad = [&](const std::string& expected, size_t at) {
    fail("{}: {}: expected {}{}", field, quote(target.text_), expected,
         at < tokens.size() ? ", found " + quote(tokens[at]) : ", found the end");
  };
  if (tokens.empty()) bad("METRIC OP VALUE, e.g. \"accuracy >= teacher - 0.5\"", 0);
  target.metric_ = tokens[0];
  if (std::find(kMetrics.begin(), kMetrics.end(), target.metric_) == kMetrics.end()) {
    auto suggestion = nearest(target.metric_, kMetrics);
    fail("{}: {}: unknown metric {}{}, expected one of {}", field, quote(target.text_), quote(target.metric_),
         suggestion ? " (did you mean " + *suggestion + "?)" : "", join(kMetrics, ", "));
  }
  if (tokens.size() < 2 || (tokens[1] != ">=" && tokens[1] != "<=" && tokens[1] != ">" && tokens[1] != "<")) {
    bad("a comparison >=, >, <= or < after the metric", 1);
  }
  target.op_ = tokens[1];
  size_t i = 2;
  auto number = [&](size_t at) {
    if (at >= tokens.size()) bad("a number", at);
    auto value = parse_double(tokens[at]);
    if (!value) bad("a number", at);
    return *value;
  };
  if (i < tokens.size() && tokens[i] == "teacher") {
    target.relative_ = true;
    ++i;
    if (i < tokens.size()) {
      if (tokens[i] != "+" && tokens[i] != "-") bad("+ or - after teacher", i);
      double sign = tokens[i] == "-" ? -1.0 : 1.0;
      target.offset_ = sign * number(i + 1);
      i += 2;
    }
  } else {
    double value = number(i);
    ++i;
    if (i < tokens.size() && tokens[i] == "*") {
      if (i + 1 >= tokens.size() || tokens[i + 1] != "teacher") bad("teacher after *", i + 1);
      target.relative_ = true;
      target.factor_ = value;
      i += 2;
    } else {
      target.offset_ = value;
      target.factor_ = 0.0;
    }
  }
  if (i != tokens.size()) bad("the end of the expression", i);
  return target;
}

double Target::threshold(double teacher_value) const {
  return relative_ ? factor_ * teacher_value + offset_ : offset_;
}

bool Target::reached(double value, double teacher_value) const {
  double t = threshold(teacher_value);
  if (op_ == ">=") return value >= t;
  if (op_ == ">") return value > t;
  if (op_ == "<=") return value <= t;
  return value < t;
}

}  // namespace kd::train
