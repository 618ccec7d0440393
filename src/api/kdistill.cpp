#include "kd/kdistill.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <zlib.h>

#include "kd/data/dataset.h"
#include "kd/export/exporters.h"
#include "kd/teacher/teacher_input.h"
#include "kd/train/evaluate.h"
#include "kd/util/runtime.h"
#include "kd/util/shape.h"
#include "kd/util/strings.h"

namespace kd {

namespace {

// CRC-32 of a tensor's values, shape and type: what tells one set of in-memory arrays from another
// in the teacher's fingerprint (files are told apart by their paths).
uint32_t tensor_crc(uint32_t crc, const torch::Tensor& t) {
  if (!t.defined()) return crc;
  torch::Tensor c = t.to(torch::kCPU).contiguous();
  std::string header = fmt::format("{}:{};", c10::toString(c.scalar_type()), shape_text(c.sizes()));
  crc = crc32_z(crc, reinterpret_cast<const Bytef*>(header.data()), header.size());
  return crc32_z(crc, static_cast<const Bytef*>(c.data_ptr()), c.nbytes());
}

// The class probabilities of `outputs` when asked for (a model that ends in a softmax gives them already).
torch::Tensor with_softmax(torch::Tensor outputs, const PredictOptions& options) {
  if (options.softmax() && !teacher::looks_like_probabilities(outputs)) return torch::softmax(outputs, 1);
  return outputs;
}

}  // namespace

int setup(const SetupOptions& options) {
  static const std::vector<std::string> levels = {"trace", "debug", "info", "warn", "error", "off"};
  if (std::find(levels.begin(), levels.end(), options.log_level()) == levels.end()) {
    fail("log_level: {} is not a level, expected {}", quote(options.log_level()), join(levels, ", "));
  }
  use_fitting_blas_kernels();
  auto logger = spdlog::get("kdistill");
  if (!logger) logger = spdlog::stderr_color_mt("kdistill");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("[%H:%M:%S] %v");
  spdlog::set_level(spdlog::level::from_str(options.log_level()));
  configure_allocator();
  configure_torchscript();
  return configure_threads(options.threads());
}

Recipe parse_recipe(const std::string& yaml, const std::string& base_folder, const std::vector<std::string>& overrides,
                    const std::string& name) {
  return recipe::parse_recipe(yaml, name, base_folder, overrides);
}

void set_arrays(Recipe& recipe, const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& x_test,
                const torch::Tensor& y_test) {
  if (!x.defined() || !y.defined()) fail("arrays: x and y are both needed");
  if (x_test.defined() != y_test.defined()) fail("arrays: x_test and y_test go together (give both or neither)");
  if (recipe.data.train().x.defined()) fail("arrays: this recipe has arrays already; set them on a fresh recipe");
  // Files and arrays for the same rows: one would be silently ignored.
  if (!recipe.data.format().empty() && recipe.data.format() != "arrays") {
    fail("data.format: {} with arrays in memory; leave data.format out (the arrays are read as they are)",
         recipe.data.format());
  }
  if (!recipe.data.train().empty()) fail("data.train: a file as well as arrays in memory; give one or the other");
  if (!recipe.data.test().empty()) fail("data.test: a file with arrays in memory; give the test rows as arrays too");
  data::DataFiles train, test;
  train.x = x;
  train.y = y;
  test.x = x_test;
  test.y = y_test;
  recipe.data.format("arrays").train(train).test(test);
  recipe.run.data = recipe.data;
  uint32_t crc = 0;
  for (const auto& t : {x, y, x_test, y_test}) crc = tensor_crc(crc, t);
  recipe.run.teacher_fingerprint += fmt::format("\narrays: {:08x}\n", crc);
}

Dataset load_data(const Recipe& recipe) { return data::load_dataset(recipe.data); }

RunResult distill(const Recipe& recipe, const RunOptions& options) {
  seed_everything(recipe.seed);
  return flow::run_distillation(recipe.run, options);
}

torch::Tensor predict(LoadedModel& model, const torch::Tensor& inputs, const PredictOptions& options) {
  if (train::reads_text(model)) fail("{}: a text model reads texts, not an array of inputs", options.name());
  return with_softmax(train::predict_raw(model, inputs.to(torch::kCPU), options.normalized(), options.name()), options);
}

torch::Tensor predict(LoadedModel& model, const std::vector<std::string>& texts, const PredictOptions& options) {
  if (!train::reads_text(model)) fail("{}: texts given to a model that reads arrays of inputs", options.name());
  return with_softmax(train::predict_texts(model, texts, options.name()), options);
}

nlohmann::json evaluate(const std::string& model_path, const Recipe& recipe, const EvaluateOptions& options) {
  if (options.fold() < 1) fail("fold: {} is not a fold number (1-based)", options.fold());
  seed_everything(recipe.seed);
  auto loaded = io::load_model(model_path, options.output());
  io::LoadedModel teacher;
  if (!options.teacher().empty()) teacher = io::load_model(options.teacher());
  auto dataset = data::load_dataset(recipe.data);
  // Each file fed as `run` feeds a teacher file: its own preprocessing, or the better of raw and normalised.
  const auto fold_index = static_cast<size_t>(options.fold() - 1);
  const auto& fold = train::eval_fold(dataset, fold_index);
  auto model = teacher::adapt_to_fold(loaded, fold, dataset.task, teacher::TeacherInputOptions().input(options.input()));
  spdlog::info("{} gets {}", model_path, model.description);
  models::ModelPtr teacher_model;
  if (teacher.model) {
    auto adapted = teacher::adapt_to_fold(teacher, fold, dataset.task, teacher::TeacherInputOptions());
    spdlog::info("teacher {} gets {}", options.teacher(), adapted.description);
    teacher_model = adapted.model;
  }
  auto metrics = train::evaluate_model(*model.model, dataset, fold_index, teacher_model.get(),
                                       train::EvalOptions().file(model_path).group(options.group()).device(options.device()));
  return {{"task", to_string(dataset.task)}, {"model", model_path}, {"data", recipe.file},
          {"fold", options.fold()}, {"input", model.evidence}, {"metrics", metrics}};
}

void export_model(const std::string& model_path, const std::string& format, const std::string& out_path) {
  const auto& chosen = exports::export_format(format, "format");
  auto loaded = io::load_model(model_path);
  if (!loaded.has_info) {
    fail("{}: not a model kdistill trained (no kdistill metadata); export takes .kdm files from a run folder",
         model_path);
  }
  exports::export_model(*loaded.model, loaded.info, chosen.name, out_path);
}

}  // namespace kd
