#include "kd/teacher/teacher_input.h"

#include <algorithm>
#include <initializer_list>
#include <limits>
#include <utility>

#include "kd/data/normalize.h"
#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::teacher {

namespace {

using data::Normalizer;

// The normaliser under `key`, or identity when absent.
Normalizer normalizer_at(const nlohmann::json& preprocessing, const std::string& key) {
  if (preprocessing.is_object() && preprocessing.contains(key) && !preprocessing[key].is_null()) {
    return Normalizer::from_json(preprocessing[key]);
  }
  return Normalizer();
}

bool same(const nlohmann::json& a, const nlohmann::json& b, const std::string& key) {
  auto at = [&key](const nlohmann::json& p) { return p.is_object() && p.contains(key) ? p[key] : nlohmann::json(); };
  auto identity = [](const nlohmann::json& n) { return n.is_null() || n.value("mode", "none") == "none"; };
  nlohmann::json x = at(a), y = at(b);
  return x == y || (identity(x) && identity(y));
}

// Maps run inputs to the teacher's inputs and the teacher's outputs to the run's units.
class AdaptedModel : public models::Model {
 public:
  AdaptedModel(models::ModelPtr teacher, Normalizer run_inputs, Normalizer teacher_inputs, Normalizer teacher_targets,
               Normalizer run_targets, bool probabilities)
      : teacher_(std::move(teacher)),
        run_inputs_(std::move(run_inputs)),
        teacher_inputs_(std::move(teacher_inputs)),
        teacher_targets_(std::move(teacher_targets)),
        run_targets_(std::move(run_targets)),
        probabilities_(probabilities) {}

  torch::Tensor forward(const torch::Tensor& input) override {
    return outputs_of(teacher_->forward(teacher_inputs_.apply(run_inputs_.invert(input))));
  }
  // The teacher's own taps, on the inputs it is fed.
  std::vector<std::string> tap_names() override { return teacher_->tap_names(); }
  models::TappedForward forward_taps(const torch::Tensor& input, const std::vector<std::string>& taps) override {
    auto tapped = teacher_->forward_taps(teacher_inputs_.apply(run_inputs_.invert(input)), taps);
    tapped.output = outputs_of(tapped.output);
    for (size_t i = 0; i < taps.size(); ++i) {
      if (taps[i] == models::kOutputTap) tapped.taps[i] = tapped.output;
    }
    return tapped;
  }
  std::vector<torch::Tensor> parameters() override { return teacher_->parameters(); }
  models::NamedTensors state() override { return teacher_->state(); }
  void load_state(const models::NamedTensors& state) override { teacher_->load_state(state); }
  void set_training(bool training) override { teacher_->set_training(training); }
  void to(torch::Device device) override { teacher_->to(device); }
  models::ModelSummary summary(const std::vector<int64_t>& input_shape) override {
    return teacher_->summary(input_shape);
  }
  std::string kind() const override { return teacher_->kind(); }
  void set_probabilities(bool probabilities) { probabilities_ = probabilities; }
  void set_class_groups(std::vector<std::vector<int64_t>> groups) { class_groups_ = std::move(groups); }
  // teacher.classes: learned: the run's logits are weight x (the teacher's log-probabilities) + bias.
  void set_class_projection(torch::Tensor weight, torch::Tensor bias) {
    projection_weight_ = std::move(weight);
    projection_bias_ = std::move(bias);
  }

 private:
  torch::Tensor outputs_of(const torch::Tensor& out) const {
    // log p is a logit vector with softmax(log p) = p; the floor keeps an underflowed 0 finite.
    torch::Tensor logits = probabilities_ ? torch::log(out.clamp_min(kSmallestProbability))
                                          : run_targets_.apply(teacher_targets_.invert(out));
    if (projection_weight_.defined()) {
      return torch::addmm(projection_bias_, torch::log_softmax(logits.to(torch::kFloat), 1), projection_weight_.t());
    }
    if (class_groups_.empty()) return logits;
    // Each class of the run: the log of its teacher classes' summed probability (up to a constant per row).
    std::vector<torch::Tensor> columns;
    for (const auto& group : class_groups_) {
      torch::Tensor index = torch::tensor(group, torch::TensorOptions().dtype(torch::kLong).device(logits.device()));
      columns.push_back(torch::logsumexp(logits.index_select(1, index), 1));
    }
    return torch::stack(columns, 1);
  }

  models::ModelPtr teacher_;
  Normalizer run_inputs_, teacher_inputs_, teacher_targets_, run_targets_;
  bool probabilities_ = false;
  std::vector<std::vector<int64_t>> class_groups_;
  torch::Tensor projection_weight_, projection_bias_;
  static constexpr double kSmallestProbability = 1e-30;
};

bool one_of(const std::string& word, std::initializer_list<const char*> words) {
  for (const char* w : words) {
    if (word == w) return true;
  }
  return false;
}

}  // namespace

bool looks_like_probabilities(const torch::Tensor& outputs) {
  if (outputs.dim() != 2 || outputs.size(0) == 0 || outputs.size(1) < 2) return false;
  torch::Tensor o = outputs.to(torch::kDouble);
  bool in_range = o.ge(0).all().item<bool>() && o.le(1 + 1e-6).all().item<bool>();
  return in_range && (o.sum(1) - 1).abs().max().item<double>() < 1e-3;
}

void validate(const TeacherInputOptions& options) {
  if (!one_of(options.input(), {"auto", "raw", "normalized"})) {
    fail("teacher.input: {} is not an input kind, expected auto, raw or normalized", quote(options.input()));
  }
  if (!one_of(options.outputs(), {"auto", "logits", "probabilities"})) {
    fail("teacher.outputs: {} is not an output kind, expected auto, logits or probabilities", quote(options.outputs()));
  }
}

namespace {

// What feeding the teacher one way gives on the labelled sample.
struct Fit {
  std::shared_ptr<AdaptedModel> model;
  nlohmann::json preprocessing;  // the teacher's: what it is fed
  std::string fed;               // raw | normalized | its own normalisation
  std::string description;
  bool probabilities = false;
  double accuracy = 0;  // classification: share of correct argmaxes
  double loss = 0;      // classification: mean NLL of the softmax; regression: MSE in the run's units
};

// A multinomial logistic regression of `labels` on the teacher's log-probabilities [N, teacher classes]:
// the weight [classes, teacher classes] and bias [classes] of the lowest mean NLL plus a small L2 penalty
// on the weight, by L-BFGS from zero (the problem is convex, so the start does not matter).
std::pair<torch::Tensor, torch::Tensor> fit_class_projection(const torch::Tensor& log_probabilities,
                                                             const torch::Tensor& labels, int64_t classes) {
  constexpr double kPenalty = 1e-3;
  torch::Tensor weight = torch::zeros({classes, log_probabilities.size(1)}, torch::requires_grad());
  torch::Tensor bias = torch::zeros({classes}, torch::requires_grad());
  torch::optim::LBFGS solver({weight, bias}, torch::optim::LBFGSOptions(1).max_iter(200).line_search_fn("strong_wolfe"));
  solver.step([&] {
    solver.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(torch::addmm(bias, log_probabilities, weight.t()), labels) +
                         kPenalty * weight.pow(2).sum();
    loss.backward();
    return loss;
  });
  return {weight.detach(), bias.detach()};
}

std::string fed_kind(const nlohmann::json& run_preprocessing, const nlohmann::json& teacher_preprocessing) {
  if (same(run_preprocessing, teacher_preprocessing, "normalize")) return "normalized";
  return normalizer_at(teacher_preprocessing, "normalize").identity() ? "raw" : "its own normalisation";
}

// The teacher fed with `teacher_preprocessing`'s inputs; its output kind decided on the sample when asked.
Fit fit_with(const io::LoadedModel& loaded, const nlohmann::json& run_preprocessing,
             const nlohmann::json& teacher_preprocessing, Task task, const TeacherInputOptions& options,
             const torch::Tensor& sample_x, const torch::Tensor& sample_y) {
  bool regression = task == Task::regression;
  Fit fit;
  fit.model = std::make_shared<AdaptedModel>(
      loaded.model, normalizer_at(run_preprocessing, "normalize"), normalizer_at(teacher_preprocessing, "normalize"),
      regression ? normalizer_at(teacher_preprocessing, "target_normalize") : Normalizer(),
      regression ? normalizer_at(run_preprocessing, "target_normalize") : Normalizer(), false);
  fit.preprocessing = teacher_preprocessing;
  fit.fed = fed_kind(run_preprocessing, teacher_preprocessing);
  fit.description = fit.fed == "normalized" ? "the run's normalised inputs"
                    : fit.fed == "raw"      ? "raw inputs"
                                            : "inputs with its own normalisation";
  if (regression && !same(run_preprocessing, teacher_preprocessing, "target_normalize")) {
    fit.description += ", outputs rescaled to the run's target units";
  }
  fit.probabilities = options.outputs() == "probabilities";
  if (task == Task::classification && options.outputs() == "auto") {
    torch::NoGradGuard no_grad;
    fit.model->set_training(false);
    fit.probabilities = looks_like_probabilities(
        fit.model->forward(sample_x.slice(0, 0, std::min<int64_t>(64, sample_x.size(0)))));
  }
  fit.model->set_probabilities(fit.probabilities);
  fit.model->set_class_groups(options.class_groups());  // after the check above, which reads its own classes
  if (options.learned_classes() > 0) {
    if (!sample_y.defined() || sample_y.size(0) == 0) fail("teacher.classes: learned needs labelled training rows");
    torch::Tensor logits;
    {
      torch::NoGradGuard no_grad;
      fit.model->set_training(false);
      logits = fit.model->forward(sample_x).to(torch::kFloat);
    }
    auto [weight, bias] = fit_class_projection(torch::log_softmax(logits, 1), sample_y.to(torch::kLong),
                                               options.learned_classes());
    fit.model->set_class_projection(weight, bias);
  }
  if (sample_y.defined() && sample_y.size(0) > 0) {
    torch::NoGradGuard no_grad;
    torch::Tensor out = fit.model->forward(sample_x).to(torch::kDouble);
    bool fits = out.dim() == 2 && out.size(0) == sample_y.size(0) &&
                (regression ? out.numel() == sample_y.numel() : sample_y.max().item<int64_t>() < out.size(1));
    if (!fits) {
      fit.loss = std::numeric_limits<double>::infinity();  // the caller's shape check names the problem
    } else if (regression) {
      fit.loss = (out - sample_y.to(torch::kDouble).view_as(out)).pow(2).mean().item<double>();
    } else {
      torch::Tensor labels = sample_y.to(torch::kLong);
      fit.accuracy = out.argmax(1).eq(labels).to(torch::kDouble).mean().item<double>();
      fit.loss = -torch::log_softmax(out, 1).gather(1, labels.view({-1, 1})).mean().item<double>();
    }
  }
  return fit;
}

std::string percent(double share) { return fmt::format("{:.1f}%", 100 * share); }

}  // namespace

AdaptedTeacher adapt_teacher(const io::LoadedModel& loaded, const nlohmann::json& run_preprocessing, Task task,
                             const TeacherInputOptions& options, const torch::Tensor& sample_x,
                             const torch::Tensor& sample_y) {
  validate(options);
  // A kdistill text model reads the ids of its own tokenizer: another one's ids would be other words.
  if (loaded.has_info && loaded.info.preprocessing.is_object() && loaded.info.preprocessing.contains("text") &&
      run_preprocessing.is_object() && run_preprocessing.contains("text")) {
    const auto& mine = loaded.info.preprocessing["text"];
    const auto& run = run_preprocessing["text"];
    if (mine.value("tokenizer", nlohmann::json()) != run.value("tokenizer", nlohmann::json()) ||
        mine.value("max_length", 0) != run.value("max_length", 0)) {
      fail("the {} model was trained on the ids of another tokenizer or max_length ({} ids) than the run's "
           "data.tokenizer ({} ids); give data.tokenizer the tokenizer the model was trained with",
           loaded.model->kind(), mine.value("max_length", 0), run.value("max_length", 0));
    }
  }
  int64_t rows = std::min<int64_t>(kInputSampleRows, sample_x.size(0));
  torch::Tensor x = sample_x.slice(0, 0, rows);
  torch::Tensor y = sample_y.defined() ? sample_y.slice(0, 0, std::min(rows, sample_y.size(0))) : torch::Tensor();
  bool regression = task == Task::regression;
  nlohmann::json evidence = {{"setting", options.input()}};
  Fit chosen;
  std::string why;
  if (options.input() == "raw") {
    chosen = fit_with(loaded, run_preprocessing, nullptr, task, options, x, y);
    why = "teacher.input: raw";
  } else if (options.input() == "normalized") {
    chosen = fit_with(loaded, run_preprocessing, run_preprocessing, task, options, x, y);
    why = "teacher.input: normalized";
  } else if (loaded.has_info) {
    chosen = fit_with(loaded, run_preprocessing, loaded.info.preprocessing, task, options, x, y);
    why = "its kdistill metadata";
  } else if (same(run_preprocessing, nullptr, "normalize") || !y.defined() || y.size(0) == 0) {
    chosen = fit_with(loaded, run_preprocessing, run_preprocessing, task, options, x, y);
    why = same(run_preprocessing, nullptr, "normalize") ? "the run does not normalise"
                                                         : "a file without kdistill metadata and no labelled rows";
  } else {
    // A file from another tool cannot say what it was trained on: the form it scores better on decides.
    Fit raw = fit_with(loaded, run_preprocessing, nullptr, task, options, x, y);
    Fit normalized = fit_with(loaded, run_preprocessing, run_preprocessing, task, options, x, y);
    // The loss the teacher was trained to lower (NLL, MSE) decides: accuracy moves little under a rescaled
    // input (a ReLU network's argmax survives scaling), while the loss of a wrongly fed teacher rises.
    bool raw_better = raw.loss < normalized.loss;
    chosen = raw_better ? raw : normalized;
    std::string rows_text = fmt::format("{} labelled training rows", y.size(0));
    if (regression) {
      why = fmt::format("teacher.input: auto, MSE on {}: {:.4g} raw, {:.4g} normalised", rows_text, raw.loss,
                        normalized.loss);
      evidence["sample_mse"] = {{"raw", raw.loss}, {"normalized", normalized.loss}};
    } else {
      why = fmt::format("teacher.input: auto, NLL on {}: {:.3f} raw, {:.3f} normalised; accuracy {} and {}",
                        rows_text, raw.loss, normalized.loss, percent(raw.accuracy), percent(normalized.accuracy));
      evidence["sample_accuracy"] = {{"raw", raw.accuracy}, {"normalized", normalized.accuracy}};
      evidence["sample_nll"] = {{"raw", raw.loss}, {"normalized", normalized.loss}};
    }
    evidence["sample_rows"] = y.size(0);
  }
  std::string description = chosen.description;
  if (chosen.probabilities) description += "; its outputs are probabilities, their logarithms are the logits";
  description += " (" + why + ")";
  evidence["fed"] = chosen.fed;
  evidence["outputs"] = chosen.probabilities ? "probabilities" : "logits";
  evidence["why"] = why;
  bool same_inputs = chosen.fed == "normalized";
  bool same_targets = !regression || same(run_preprocessing, chosen.preprocessing, "target_normalize");
  if (!options.class_groups().empty()) {
    description += fmt::format("; its {} classes mapped onto the run's {}", options.teacher_classes(),
                               options.class_groups().size());
    evidence["classes"] = options.class_groups();
  }
  if (options.learned_classes() > 0) {
    description += fmt::format("; its {} classes mapped onto the run's {} by a projection learned on {} labelled rows "
                               "(accuracy {} on them)",
                               options.teacher_classes(), options.learned_classes(), y.size(0), percent(chosen.accuracy));
    evidence["class_projection"] = {{"teacher_classes", options.teacher_classes()}, {"rows", y.size(0)},
                                    {"accuracy", chosen.accuracy}, {"nll", chosen.loss}};
  }
  if (same_inputs && same_targets && !chosen.probabilities && options.class_groups().empty() &&
      options.learned_classes() == 0) {
    return {loaded.model, description, evidence};
  }
  return {chosen.model, description, evidence};
}

torch::Tensor labelled_sample(const data::DataFold& fold, int64_t rows) {
  torch::Tensor index = fold.labeled.defined() ? fold.labeled.nonzero().squeeze(1)
                                               : torch::arange(fold.train.x.size(0), torch::kLong);
  if (index.size(0) > rows) {
    auto spread = torch::linspace(0, static_cast<double>(index.size(0) - 1), rows).to(torch::kLong);
    index = index.index_select(0, spread);
  }
  return index;
}

AdaptedTeacher adapt_to_fold(const io::LoadedModel& loaded, const data::DataFold& fold, Task task,
                             const TeacherInputOptions& options) {
  torch::Tensor index = labelled_sample(fold, kInputSampleRows);
  return adapt_teacher(loaded, fold.preprocessing, task, options, fold.train.x.index_select(0, index),
                       fold.train.y.index_select(0, index));
}

}  // namespace kd::teacher
