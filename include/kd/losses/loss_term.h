// One distillation loss term: what it reads (LossInputs), how it is configured
// (LossTermOptions, the recipe's `distill.losses[i]` keys) and the interface every
// kind implements. Kinds are listed in kd/losses/registry.h; docs/losses.md has the formulas.
//
// Shapes: N examples, C classes (classification) or K outputs (regression).
//   student   [N, C] logits or [N, K] predictions, float32 or float64, requires grad
//   teacher   same shape as student, no grad; undefined when the batch has no teacher outputs
//   labels    int64 [N] class indices (classification) or float [N] / [N, K] targets (regression)
//   has_label bool [N], false where the example has no label (transfer set); undefined = all labelled
// Feature terms (kd/losses/feature_term.h) read besides these:
//   student_feature  the student's tensor at the term's `student` tap, [N, ...]
//   teacher_feature  the teacher's at its `teacher` tap, [N, ...], no grad
//   parameters       the term's own trained tensors (make_parameters), e.g. a hint's projection
// Every term returns an unweighted scalar (0-dim tensor) of the student's dtype.
// A kind declares its own options (key, default, range, help) in declared_options(): a new kind with
// a new option is its header, its source and one line in src/losses/registry.cpp.
//
// Example:
//   auto term = kd::losses::make_loss_term(kd::losses::LossTermOptions("kl").temperature(4));
//   torch::Tensor loss = term->compute({student_logits, teacher_logits});
#pragma once

#include <torch/arg.h>
#include <torch/torch.h>

#include <limits>
#include <map>
#include <string>
#include <vector>

#include "kd/data/task.h"
#include "kd/models/model.h"

namespace kd::losses {

// Brace-initialise the leading fields: {student, teacher} or {student, teacher, labels}.
struct LossInputs {
  torch::Tensor student{};
  torch::Tensor teacher{};
  torch::Tensor labels{};
  torch::Tensor has_label{};
  torch::Tensor student_feature{};
  torch::Tensor teacher_feature{};
  std::vector<torch::Tensor> parameters{};
  // For Distiller::compute: the tensors at Distiller::student_taps() / teacher_taps(), in that order,
  // and every term's parameters (Distiller::make_parameters).
  std::vector<torch::Tensor> student_taps{};
  std::vector<torch::Tensor> teacher_taps{};
  models::NamedTensors named_parameters{};
};

// The values a number option takes: from low to high, either end open.
struct OptionRange {
  double low = -std::numeric_limits<double>::infinity(), high = std::numeric_limits<double>::infinity();
  bool low_open = false, high_open = false;

  static OptionRange above(double low) { return {low, std::numeric_limits<double>::infinity(), true, false}; }
  static OptionRange at_least(double low) { return {low, std::numeric_limits<double>::infinity(), false, false}; }
  static OptionRange up_to_below(double low, double high) { return {low, high, false, true}; }  // [low, high)
  bool contains(double value) const;
  std::string text() const;  // "> 0", ">= 0", "in [0, 1)"
};

// One option of a loss kind, as its term declares it (LossTerm::declared_options). The recipe reader,
// the checks, docs/losses.md's table (a test compares them) and `kdistill auto`'s space read these.
struct LossOption {
  std::string key;
  std::string help;                // the docs table's meaning
  double number = 0;               // a number option's default
  OptionRange range;               // a number option's values
  std::vector<std::string> words;  // a word option: one of these; the first is the default
  bool any_word = false;           // a name option: any non-empty word (a tap name); words = {default}
  // > 0: `kdistill auto` searches the option on a log scale in [search_low, search_high]; a recipe's
  // `search.KEY: [low, high]` may range over [search_low / 20, search_high * 5].
  double search_low = 0, search_high = 0;

  bool is_word() const { return !words.empty(); }
  static LossOption of_number(std::string key, std::string help, double value, OptionRange range) {
    LossOption option;
    option.key = std::move(key);
    option.help = std::move(help);
    option.number = value;
    option.range = range;
    return option;
  }
  static LossOption of_words(std::string key, std::string help, std::vector<std::string> words) {
    LossOption option;
    option.key = std::move(key);
    option.help = std::move(help);
    option.words = std::move(words);
    return option;
  }
  static LossOption of_name(std::string key, std::string help, std::string default_name) {
    LossOption option = of_words(std::move(key), std::move(help), {std::move(default_name)});
    option.any_word = true;
    return option;
  }
};

// Options shared by several kinds, declared once.
LossOption temperature_option();  // softmax temperature T > 0, default 1, searched over [1, 20]
LossOption target_option();       // mse / huber: "teacher" or "labels"

struct LossTermOptions {
  LossTermOptions() = default;
  /* implicit */ LossTermOptions(std::string kind) : kind_(std::move(kind)) {}

  // Name of the term: see kd::losses::loss_term_kinds().
  TORCH_ARG(std::string, kind);
  // Multiplies the term in the total; >= 0.
  TORCH_ARG(double, weight) = 1.0;

 public:
  // The kind's own options by key (LossOption). An unset key reads as the kind's declared default;
  // a key the kind does not declare reads as the first kind's that does (ce's temperature is 1).
  LossTermOptions& set(const std::string& key, double value);
  LossTermOptions& set(const std::string& key, std::string value);
  LossTermOptions& set(const std::string& key, const char* value) { return set(key, std::string(value)); }
  double number(const std::string& key) const;
  std::string word(const std::string& key) const;
  const std::map<std::string, double>& numbers() const { return numbers_; }
  const std::map<std::string, std::string>& words() const { return words_; }

  // Shorthands for the options the library itself reads.
  LossTermOptions& temperature(double value) { return set("temperature", value); }
  double temperature() const { return number("temperature"); }
  LossTermOptions& label_smoothing(double value) { return set("label_smoothing", value); }
  double label_smoothing() const { return number("label_smoothing"); }
  LossTermOptions& delta(double value) { return set("delta", value); }
  double delta() const { return number("delta"); }
  LossTermOptions& target(std::string value) { return set("target", std::move(value)); }
  std::string target() const { return word("target"); }
  LossTermOptions& alpha(double value) { return set("alpha", value); }
  double alpha() const { return number("alpha"); }
  LossTermOptions& beta(double value) { return set("beta", value); }
  double beta() const { return number("beta"); }

 private:
  std::map<std::string, double> numbers_;
  std::map<std::string, std::string> words_;
};

class LossTerm {
 public:
  explicit LossTerm(LossTermOptions options) : options_(std::move(options)) {}
  virtual ~LossTerm() = default;

  // The unweighted term, a 0-dim tensor; throws kd::Error when an input it needs is absent
  // or shapes disagree.
  virtual torch::Tensor compute(const LossInputs& inputs) const = 0;

  // Label for logs, e.g. "kl".
  virtual std::string name() const { return options_.kind(); }
  // Whether compute() reads the teacher / the labels with the current options.
  virtual bool uses_teacher() const = 0;
  virtual bool uses_labels() const = 0;
  virtual bool supports(Task task) const = 0;
  // The options (besides kind and weight) this kind reads, with their defaults, ranges and help.
  // Setting any other key away from its default is refused, so that `{kind: ce, temperature: 4}`
  // does not pass silently.
  virtual std::vector<LossOption> declared_options() const = 0;

  // Feature terms: the model taps they read (models::kOutputTap: the outputs); "" for the others.
  virtual std::string student_tap() const { return ""; }
  virtual std::string teacher_tap() const { return ""; }
  // The term's own trained tensors for features of these shapes (no batch dim), freshly initialised
  // from `generator`; none for most kinds. kd::Error when the shapes do not suit the term.
  virtual models::NamedTensors make_parameters(const std::vector<int64_t>& student_shape,
                                               const std::vector<int64_t>& teacher_shape,
                                               at::Generator& generator) const {
    return {};
  }

  const LossTermOptions& options() const { return options_; }

 protected:
  LossTermOptions options_;
};

}  // namespace kd::losses
