#include "kd/train/evaluate.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "kd/data/normalize.h"
#include "kd/io/model_file.h"
#include "kd/report/analysis.h"
#include "kd/text/tokenizer.h"
#include "kd/train/trainer.h"
#include "kd/util/error.h"
#include "kd/util/progress.h"
#include "kd/util/shape.h"
#include "kd/util/strings.h"

namespace kd::train {

namespace fs = std::filesystem;

namespace {


// The q-quantile (nearest rank) of sorted seconds, in milliseconds.
double quantile_ms(const std::vector<double>& sorted, double q) {
  auto at = static_cast<size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(at, sorted.size() - 1)] * 1000.0;
}

nlohmann::json measure_latency(models::Model& model, const std::vector<int64_t>& input_shape, int64_t repeats,
                               const torch::Tensor& rows, double min_seconds) {
  torch::NoGradGuard no_grad;
  model.set_training(false);
  nlohmann::json out;
  for (int64_t batch : {int64_t{1}, int64_t{256}}) {
    std::vector<int64_t> shape = {batch};
    shape.insert(shape.end(), input_shape.begin(), input_shape.end());
    // Real rows where given (token ids must be ids), repeated to the batch; random numbers otherwise.
    auto x = rows.defined() && rows.size(0) > 0 ? rows.index_select(0, torch::arange(batch) % rows.size(0))
                                                : torch::randn(shape);
    auto warm_up = Clock::now();
    for (int i = 0; i < 3 || seconds_since(warm_up) < min_seconds / 3; ++i) model.forward(x);
    const auto runs = static_cast<size_t>(batch == 1 ? repeats : std::max<int64_t>(3, repeats / 4));
    std::vector<double> samples;
    for (auto first = Clock::now(); samples.size() < runs || (seconds_since(first) < min_seconds && samples.size() < 10000);) {
      auto start = Clock::now();
      model.forward(x);
      samples.push_back(seconds_since(start));
    }
    std::sort(samples.begin(), samples.end());
    std::string key = "batch" + std::to_string(batch);
    out[key] = quantile_ms(samples, 0.5);
    out[key + "_p10"] = quantile_ms(samples, 0.1);
    out[key + "_p90"] = quantile_ms(samples, 0.9);
    out[key + "_samples"] = samples.size();
  }
  out["threads"] = torch::get_num_threads();
  return out;
}

}  // namespace

std::vector<losses::LossTermOptions> supervised_losses(Task task) {
  if (task == Task::classification) return {losses::LossTermOptions("ce")};
  return {losses::LossTermOptions("mse").target("labels")};
}

// Checks that a model maps one batch of the data to [N, outputs].
void check_outputs(models::Model& model, const data::Dataset& dataset, const torch::Tensor& x, const std::string& what) {
  torch::NoGradGuard no_grad;
  model.set_training(false);
  torch::Tensor out;
  try {
    out = model.forward(x.slice(0, 0, std::min<int64_t>(2, x.size(0))));
  } catch (const c10::Error& e) {
    fail("{}: does not run on inputs of shape {}: {}", what, shape_text(dataset.input_shape), first_line(e));
  }
  if (out.dim() != 2 || out.size(1) != dataset.outputs) {
    fail("{}: outputs have shape {}, expected [N, {}] ({} {})", what, shape_text(out.sizes()), dataset.outputs,
         dataset.outputs, dataset.task == Task::classification ? "classes in the data" : "targets in the data");
  }
}

io::ModelInfo info_for(const data::Dataset& dataset, const data::DataFold& fold, const nlohmann::json& spec,
                       const std::string& output) {
  io::ModelInfo info;
  info.task = dataset.task;
  info.input_shape = dataset.input_shape;
  info.outputs = dataset.outputs;
  info.class_names = dataset.class_names;
  info.spec = spec;
  info.preprocessing = fold.preprocessing;
  info.output = output;
  return info;
}

torch::Tensor in_target_units(Task task, const data::DataFold& fold, const torch::Tensor& t) {
  return task == Task::classification || !t.defined() ? t : fold.target_normalizer.invert(t);
}

report::Metrics score(Task task, const data::DataFold& fold, const torch::Tensor& outputs, const torch::Tensor& y,
                      const torch::Tensor& teacher_outputs) {
  if (task == Task::classification) return report::classification_metrics(outputs, y, teacher_outputs);
  return report::regression_metrics(in_target_units(task, fold, outputs), in_target_units(task, fold, y),
                                    in_target_units(task, fold, teacher_outputs));
}

report::Metrics score_validation(models::Model& model, Task task, const data::DataFold& fold,
                                 const torch::Tensor& teacher_val, dist::Group* group) {
  return score(task, fold, predict_shared(model, fold.val.x, group), fold.val.y, teacher_val);
}

torch::Tensor predict_shared(models::Model& model, const torch::Tensor& x, dist::Group* group, int64_t batch_size) {
  if (!group || !group->distributed()) return predict(model, x, batch_size);
  torch::Tensor rows = shard_rows(x.size(0), group->rank(), group->size());
  torch::Tensor part = predict(model, x.index_select(0, rows), batch_size);
  std::vector<int64_t> shape = part.sizes().vec();
  shape[0] = x.size(0);
  std::vector<torch::Tensor> whole = {torch::zeros(shape, part.options())};
  whole[0].index_copy_(0, rows, part);
  group->all_reduce_sum(whole);
  return whole[0];
}

nlohmann::json size_of(models::Model& model, const std::vector<int64_t>& input_shape, const std::string& file,
                       int64_t repeats, const torch::Tensor& rows, double min_seconds) {
  auto summary = model.summary(input_shape);
  nlohmann::json size = {{"params", summary.params}, {"macs", summary.macs}};
  std::error_code ec;
  size["bytes"] = !file.empty() && fs::exists(file, ec) ? io::model_bytes(file) : 0;  // TF.js: with its shards
  size["file"] = fs::path(file).filename().string();
  size["latency_ms"] = measure_latency(model, input_shape, repeats, rows, min_seconds);
  return size;
}

const data::DataFold& eval_fold(const data::Dataset& dataset, size_t fold_index) {
  if (fold_index >= dataset.folds.size()) {
    fail("--fold: {} is past the data's {} fold{}", fold_index + 1, dataset.folds.size(), dataset.folds.size() == 1 ? "" : "s");
  }
  return dataset.folds[fold_index];
}

nlohmann::json evaluate_model(models::Model& model, const data::Dataset& dataset, size_t fold_index,
                              models::Model* teacher, const EvalOptions& options) {
  const auto& fold = eval_fold(dataset, fold_index);
  Task task = dataset.task;
  auto run = [&](models::Model& m, const std::string& what) {
    torch::Tensor out;
    try {
      models::DeviceScope on_device(&m, options.device());
      out = predict_shared(m, fold.test.x, options.group().get());
    } catch (const c10::Error& e) {
      fail("{}: does not run on inputs of shape {}: {}", what, shape_text(dataset.input_shape), first_line(e));
    }
    if (out.dim() != 2 || out.size(1) != dataset.outputs) {
      fail("{}: outputs have shape {}, expected [N, {}] ({})", what, shape_text(out.sizes()), dataset.outputs,
           task == Task::classification ? "classes in the data" : "targets in the data");
    }
    return out;
  };
  std::string name = options.file().empty() ? "model" : options.file();
  auto outputs = run(model, name);
  torch::Tensor teacher_outputs = teacher ? run(*teacher, "--teacher") : torch::Tensor();
  const bool root = !options.group() || options.group()->is_root();
  nlohmann::json m = root ? size_of(model, dataset.input_shape, options.file(), options.latency_repeats(), fold.test.x)
                          : nlohmann::json::object();
  m["test"] = score(task, fold, outputs, fold.test.y, teacher_outputs);
  report::TestOutputs tested{in_target_units(task, fold, fold.test.y), {{"model", in_target_units(task, fold, outputs)}}};
  m.update(report::model_analysis(task, {tested}, "model"));
  m["test_rows"] = fold.test.size();
  return m;
}

bool reads_text(const io::LoadedModel& loaded) {
  const nlohmann::json& pre = loaded.info.preprocessing;
  return loaded.has_info && pre.is_object() && pre.contains("text");
}

torch::Tensor predict_texts(io::LoadedModel& loaded, const std::vector<std::string>& texts, const std::string& what) {
  if (!reads_text(loaded)) fail("{}: the model was not trained on text (it stores no tokenizer)", what);
  const nlohmann::json& text = loaded.info.preprocessing["text"];
  auto tokenizer = text::tokenizer_from_json(text.at("tokenizer"));
  torch::Tensor ids = text::encode_batch(*tokenizer, texts, text.at("max_length").get<int64_t>());
  return predict_raw(loaded, ids, true, what);
}

torch::Tensor predict_raw(io::LoadedModel& loaded, torch::Tensor inputs, bool inputs_normalized, const std::string& what) {
  const auto& shape = loaded.info.input_shape;
  if (inputs.dim() < 2) fail("{}: inputs have shape {}, expected [examples, ...]", what, shape_text(inputs.sizes()));
  inputs = data::float_inputs(inputs);
  if (loaded.has_info && !shape.empty()) {
    int64_t per_example = 1;
    for (int64_t d : shape) per_example *= d;
    if (inputs.numel() != inputs.size(0) * per_example) {
      fail("{}: inputs have shape {}, expected {} values per example (the model's input is {})", what,
           shape_text(inputs.sizes()), per_example, shape_text(shape));
    }
    std::vector<int64_t> full = {inputs.size(0)};
    full.insert(full.end(), shape.begin(), shape.end());
    inputs = inputs.reshape(full);
  }
  const nlohmann::json& pre = loaded.info.preprocessing;
  auto normalizer = [&pre](const char* key) {
    return pre.is_object() && pre.contains(key) ? data::Normalizer::from_json(pre[key]) : data::Normalizer();
  };
  if (!inputs_normalized) inputs = normalizer("normalize").apply(inputs);
  torch::Tensor out;
  try {
    out = predict(*loaded.model, inputs);
  } catch (const c10::Error& e) {
    fail("{}: the model does not run on inputs of shape {}: {}", what, shape_text(inputs.sizes()), first_line(e));
  }
  if (loaded.info.task == Task::regression) out = normalizer("target_normalize").invert(out);
  return out;
}


}  // namespace kd::train
