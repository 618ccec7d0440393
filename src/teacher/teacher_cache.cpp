#include "kd/teacher/teacher_cache.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "kd/io/onnx_model.h"
#include "kd/losses/distiller.h"
#include "kd/models/ensemble.h"
#include "kd/models/torchscript_model.h"
#include "kd/train/evaluate.h"
#include "kd/util/error.h"
#include "kd/util/strings.h"
#include "kd/util/fs.h"
#include "kd/util/progress.h"

namespace kd::teacher {

namespace fs = std::filesystem;
using train::check_outputs;
using train::info_for;
using train::inference_batch_size;
using train::predict;
using train::score_validation;
using train::Trainer;
using train::TrainData;
using train::TrainOptions;

namespace {

// A loaded teacher near chance on the validation rows was most likely fed other inputs than it was
// trained on.
void warn_if_near_chance(Task task, const data::DataFold& fold, int64_t classes, const torch::Tensor& teacher_val,
                         const std::string& tag) {
  if (task != Task::classification || !fold.val.y.defined() || fold.val.y.size(0) < 20 || classes < 2) return;
  double accuracy = teacher_val.argmax(1).eq(fold.val.y).to(torch::kDouble).mean().item<double>();
  if (accuracy > 1.5 / static_cast<double>(classes)) return;
  spdlog::warn("teacher{}: {:.1f}% accurate on the validation rows, near chance ({:.1f}%): is it fed inputs the "
               "way it was trained? (teacher.input: raw | normalized, data.normalize)",
               tag, 100 * accuracy, 100.0 / static_cast<double>(classes));
}

struct TrainedTeacher {
  models::ModelPtr model;
  io::ModelInfo info;
  std::string file;
  std::optional<train::TrainResult> training;  // when trained in this call
};

// The zoo teacher `name` (DIR/NAME.kdm) trained with seed run.seed() + `seed_offset`, or reused when
// its fingerprint file holds the same run.fingerprint() (and member).
TrainedTeacher train_or_reuse(const TeacherSpec& spec, const TeacherRun& run, const data::Dataset& dataset,
                              size_t fold_index, const std::string& dir, const std::string& name, uint64_t seed_offset,
                              const std::string& tag) {
  const data::DataFold& fold = dataset.folds[fold_index];
  Task task = dataset.task;
  TrainedTeacher out;
  fs::create_directories(fs::path(dir) / "checkpoints");
  out.file = (fs::path(dir) / (name + ".kdm")).string();
  std::string fingerprint_file = out.file + ".fingerprint";
  std::string fingerprint = seed_offset == 0 ? run.fingerprint() : fmt::format("{}\nmember: {}", run.fingerprint(), seed_offset);
  bool reuse = fs::exists(out.file) && fs::exists(fingerprint_file) && read_file(fingerprint_file) == fingerprint;
  std::string checkpoint = (fs::path(dir) / "checkpoints" / (name + ".ckpt")).string();
  if (reuse) {
    auto loaded = io::load_model(out.file);
    out.model = loaded.model;
    out.info = loaded.info;
    out.training = train::finished_training(checkpoint);  // as when it was trained, if its checkpoint is there
    spdlog::info("teacher{}: reusing {} (same teacher recipe and data)", tag, out.file);
    return out;
  }
  spdlog::info("teacher{}: training {}{}", tag, models::to_json(*spec.model).dump(),
               seed_offset == 0 ? "" : fmt::format(" (seed + {}, as {})", seed_offset, name));
  out.model = models::build_zoo_model(models::with_vocab(*spec.model, dataset.text.vocab, dataset.text.pad_id),
                                      dataset.input_shape, dataset.outputs, "teacher.model");
  losses::Distiller supervised(train::supervised_losses(task), task);
  TrainOptions train = spec.train;
  train.checkpoint(checkpoint)
      .resume(run.resume())
      .seed(run.seed() + seed_offset)
      .group(run.group())
      .device(run.device());
  Trainer trainer(train, supervised, name + tag);
  TrainData data{fold.train.x, fold.train.y, {}, {}};
  data.categorical = fold.categorical;
  auto validate = [&fold, task, group = run.group().get()](models::Model& model) {
    return score_validation(model, task, fold, {}, group);
  };
  out.training = trainer.fit(*out.model, data, validate);
  out.info = info_for(dataset, fold, models::to_json(models::with_vocab(*spec.model, dataset.text.vocab, dataset.text.pad_id)));
  if (!run.group() || run.group()->is_root()) {
    io::save_model(out.file, *out.model, out.info);
    write_file_atomic(fingerprint_file, fingerprint);
  }
  return out;
}

// The number of outputs of a loaded teacher, from two training rows.
int64_t outputs_of(const io::LoadedModel& loaded, const data::DataFold& fold) {
  torch::NoGradGuard no_grad;
  loaded.model->set_training(false);
  torch::Tensor out;
  try {
    out = loaded.model->forward(fold.train.x.slice(0, 0, std::min<int64_t>(2, fold.train.x.size(0))));
  } catch (const std::exception&) {
    return 0;  // adapt_to_fold feeds it as it should be fed, and names the problem
  }
  return out.dim() == 2 ? out.size(1) : 0;
}

// teacher.classes as output indices, or the mapping by class names; empty: the teacher's own classes
// (or classes: learned).
// `outputs`: the teacher's number of outputs (outputs_of).
std::vector<std::vector<int64_t>> class_groups(const TeacherSpec& spec, const io::LoadedModel& loaded,
                                               const data::Dataset& dataset, int64_t outputs, const std::string& path) {
  const std::vector<std::string>& names = loaded.has_info ? loaded.info.class_names : std::vector<std::string>{};
  auto index_of = [&](const std::string& item, const std::string& where) -> int64_t {
    if (auto index = parse_int(item)) {
      if (*index < 0 || *index >= outputs) {
        fail("{}: {} is not an output of {}, which has {} (0..{})", where, *index, path, outputs, outputs - 1);
      }
      return *index;
    }
    auto it = std::find(names.begin(), names.end(), item);
    if (it == names.end()) {
      if (names.empty()) fail("{}: {}: {} names no classes; give output indices", where, quote(item), path);
      auto suggestion = nearest(item, names);
      fail("{}: {} is not a class of {}{}", where, quote(item), path,
           suggestion ? " (did you mean " + quote(*suggestion) + "?)" : std::string());
    }
    return it - names.begin();
  };
  std::vector<std::vector<int64_t>> groups;
  if (spec.learned_classes) return groups;
  if (!spec.classes.empty()) {
    if (static_cast<int64_t>(spec.classes.size()) != dataset.outputs) {
      fail("teacher.classes: {} entries, expected one for each of the data's {} classes ({})", spec.classes.size(),
           dataset.outputs, join(dataset.class_names, ", "));
    }
    for (size_t c = 0; c < spec.classes.size(); ++c) {
      std::vector<int64_t> group;
      for (const auto& item : spec.classes[c]) group.push_back(index_of(item, fmt::format("teacher.classes[{}]", c)));
      groups.push_back(group);
    }
    return groups;
  }
  if (outputs == dataset.outputs || names.empty() || static_cast<int64_t>(names.size()) != outputs) return {};
  for (const auto& name : dataset.class_names) {
    auto it = std::find(names.begin(), names.end(), name);
    if (it == names.end()) return {};  // not a subset: the output check names the mismatch
    groups.push_back({it - names.begin()});
  }
  return groups;
}

}  // namespace

TeacherCache prepare_teacher(const TeacherSpec& spec, const TeacherRun& run, const data::Dataset& dataset,
                             size_t fold_index, const std::string& dir) {
  const data::DataFold& fold = dataset.folds[fold_index];
  Task task = dataset.task;
  std::string tag = dataset.folds.size() == 1 ? "" : fmt::format(" (fold {}/{})", fold_index + 1, dataset.folds.size());
  TeacherCache cache;
  auto teacher_start = Clock::now();
  if (!spec.paths.empty()) {
    // Each file fed the way it was trained; an ensemble's members each on their own evidence.
    std::vector<models::ModelPtr> members;
    nlohmann::json evidence = nlohmann::json::array();
    for (const auto& path : spec.paths) {
      auto loaded = io::load_model(path, spec.output);
      // A BERT-style file (TorchScript or ONNX) taking input_ids and attention_mask: the mask is where
      // the ids are not padding.
      auto feed_token_ids = [&](auto* model) {
        if (!model || !model->takes_token_ids()) return;
        if (dataset.text.vocab == 0) fail("{}: takes token ids (input_ids); use it with data.format: text", path);
        model->set_pad_id(dataset.text.pad_id);
      };
      feed_token_ids(dynamic_cast<models::TorchScriptModel*>(loaded.model.get()));
      feed_token_ids(dynamic_cast<io::OnnxModel*>(loaded.model.get()));
      TeacherInputOptions adapt = spec.adapt;
      if (task == Task::classification) {
        int64_t outputs = outputs_of(loaded, fold);
        adapt.class_groups(class_groups(spec, loaded, dataset, outputs, path)).teacher_classes(outputs);
        if (spec.learned_classes) adapt.learned_classes(dataset.outputs);
        if (!adapt.class_groups().empty()) {
          spdlog::info("teacher{}: {}'s {} classes mapped onto the data's {}", tag, path, adapt.teacher_classes(),
                       dataset.outputs);
        } else if (outputs > 0 && outputs != dataset.outputs && !spec.learned_classes) {
          fail("{}: outputs have shape [2, {}], expected [N, {}] (classes in the data); a teacher of other classes "
               "needs teacher.classes (a list, or learned)", path, outputs, dataset.outputs);
        }
      }
      auto adapted = [&] {
        try {
          return adapt_to_fold(loaded, fold, task, adapt);
        } catch (const Error&) {
          rethrow_with_context(path);
        }
      }();
      if (spec.learned_classes) {
        adapted.evidence["class_mapping"] = "learned";
      } else if (!adapt.class_groups().empty()) {
        adapted.evidence["class_mapping"] = spec.classes.empty() ? "names" : "recipe";
      }
      spdlog::info("teacher{}: {} gets {}", tag, path, adapted.description);
      check_outputs(*adapted.model, dataset, fold.train.x, path);
      members.push_back(adapted.model);
      evidence.push_back(adapted.evidence);
      if (members.size() == 1) cache.info = loaded.has_info ? loaded.info : info_for(dataset, fold, nullptr, spec.output);
    }
    cache.file = spec.paths[0];
    if (members.size() == 1) {
      cache.model = members[0];
      cache.input = evidence[0];
    } else {
      cache.model = std::make_shared<models::EnsembleModel>(members, spec.combine, spec.weights);
      cache.member_files = spec.paths;
      cache.input = {{"ensemble", evidence}, {"combine", models::to_string(spec.combine)}};
      spdlog::info("teacher{}: an ensemble of {} teachers, {} averaged", tag, members.size(),
                   models::to_string(spec.combine));
    }
  } else if (spec.model) {
    // One teacher, or `members` of them (member k trained with seed + k) combined as an ensemble.
    std::vector<models::ModelPtr> members;
    for (int64_t k = 0; k < spec.members; ++k) {
      std::string name = k == 0 ? "teacher" : fmt::format("teacher-{}", k + 1);
      auto member = train_or_reuse(spec, run, dataset, fold_index, dir, name, static_cast<uint64_t>(k), tag);
      if (k == 0) {
        cache.file = member.file;
        cache.info = member.info;
        cache.training = member.training;
      }
      cache.member_files.push_back(member.file);
      members.push_back(member.model);
    }
    if (members.size() == 1) {
      cache.model = members[0];
      cache.member_files.clear();
    } else {
      cache.model = std::make_shared<models::EnsembleModel>(members, spec.combine, spec.weights);
      spdlog::info("teacher{}: an ensemble of {} teachers trained here, {} combined", tag, members.size(),
                   models::to_string(spec.combine));
    }
  } else {
    fail("teacher: give path: (a model file) or model: (a zoo spec to train)");
  }
  cache.model->set_training(false);
  auto* ensemble = dynamic_cast<models::EnsembleModel*>(cache.model.get());
  if (ensemble && spec.combine == models::EnsembleCombine::correctness) {
    torch::Tensor index = labelled_sample(fold, kCorrectnessRows);
    torch::Tensor precision =
        ensemble->fit_precision(fold.train.x.index_select(0, index), fold.train.y.index_select(0, index),
                                dataset.outputs, inference_batch_size(*cache.model, dataset.input_shape));
    cache.combine = {{"rows", index.size(0)}, {"precision", nlohmann::json::array()}};
    for (int64_t m = 0; m < precision.size(0); ++m) {
      auto row = precision[m].to(torch::kDouble).contiguous();
      cache.combine["precision"].push_back(std::vector<double>(row.data_ptr<double>(), row.data_ptr<double>() + row.numel()));
    }
    spdlog::info("teacher{}: each member weighted per row by its precision for the class it predicts, measured on {} "
                 "labelled training rows", tag, index.size(0));
  }
  cache.teacher_seconds = seconds_since(teacher_start);

  auto cache_start = Clock::now();
  int64_t rows = inference_batch_size(*cache.model, dataset.input_shape);
  dist::Group* group = run.group().get();
  models::DeviceScope on_device(cache.model.get(), run.device());
  if (group && group->distributed() && run.shard_cache()) {
    torch::Tensor x = fold.transfer_x.defined() ? torch::cat({fold.train.x, fold.transfer_x}) : fold.train.x;
    cache.train = predict(*cache.model, x.index_select(0, train::shard_rows(x.size(0), group->rank(), group->size())), rows);
    cache.train_shards = group->size();
    cache.train_shard = group->rank();
  } else {
    cache.train = predict(*cache.model, fold.train.x, rows);
    if (fold.transfer_x.defined()) cache.transfer = predict(*cache.model, fold.transfer_x, rows);
  }
  cache.val = train::predict_shared(*cache.model, fold.val.x, group, rows);
  cache.test = train::predict_shared(*cache.model, fold.test.x, group, rows);
  cache.cache_seconds = seconds_since(cache_start);
  if (!spec.paths.empty()) warn_if_near_chance(task, fold, dataset.outputs, cache.val, tag);
  return cache;
}

nlohmann::json Teaching::to_json() const {
  nlohmann::json j = {{"mode", mode}, {"bytes", bytes}};
  if (mode == "bank") {
    j.update({{"views", views}, {"seconds", seconds}, {"dtype", "float16"}, {"storage", mapped ? "mapped file" : "memory"},
              {"top_k", top_k}});
    if (top_k > 0) j.update({{"top_k_max_prob_error", max_error}, {"top_k_mean_rest_mass", rest_mass}});
    else j["float16_max_error"] = max_error;
  }
  if (taps_bytes > 0) {
    j.update({{"taps_bytes", taps_bytes}, {"taps_seconds", taps_seconds}, {"taps_storage", taps_mapped ? "mapped file" : "memory"}});
  }
  return j;
}

std::shared_ptr<train::SoftLabelBank> soft_label_bank(models::Model& teacher, const torch::Tensor& x,
                                                      const data::Augmenter& augmenter, int64_t views,
                                                      int64_t batch_size, const train::BankStorage& storage,
                                                      int64_t shard, int64_t shards) {
  torch::NoGradGuard no_grad;
  teacher.set_training(false);
  std::shared_ptr<train::SoftLabelBank> bank;
  // The rows this shard holds, in order; a view is keyed by the row's place in all of `x`.
  torch::Tensor owned = train::shard_rows(x.size(0), shard, shards);
  int64_t rows = owned.size(0);
  const torch::Device device = models::device_of(teacher);
  Progress progress("teacher bank", views * rows, "rows");
  for (int64_t v = 0; v < views; ++v) {
    for (int64_t start = 0; start < rows; start += batch_size) {
      int64_t end = std::min(rows, start + batch_size);
      auto global = owned.slice(0, start, end);
      auto out = teacher.forward(augmenter.view(x.index_select(0, global), global, v).to(device)).to(torch::kCPU, torch::kFloat);
      if (!bank) bank = std::make_shared<train::SoftLabelBank>(rows, views, out.numel() / out.size(0), storage);
      bank->store(torch::arange(start, end, torch::kLong), v, out);
      progress.update(v * rows + end);
    }
  }
  progress.clear();
  return bank;
}

train::TrainData distill_train_data(const data::DataFold& fold, const TeacherCache& cache,
                                    const train::TrainOptions& options, int64_t views, Teaching& teaching,
                                    const train::BankStorage& storage,
                                    std::shared_ptr<const train::SoftLabelBank> shared,
                                    const std::vector<std::string>& teacher_taps) {
  TrainData data{fold.train.x, fold.train.y, fold.labeled, cache.train};
  data.categorical = fold.categorical;
  if (fold.transfer_x.defined()) {
    auto rows = fold.transfer_x.size(0);
    data.x = torch::cat({fold.train.x, fold.transfer_x});
    data.y = torch::cat({fold.train.y, torch::zeros({rows}, fold.train.y.options()).expand(
                                           fold.train.y.dim() == 1 ? std::vector<int64_t>{rows}
                                                                   : std::vector<int64_t>{rows, fold.train.y.size(1)})});
    data.has_label = torch::cat({fold.labeled, torch::zeros({rows}, torch::kBool)});
    data.teacher = cache.train_shards > 1 ? cache.train : torch::cat({cache.train, cache.transfer});
  }
  const auto& augment = options.augment();
  teaching = Teaching();
  models::DeviceScope teacher_on_device(cache.model.get(), options.device());  // its bank and taps
  if (views < 0 || augment.mixes() || (augment.per_row() && views == 0)) {
    // Mixtures (and views: online) are new every step, and feature terms read the teacher's taps:
    // the teacher runs live on each batch.
    teaching.mode = "online";
    data.teacher = torch::Tensor();
  } else if (augment.per_row()) {
    auto start = Clock::now();
    data.teacher = torch::Tensor();
    if (shared) {
      KD_CHECK(shared->rows() == data.x.size(0) && shared->views() == views, "a shared bank of {} rows and {} views",
               shared->rows(), shared->views());
      data.bank = shared;
    } else {
      auto augmenter = train::augmenter_for(options, data);
      std::vector<int64_t> shape(data.x.sizes().begin() + 1, data.x.sizes().end());
      // In a data-parallel group each rank holds the views of its own rows only.
      data.bank = soft_label_bank(*cache.model, data.x, augmenter, views, inference_batch_size(*cache.model, shape),
                                  storage, cache.train_shard, cache.train_shards);
      data.bank_shards = cache.train_shards;
      teaching.seconds = seconds_since(start);
    }
    const auto& bank = *data.bank;
    teaching.mode = "bank";
    teaching.views = views;
    teaching.bytes = bank.bytes();
    teaching.top_k = bank.top_k();
    teaching.mapped = bank.mapped();
    teaching.max_error = bank.max_error();
    teaching.rest_mass = bank.mean_rest_mass();
    if (!shared) {
      spdlog::info("teacher bank: {} views of {} rows, {:.1f} MB float16{}{}, {:.1f}s", views, data.x.size(0),
                   static_cast<double>(bank.bytes()) / 1e6,
                   bank.top_k() > 0 ? fmt::format(" (top {} of {} logits)", bank.top_k(), bank.outputs()) : "",
                   bank.mapped() ? " in a mapped file" : "", teaching.seconds);
    }
  }
  // Cached outputs of this rank's rows only; a bank (or a live teacher) covers every row.
  data.teacher_shards = data.teacher.defined() ? cache.train_shards : 1;
  if (data.teacher.defined()) teaching.bytes = static_cast<int64_t>(data.teacher.nbytes());
  if (data.teacher.defined() && !teacher_taps.empty()) {
    // The rows as they are: one teacher pass for the features the feature terms read.
    auto start = Clock::now();
    std::vector<int64_t> shape(data.x.sizes().begin() + 1, data.x.sizes().end());
    torch::Tensor x = data.teacher_shards > 1
                          ? data.x.index_select(0, train::shard_rows(data.x.size(0), cache.train_shard, data.teacher_shards))
                          : data.x;
    data.teacher_taps = train::predict_taps(*cache.model, x, teacher_taps, inference_batch_size(*cache.model, shape),
                                            storage, &teaching.taps_mapped);
    data.teacher_tap_names = teacher_taps;
    for (const auto& tap : data.teacher_taps) teaching.taps_bytes += static_cast<int64_t>(tap.nbytes());
    teaching.taps_seconds = seconds_since(start);
    spdlog::info("teacher taps: {} of {} rows, {:.1f} MB float16{}, {:.1f}s", join(teacher_taps, ", "), x.size(0),
                 static_cast<double>(teaching.taps_bytes) / 1e6, teaching.taps_mapped ? " in mapped files" : "",
                 teaching.taps_seconds);
  }
  return data;
}

}  // namespace kd::teacher
