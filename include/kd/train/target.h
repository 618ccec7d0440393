// The distillation target (the seed's "蒸馏目标"): when is the student good enough.
//
//   METRIC OP VALUE        e.g.  "accuracy >= teacher - 0.5"   "rmse <= 55"   "error <= 1.05 * teacher"
//   METRIC: accuracy, error, macro_f1 (percent, 0-100), nll, ece, rmse, mae, r2
//   OP:     >=  >  <=  <
//   VALUE:  a number | teacher | teacher + n | teacher - n | n * teacher
//
// Percent metrics are in points: "accuracy >= teacher - 0.5" allows half a point below the teacher.
#pragma once

#include <optional>
#include <string>

#include "kd/report/metrics.h"

namespace kd::train {

// A metric's value as targets and selection see it (percent for accuracy, error, macro_f1).
double metric_value(const report::Metrics& metrics, const std::string& metric);
// True when larger values of `metric` are better.
bool higher_is_better(const std::string& metric);

class Target {
 public:
  // kd::Error naming `field` and what was expected on a malformed expression.
  static Target parse(const std::string& text, const std::string& field);

  const std::string& metric() const { return metric_; }
  bool needs_teacher() const { return relative_; }
  // The threshold, given the teacher's value of the metric (ignored when absolute).
  double threshold(double teacher_value) const;
  bool reached(double value, double teacher_value) const;
  const std::string& text() const { return text_; }

 private:
  std::string text_;
  std::string metric_;
  std::string op_;
  bool relative_ = false;
  double factor_ = 1.0;
  double offset_ = 0.0;
};

}  // namespace kd::train
