#include "kd/train/teacher_input.h"

#include <algorithm>
#include <initializer_list>
#include <utility>

#include "kd/data/normalize.h"
#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::train {

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
    torch::Tensor out = teacher_->forward(teacher_inputs_.apply(run_inputs_.invert(input)));
    // log p is a logit vector with softmax(log p) = p; the floor keeps an underflowed 0 finite.
    if (probabilities_) return torch::log(out.clamp_min(kSmallestProbability));
    return run_targets_.apply(teacher_targets_.invert(out));
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

 private:
  models::ModelPtr teacher_;
  Normalizer run_inputs_, teacher_inputs_, teacher_targets_, run_targets_;
  bool probabilities_ = false;
  static constexpr double kSmallestProbability = 1e-30;
};

bool one_of(const std::string& word, std::initializer_list<const char*> words) {
  for (const char* w : words) {
    if (word == w) return true;
  }
  return false;
}

// Whether every row of `outputs` is a probability distribution.
bool looks_like_probabilities(const torch::Tensor& outputs) {
  if (outputs.dim() != 2 || outputs.size(0) == 0 || outputs.size(1) < 2) return false;
  torch::Tensor o = outputs.to(torch::kDouble);
  bool in_range = o.ge(0).all().item<bool>() && o.le(1 + 1e-6).all().item<bool>();
  return in_range && (o.sum(1) - 1).abs().max().item<double>() < 1e-3;
}

}  // namespace

void validate(const TeacherInputOptions& options) {
  if (!one_of(options.input(), {"auto", "raw", "normalized"})) {
    fail("teacher.input: {} is not an input kind, expected auto, raw or normalized", quote(options.input()));
  }
  if (!one_of(options.outputs(), {"auto", "logits", "probabilities"})) {
    fail("teacher.outputs: {} is not an output kind, expected auto, logits or probabilities", quote(options.outputs()));
  }
}

AdaptedTeacher adapt_teacher(const io::LoadedModel& loaded, const nlohmann::json& run_preprocessing, Task task,
                             const TeacherInputOptions& options, const torch::Tensor& sample) {
  validate(options);
  // Inputs (and regression outputs): whose preprocessing the teacher expects.
  nlohmann::json teacher_preprocessing = run_preprocessing;
  std::string why = "teacher.input: " + options.input();
  if (options.input() == "raw") {
    teacher_preprocessing = nullptr;
  } else if (options.input() == "auto" && loaded.has_info) {
    teacher_preprocessing = loaded.info.preprocessing;
    why = "its kdistill metadata";
  } else if (options.input() == "auto") {
    why = "a file without kdistill metadata";
  }
  bool same_inputs = same(run_preprocessing, teacher_preprocessing, "normalize");
  bool same_targets = task != Task::regression || same(run_preprocessing, teacher_preprocessing, "target_normalize");
  std::string description = same_inputs ? "the run's normalised inputs"
                            : normalizer_at(teacher_preprocessing, "normalize").identity()
                                ? "raw inputs"
                                : "inputs with its own normalisation";
  if (!same_targets) description += ", outputs rescaled to the run's target units";
  description += " (" + why + ")";

  bool regression = task == Task::regression;
  auto model = std::make_shared<AdaptedModel>(
      loaded.model, normalizer_at(run_preprocessing, "normalize"), normalizer_at(teacher_preprocessing, "normalize"),
      regression ? normalizer_at(teacher_preprocessing, "target_normalize") : Normalizer(),
      regression ? normalizer_at(run_preprocessing, "target_normalize") : Normalizer(), false);
  bool probabilities = options.outputs() == "probabilities";
  if (task == Task::classification && options.outputs() == "auto") {
    torch::NoGradGuard no_grad;
    model->set_training(false);
    probabilities = looks_like_probabilities(model->forward(sample.slice(0, 0, std::min<int64_t>(64, sample.size(0)))));
  }
  model->set_probabilities(probabilities);
  if (probabilities) description += "; its outputs are probabilities, their logarithms are the logits";
  if (same_inputs && same_targets && !probabilities) return {loaded.model, description};
  return {model, description};
}

}  // namespace kd::train
