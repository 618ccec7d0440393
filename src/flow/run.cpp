#include "kd/flow/run.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <optional>
#include <sstream>

#include "kd/io/model_file.h"
#include "kd/export/exporters.h"
#include "kd/losses/distiller.h"
#include "kd/losses/registry.h"
#include "kd/models/ensemble.h"
#include "kd/models/init.h"
#include "kd/models/torchscript_model.h"
#include "kd/report/analysis.h"
#include "kd/report/html.h"
#include "kd/report/metrics.h"
#include "kd/report/significance.h"
#include "kd/report/tensorboard.h"
#include "kd/teacher/teacher_cache.h"
#include "kd/train/evaluate.h"
#include "kd/util/error.h"
#include "kd/util/shape.h"
#include "kd/util/fs.h"
#include "kd/util/progress.h"
#include "kd/util/strings.h"

namespace kd::flow {

using namespace train;  // the trainer and evaluator this flow drives
using teacher::TeacherCache;

namespace fs = std::filesystem;

namespace {

// One trained (or loaded) model and what was measured of it.
struct Trained {
  models::ModelPtr model;
  io::ModelInfo info;
  std::optional<TrainResult> train;
  report::Metrics test;
  torch::Tensor test_outputs;  // on the test rows, in the targets' units (regression)
  nlohmann::json size;  // params, macs, bytes, latency_ms, file
};

std::string model_extension(models::Model& model) { return model.kind() == "torchscript" ? ".pt" : ".kdm"; }

// What the checkpoints were written for; a resumed run must match it. Rank 0 alone checks the folder
// for an earlier run's outputs: it writes recipe.yaml as soon as it has checked.
void check_resume(const RunSpec& spec, const RunOptions& options) {
  if (!options.group() || options.group()->is_root()) check_out_folder(options.out(), options.resume(), options.force());
  fs::path recorded = fs::path(options.out()) / "recipe.yaml";
  if (!options.resume()) return;
  if (!fs::exists(recorded)) {  // killed before it wrote anything (recipe.yaml comes first): start afresh
    spdlog::warn("{}: nothing to resume (no recipe.yaml from an earlier run); starting from the beginning", options.out());
    return;
  }
  std::string before = read_file(recorded);
  if (before == spec.recipe_text) return;
  auto a = split(before, '\n');
  auto b = split(spec.recipe_text, '\n');
  size_t line = 0;
  while (line < a.size() && line < b.size() && a[line] == b[line]) ++line;
  fail("--resume: the recipe differs from the one {} was run with (recipe.yaml line {}: {} -> {}); resume with the "
       "same recipe and --set values, or use a new --out",
       options.out(), line + 1, line < a.size() ? quote(a[line]) : "(end)", line < b.size() ? quote(b[line]) : "(end)");
}

}  // namespace

void check_out_folder(const std::string& out, bool resume, bool force) {
  if (resume || force) return;
  std::vector<std::string> found;
  for (const char* name : {"metrics.json", "search.json"}) {
    std::error_code ec;
    if (fs::exists(fs::path(out) / name, ec)) found.push_back(name);
  }
  if (found.empty()) return;
  fail("{}: holds the outputs of an earlier run ({}); --resume to finish it, --force to overwrite it (a saved teacher "
       "with the same teacher part is still reused), or a new --out",
       out, join(found, ", "));
}

namespace {

struct FoldRun {
  Trained teacher, baseline, student;
  double teacher_seconds = 0, cache_seconds = 0;
  teacher::Teaching teaching;
  models::InitReport init;       // student.init: teacher
  report::Metrics init_val;      // the student's validation metrics right after it
  nlohmann::json teacher_input;  // how a loaded teacher is fed (AdaptedTeacher::evidence)
  nlohmann::json teacher_combine;  // an ensemble combined by correctness: TeacherCache::combine
  std::vector<std::string> exported;
  std::vector<report::Metrics> member_tests;  // an ensemble teacher: each member's test metrics
  std::vector<std::string> member_files;
  report::TestOutputs outputs;
  torch::Tensor baseline_val, student_val;  // outputs on the validation rows (baseline: when trained)
};

// Did distillation help? The distilled student against its baseline on the validation rows of every
// fold, pooled, with a paired test: McNemar's on which rows each gets right (classification), a paired
// bootstrap of the RMSE difference (regression). Null without a baseline or validation rows.
nlohmann::json validation_verdict(Task task, const data::Dataset& dataset, const std::vector<FoldRun>& runs,
                                  uint64_t seed) {
  std::vector<torch::Tensor> students, baselines, labels;
  for (size_t f = 0; f < runs.size(); ++f) {
    if (!runs[f].baseline_val.defined() || dataset.folds[f].val.size() == 0) return nullptr;
    students.push_back(runs[f].student_val);
    baselines.push_back(runs[f].baseline_val);
    labels.push_back(dataset.folds[f].val.y);
  }
  torch::Tensor student = torch::cat(students), baseline = torch::cat(baselines), y = torch::cat(labels);
  nlohmann::json out = {{"rows", y.size(0)}};
  bool significant = false, better = false;
  if (task == Task::classification) {
    auto correct = [&y](const torch::Tensor& outputs) {
      torch::Tensor hit = outputs.argmax(1).eq(y.to(torch::kLong)).contiguous();
      return std::vector<bool>(hit.data_ptr<bool>(), hit.data_ptr<bool>() + hit.numel());
    };
    std::vector<bool> s = correct(student), b = correct(baseline);
    auto m = report::mcnemar(s, b);
    double s_accuracy = static_cast<double>(std::count(s.begin(), s.end(), true)) / static_cast<double>(s.size());
    double b_accuracy = static_cast<double>(std::count(b.begin(), b.end(), true)) / static_cast<double>(b.size());
    out.update({{"metric", "accuracy"}, {"student", s_accuracy}, {"baseline", b_accuracy},
                {"difference", s_accuracy - b_accuracy}, {"test", "mcnemar"}, {"only_student_right", m.only_a},
                {"only_baseline_right", m.only_b}, {"p_value", m.p_value}});
    significant = m.p_value < 0.05;
    better = s_accuracy > b_accuracy;
  } else {
    auto squared = [&y](const torch::Tensor& outputs) {
      torch::Tensor e = (outputs - y.view_as(outputs)).pow(2).sum(1).to(torch::kDouble).contiguous();
      return std::vector<double>(e.data_ptr<double>(), e.data_ptr<double>() + e.numel());
    };
    auto ci = report::paired_bootstrap(squared(student), squared(baseline), report::Statistic::root_mean,
                                       report::BootstrapOptions().seed(seed));
    out.update({{"metric", "rmse (normalised targets)"}, {"difference", ci.difference}, {"test", "paired bootstrap"},
                {"low", ci.low}, {"high", ci.high}, {"confidence", ci.confidence}});
    significant = ci.low > 0 || ci.high < 0;
    better = ci.difference < 0;
  }
  out["verdict"] = !significant ? "no significant difference" : better ? "helped" : "hurt";
  return out;
}

// One line for the summary: what the validation rows say of distillation.
std::string verdict_line(const nlohmann::json& v) { return v.is_null() ? "" : report::verdict_words(v).sentence() + "\n"; }

}  // namespace

namespace {

// The objectives the student trains on, each with its recipe field: every stage's, or distill.losses.
std::vector<std::pair<std::string, const std::vector<losses::LossTermOptions>*>> objectives(const DistillSpec& distill) {
  if (distill.stages.empty()) return {{"distill.losses", &distill.losses}};
  std::vector<std::pair<std::string, const std::vector<losses::LossTermOptions>*>> out;
  for (size_t k = 0; k < distill.stages.size(); ++k) {
    out.emplace_back(fmt::format("distill.stages[{}].losses", k), &distill.stages[k].losses);
  }
  return out;
}

}  // namespace

int64_t bank_views(const DistillSpec& distill, int64_t epochs) {
  const auto& augment = distill.train.augment();
  std::vector<losses::LossTermOptions> terms;
  for (const auto& [field, list] : objectives(distill)) terms.insert(terms.end(), list->begin(), list->end());
  for (const auto& options : terms) {
    std::string tap = losses::make_loss_term(options)->teacher_tap();
    if (tap.empty() || tap == models::kOutputTap || !(augment.per_row() || augment.mixes())) continue;
    if (distill.views > 0) {
      fail("distill.views: a bank of {} views holds the teacher's outputs, not its tap {}; with augmentation, feature "
           "terms run the teacher on every batch (remove views)", distill.views, quote(tap));
    }
    return -1;
  }
  if (augment.mixes()) {
    if (distill.views > 0) fail("distill.views: a bank of {} views cannot hold mixup or cutmix mixtures; use views: online", distill.views);
    return 0;
  }
  // Epoch e trains on view e mod V: a bank of more views than epochs would hold views no epoch reads.
  // Staged runs count epochs per stage, so their banks keep the views asked for.
  if (distill.views > epochs && epochs > 0 && distill.stages.empty() && distill.train.steps() == 0) return epochs;
  if (distill.views >= 0) return distill.views;
  return std::clamp<int64_t>(epochs, 1, 8);
}

namespace {

// The feature terms' taps exist in the student and the teacher: the error names the loss entry before
// anything trains.
void check_feature_taps(const std::string& field, const std::vector<losses::LossTermOptions>& terms,
                        models::Model& student, models::Model& teacher) {
  for (size_t i = 0; i < terms.size(); ++i) {
    auto term = losses::make_loss_term(terms[i]);
    for (auto [side, tap, model] : {std::tuple{"student", term->student_tap(), &student},
                                    std::tuple{"teacher", term->teacher_tap(), &teacher}}) {
      if (tap.empty()) continue;
      try {
        models::check_taps(*model, {tap});
      } catch (const Error& e) {
        fail("{}[{}].{}: {}", field, i, side, e.what());
      }
    }
  }
}

FoldRun run_fold(const RunSpec& spec, const RunOptions& options, const data::Dataset& dataset, size_t fold_index) {
  const data::DataFold& fold = dataset.folds[fold_index];
  std::string dir = fold_dir(options.out(), fold_index, dataset.folds.size());
  std::string checkpoints = (fs::path(dir) / "checkpoints").string();
  const bool writes = !options.group() || options.group()->is_root();
  dist::Group* group = options.group().get();  // scoring is shared out over its ranks
  if (writes) fs::create_directories(checkpoints);
  FoldRun run;
  Task task = dataset.task;
  std::string tag = dataset.folds.size() == 1 ? "" : fmt::format(" (fold {}/{})", fold_index + 1, dataset.folds.size());

  auto make_validate = [&](const torch::Tensor& teacher_val) {
    return [&fold, task, teacher_val, group](models::Model& model) {
      return score_validation(model, task, fold, teacher_val, group);
    };
  };

  TeacherCache cache = teacher::prepare_teacher(
      spec.teacher,
      teacher::TeacherRun().seed(spec.seed).fingerprint(spec.teacher_fingerprint).resume(options.resume()).group(options.group())
          .device(options.device()),
      dataset, fold_index, dir);
  run.teacher.model = cache.model;
  run.teacher.info = cache.info;
  run.teacher.train = cache.training;
  run.teacher_seconds = cache.teacher_seconds;
  run.cache_seconds = cache.cache_seconds;
  run.teacher_input = cache.input;
  run.teacher_combine = cache.combine;
  const torch::Tensor& teacher_val = cache.val;
  const torch::Tensor& teacher_test = cache.test;
  run.teacher.test = score(task, fold, teacher_test, fold.test.y, {});
  run.teacher.test_outputs = in_target_units(task, fold, teacher_test);
  if (writes) run.teacher.size = size_of(*run.teacher.model, dataset.input_shape, cache.file, options.latency_repeats(), fold.test.x);
  if (auto* ensemble = dynamic_cast<models::EnsembleModel*>(run.teacher.model.get())) {  // every member's file
    int64_t bytes = 0;
    for (const auto& path : cache.member_files) bytes += io::model_bytes(path);
    run.teacher.size["bytes"] = bytes;
    run.teacher.size["file"] = fmt::format("{} files", cache.member_files.size());
    run.member_files = cache.member_files;
    for (const auto& member : ensemble->members()) {
      run.member_tests.push_back(score(task, fold, predict_shared(*member, fold.test.x, group), fold.test.y, {}));
    }
  }

  int64_t rows = fold.train.size() + (fold.transfer_x.defined() ? fold.transfer_x.size(0) : 0);
  TrainOptions student_train = train::sized_for_rows(spec.distill.train, rows);
  student_train.seed(spec.seed).group(options.group()).device(options.device());
  int64_t views = bank_views(spec.distill, student_train.epochs());
  if (views > 0 && views < spec.distill.views) {
    spdlog::warn("distill.views: {} views for {} epochs; the bank holds the {} views the epochs train on", spec.distill.views,
                 student_train.epochs(), views);
  }
  std::shared_ptr<const train::SoftLabelBank> earlier_bank;
  if (fold_index < options.banks().size() && options.banks()[fold_index] && options.banks()[fold_index]->views() == views &&
      options.banks()[fold_index]->rows() == rows) {
    earlier_bank = options.banks()[fold_index];
    spdlog::info("teacher bank{}: the search's bank of {} views", tag, views);
  }
  // One stage unless distill.stages lists several, each with its own objective and epochs.
  std::vector<StageSpec> stages = spec.distill.stages;
  if (stages.empty()) stages.push_back({spec.distill.losses, spec.distill.train});
  // Every stage's taps checked on one student, and the teacher's cached together in one teacher pass.
  auto tap_student = build_student(spec.student, dataset);
  std::vector<losses::LossTermOptions> all_terms;
  for (const auto& [field, list] : objectives(spec.distill)) {
    check_feature_taps(field, *list, *tap_student, *run.teacher.model);
    all_terms.insert(all_terms.end(), list->begin(), list->end());
  }
  std::vector<std::string> teacher_taps = losses::Distiller(all_terms, task).teacher_taps();
  TrainData distill_data = teacher::distill_train_data(fold, cache, student_train, views, run.teaching,
                                                       train::BankStorage(spec.distill.bank).spill_dir(dir), earlier_bank,
                                                       teacher_taps);
  bool live_teacher = !distill_data.teacher.defined() && !distill_data.bank;
  int64_t batches = (rows + student_train.batch_size() - 1) / student_train.batch_size();
  int64_t distill_steps = 0;
  for (auto& stage : stages) {
    stage.train = spec.distill.stages.empty() ? student_train
                                              : train::sized_for_rows(stage.train, rows).seed(spec.seed).group(options.group()).device(options.device());
    distill_steps += stage.train.steps() > 0 ? stage.train.steps() : stage.train.epochs() * batches;
  }

  if (!spec.distill.target.empty()) {
    auto target = Target::parse(spec.distill.target, "distill.target");
    student_train.target(target);
    auto teacher_val_metrics = score(task, fold, teacher_val, fold.val.y, {});
    student_train.teacher_target_value(metric_value(teacher_val_metrics, target.metric()));
  }
  auto student_spec_json =
      spec.student.model ? models::to_json(models::with_vocab(*spec.student.model, dataset.text.vocab, dataset.text.pad_id))
                         : nlohmann::json();

  // Baseline: the same student, optimiser, schedule and number of steps, labels only.
  if (spec.distill.baseline) {
    torch::manual_seed(spec.seed + 100);
    run.baseline.model = build_student(spec.student, dataset);
    check_outputs(*run.baseline.model, dataset, fold.train.x, "student");
    auto labeled_index = fold.labeled.nonzero().squeeze(1);
    TrainData data{fold.train.x.index_select(0, labeled_index), fold.train.y.index_select(0, labeled_index), {}, {}};
    data.categorical = fold.categorical;
    TrainOptions train = student_train;
    train.steps(distill_steps).target(std::nullopt)
        .checkpoint((fs::path(checkpoints) / "baseline.ckpt").string()).resume(options.resume());
    losses::Distiller supervised(spec.distill.baseline_losses.empty() ? supervised_losses(task)
                                                                     : spec.distill.baseline_losses, task);
    Trainer trainer(train, supervised, "baseline" + tag);
    run.baseline.train = trainer.fit(*run.baseline.model, data, make_validate(teacher_val));
    run.baseline.info = info_for(dataset, fold, student_spec_json);
    std::string file = (fs::path(dir) / ("baseline" + model_extension(*run.baseline.model))).string();
    if (writes) io::save_model(file, *run.baseline.model, run.baseline.info);
    auto baseline_test = predict_shared(*run.baseline.model, fold.test.x, group);
    run.baseline.test = score(task, fold, baseline_test, fold.test.y, teacher_test);
    run.baseline.test_outputs = in_target_units(task, fold, baseline_test);
    if (writes) run.baseline.size = size_of(*run.baseline.model, dataset.input_shape, file, options.latency_repeats(), fold.test.x);
    run.baseline_val = predict_shared(*run.baseline.model, fold.val.x, group);
  }

  // The distilled student, from the same initial weights as the baseline.
  torch::manual_seed(spec.seed + 100);
  run.student.model = build_student(spec.student, dataset);
  check_outputs(*run.student.model, dataset, fold.train.x, "student");
  if (spec.student.init == "teacher") {
    torch::Tensor sample = fold.train.x.index_select(0, teacher::labelled_sample(fold, kInitSampleRows));
    run.init = models::copy_from_teacher(*run.student.model, *run.teacher.model, spec.student.init_options, sample);
    for (const auto& line : run.init.lines) spdlog::info("student{} init: {}", tag, line);
    run.init_val = score_validation(*run.student.model, task, fold, teacher_val);
    std::string metric = task == Task::classification ? "accuracy" : "rmse";
    spdlog::info("student{}: {} tensors initialised from the teacher ({} units); before training: val {} {:.4g}", tag,
                 run.init.tensors, spec.student.init_options.units, metric, train::metric_value(run.init_val, metric));
  }
  // Each stage continues from the last one's final weights; the last keeps its best epoch.
  TrainResult trained;
  for (size_t k = 0; k < stages.size(); ++k) {
    bool last = k + 1 == stages.size();
    bool staged = stages.size() > 1;
    TrainOptions train = stages[k].train;
    if (last) train.target(student_train.target()).teacher_target_value(student_train.teacher_target_value());
    train.keep_best(last).resume(options.resume())
        .checkpoint((fs::path(checkpoints) / (staged ? fmt::format("student-stage-{}.ckpt", k + 1) : "student.ckpt")).string());
    losses::Distiller distiller(stages[k].losses, task);
    bool below_head = std::all_of(stages[k].losses.begin(), stages[k].losses.end(), [](const losses::LossTermOptions& o) {
      return o.words().count("student") && o.word("student") != "output";
    });
    if (staged && !last && below_head) {
      // A hint stage trains layers below the head: its validation scores are the untrained head's.
      spdlog::info("student stage {}/{}{}: {} only; validation scores show the head as it stands, and the last "
                   "stage's best epoch is the result", k + 1, stages.size(), tag, join(distiller.term_names(), " + "));
    }
    Trainer trainer(train, distiller, staged ? fmt::format("student stage {}/{}{}", k + 1, stages.size(), tag) : "student" + tag);
    TrainResult result = trainer.fit(*run.student.model, distill_data, make_validate(teacher_val),
                                     live_teacher ? run.teacher.model.get() : nullptr);
    int64_t offset = static_cast<int64_t>(trained.history.size());
    for (auto record : result.history) {
      record.epoch += offset;
      trained.history.push_back(record);
    }
    for (auto divergence : result.divergences) {
      divergence.epoch += offset;
      trained.divergences.push_back(divergence);
    }
    trained.steps += result.steps;
    trained.loss_params += result.loss_params;
    trained.best_epoch = result.best_epoch + offset;
    trained.best_value = result.best_value;
    trained.stop_reason = result.stop_reason;
    trained.target_reached = result.target_reached;
  }
  run.student.train = trained;
  auto student_test = predict_shared(*run.student.model, fold.test.x, group);
  run.student_val = predict_shared(*run.student.model, fold.val.x, group);
  if (!writes) return run;  // trained alike on every rank, scored together; rank 0 saves and exports
  run.student.info = info_for(dataset, fold, student_spec_json);
  std::string file = (fs::path(dir) / ("student" + model_extension(*run.student.model))).string();
  io::save_model(file, *run.student.model, run.student.info);
  run.student.test = score(task, fold, student_test, fold.test.y, teacher_test);
  run.student.test_outputs = in_target_units(task, fold, student_test);
  run.outputs.labels = in_target_units(task, fold, fold.test.y);
  for (const auto& [name, trained] : {std::pair<const char*, const Trained*>{"teacher", &run.teacher},
                                      {"baseline", &run.baseline}, {"student", &run.student}}) {
    if (trained->test_outputs.defined()) run.outputs.models[name] = trained->test_outputs;
  }
  run.student.size = size_of(*run.student.model, dataset.input_shape, file, options.latency_repeats(), fold.test.x);
  for (const auto& format : spec.exports) {
    // A TorchScript student file is TorchScript already (student.pt); zoo students go through the exporters.
    if (!spec.student.model) continue;
    std::string exported = (fs::path(dir) / exports::export_format(format).file_name).string();
    exports::export_model(*run.student.model, run.student.info, format, exported);
    run.exported.push_back(exported);
  }
  return run;
}

// Test metrics of one fold as they are; of several, each metric's mean and spread over the folds.
nlohmann::json test_json(const std::vector<const report::Metrics*>& per_fold) {
  if (per_fold.size() == 1) return *per_fold[0];
  nlohmann::json test;
  for (const auto& [key, value] : *per_fold[0]) {
    std::vector<double> values;
    for (const auto* t : per_fold) values.push_back(t->at(key));
    test[key] = report::fold_summary(values);
  }
  return test;
}

nlohmann::json model_json(const std::vector<const Trained*>& per_fold) {
  nlohmann::json m = per_fold[0]->size;
  std::vector<const report::Metrics*> tests;
  for (const auto* t : per_fold) tests.push_back(&t->test);
  m["test"] = test_json(tests);
  if (per_fold[0]->train) {
    nlohmann::json epochs;
    for (const auto* t : per_fold) {
      epochs.push_back({{"epochs_run", t->train->history.size()}, {"best_epoch", t->train->best_epoch},
                        {"stop_reason", t->train->stop_reason}, {"target_reached", t->train->target_reached},
                        {"steps", t->train->steps}, {"divergences", t->train->divergences}});
    }
    m["training"] = per_fold.size() == 1 ? epochs[0] : epochs;
  }
  return m;
}

double mean_metric(const nlohmann::json& test, const std::string& key) {
  const auto& v = test.at(key);
  return v.is_object() ? v.at("mean").get<double>() : v.get<double>();
}

std::string epochs_csv(const std::vector<FoldRun>& runs) {
  std::ostringstream out;
  out << "model,fold,epoch,train_loss,lr,seconds,val_metrics,terms\n";
  for (size_t f = 0; f < runs.size(); ++f) {
    for (const auto& [name, trained] : {std::pair<std::string, const Trained*>{"teacher", &runs[f].teacher},
                                        {"baseline", &runs[f].baseline}, {"student", &runs[f].student}}) {
      if (!trained->train) continue;
      for (const auto& r : trained->train->history) {
        std::vector<std::string> metrics, terms;
        for (const auto& [k, v] : r.val) metrics.push_back(fmt::format("{}={:.6g}", k, v));
        for (double t : r.terms) terms.push_back(fmt::format("{:.6g}", t));
        out << fmt::format("{},{},{},{:.6g},{:.6g},{:.3f},{},{}\n", name, f + 1, r.epoch, r.train_loss, r.lr,
                           r.seconds, join(metrics, ";"), join(terms, ";"));
      }
    }
  }
  return out.str();
}

// Scalars per epoch per model (one run per model and fold) for TensorBoard.
void write_tensorboard(const fs::path& dir, const std::vector<FoldRun>& runs) {
  std::vector<report::Scalar> scalars;
  for (size_t f = 0; f < runs.size(); ++f) {
    for (const auto& [name, trained] : {std::pair<std::string, const Trained*>{"teacher", &runs[f].teacher},
                                        {"baseline", &runs[f].baseline}, {"student", &runs[f].student}}) {
      if (!trained->train) continue;
      std::string run = runs.size() == 1 ? name : fmt::format("{}/fold-{}", name, f + 1);
      for (const auto& r : trained->train->history) {
        scalars.push_back({run, "train_loss", r.epoch, r.train_loss});
        scalars.push_back({run, "lr", r.epoch, r.lr});
        for (const auto& [k, v] : r.val) scalars.push_back({run, "val_" + k, r.epoch, v});
      }
    }
  }
  report::write_tensorboard_events(dir, scalars);
}

std::string summary_table(Task task, const nlohmann::json& models) {
  std::ostringstream out;
  bool classification = task == Task::classification;
  const auto& cell = report::metric_cell;
  if (classification) {
    out << fmt::format("{:<9} {:>10} {:>12} {:>16} {:>10} {:>9} {:>10}\n", "model", "params", "MACs", "test acc %",
                       "errors", "agree %", "ms/batch1");
  } else {
    out << fmt::format("{:<9} {:>10} {:>12} {:>18} {:>18} {:>9} {:>10}\n", "model", "params", "MACs", "test RMSE",
                       "test MAE", "R2", "ms/batch1");
  }
  for (const char* name : {"teacher", "baseline", "student"}) {
    if (!models.contains(name)) continue;
    const auto& m = models.at(name);
    const auto& t = m.at("test");
    std::string latency = fmt::format("{:.3f}", m.at("latency_ms").at("batch1").get<double>());
    if (classification) {
      std::string agree = t.contains("agreement_with_teacher") ? cell(t, "agreement_with_teacher", 100, 1) : "-";
      out << fmt::format("{:<9} {:>10} {:>12} {:>16} {:>10} {:>9} {:>10}\n", name, m.at("params").get<int64_t>(),
                         m.at("macs").get<int64_t>(), cell(t, "accuracy", 100, 2), cell(t, "errors", 1, 0), agree,
                         latency);
    } else {
      out << fmt::format("{:<9} {:>10} {:>12} {:>18} {:>18} {:>9} {:>10}\n", name, m.at("params").get<int64_t>(),
                         m.at("macs").get<int64_t>(), cell(t, "rmse", 1, 3), cell(t, "mae", 1, 3), cell(t, "r2", 1, 3),
                         latency);
    }
  }
  if (models.contains("baseline")) {
    std::string key = classification ? "accuracy" : "rmse";
    double teacher = mean_metric(models["teacher"]["test"], key);
    double baseline = mean_metric(models["baseline"]["test"], key);
    double student = mean_metric(models["student"]["test"], key);
    bool teacher_better = classification ? teacher > baseline : teacher < baseline;
    if (teacher_better) {
      out << fmt::format("distillation recovered {:.0f}% of the teacher-baseline gap in test {}\n",
                         100.0 * (student - baseline) / (teacher - baseline), classification ? "accuracy" : "RMSE");
    } else {
      out << fmt::format("the baseline matched or beat the teacher in test {}: there was no gap to recover\n",
                         classification ? "accuracy" : "RMSE");
    }
  }
  return out.str();
}

}  // namespace

std::string fold_dir(const std::string& out, size_t fold, size_t folds) {
  return folds == 1 ? out : (fs::path(out) / ("fold-" + std::to_string(fold + 1))).string();
}

models::ModelPtr build_student(const StudentSpec& spec, const data::Dataset& dataset) {
  if (spec.model) {
    return models::build_zoo_model(models::with_vocab(*spec.model, dataset.text.vocab, dataset.text.pad_id),
                                   dataset.input_shape, dataset.outputs, "student.model");
  }
  if (spec.path.empty()) fail("student: give model: (a zoo spec) or path: (a TorchScript student)");
  auto student = models::load_torchscript(spec.path);
  if (student->parameters().empty()) fail("{}: the TorchScript student has no parameters to train", spec.path);
  return student;
}

namespace {

// Bad recipe settings fail here, before any data is read or any model trained.
void check_spec(const RunSpec& spec, const RunOptions& options) {
  check_resume(spec, options);
  data::check_memory(spec.data);
  if (spec.student.init != "random" && spec.student.init != "teacher") {
    fail("student.init: {} is not random or teacher", quote(spec.student.init));
  }
  for (size_t i = 0; i < spec.exports.size(); ++i) {
    const auto& format = exports::export_format(spec.exports[i], fmt::format("export[{}]", i));
    if (!spec.student.model && format.name != "torchscript") {
      fail("export[{}]: {} exports a zoo student (student.model); this student is the file {}", i, format.name,
           spec.student.path);
    }
    if (spec.student.model) exports::check_exportable(models::to_json(*spec.student.model), format.name, fmt::format("export[{}]", i));
  }
  if (spec.distill.losses.empty()) fail("distill.losses: the list is empty; e.g. [{kind: kl, temperature: 4}, {kind: ce}]");
  losses::Distiller check_losses(spec.distill.losses, spec.task);
  for (size_t k = 0; k < spec.distill.stages.size(); ++k) {
    try {
      losses::Distiller check_stage(spec.distill.stages[k].losses, spec.task);
    } catch (const Error& e) {
      fail("distill.stages[{}].{}", k, e.what());
    }
  }
  if (!spec.distill.target.empty()) Target::parse(spec.distill.target, "distill.target");
  validate(spec.distill.train, "distill");
  bank_views(spec.distill, 0);  // its refusals; the views are resolved once the epochs are known
  const auto& augment = spec.distill.train.augment();
  if (spec.distill.views >= 0 && !augment.per_row() && !augment.mixes()) {
    spdlog::warn("distill.views: {} has no effect without distill.augment: every view of a row is the row as it is, "
                 "so the teacher's outputs on the rows are computed once", spec.distill.views == 0 ? "online" : std::to_string(spec.distill.views));
  }
  if (spec.teacher.model) validate(spec.teacher.train, "teacher.train");
}

// metrics.json "distill": the objective as run, the teaching mode and the validation verdict.
nlohmann::json distill_json(const RunSpec& spec, const data::Dataset& dataset, const std::vector<FoldRun>& runs) {
  nlohmann::json distill;
  nlohmann::json terms = nlohmann::json::array();
  double soft_weight = 0, total_weight = 0;
  std::optional<double> temperature;
  for (const auto& t : spec.distill.losses) {
    bool feature = !losses::make_loss_term(t)->student_tap().empty();
    nlohmann::json term = {{"kind", t.kind()}, {"weight", t.weight()}};
    if (!feature) term["temperature"] = t.temperature();
    for (const auto& option : losses::loss_options(t.kind())) {
      if (option.is_word()) term[option.key] = t.word(option.key);
      else term[option.key] = t.number(option.key);
    }
    terms.push_back(term);
    if (feature) continue;  // alpha and temperature describe the terms on outputs
    total_weight += t.weight();
    if (t.kind() != "ce" && !(t.target() == "labels")) {
      soft_weight += t.weight();
      if (!temperature) temperature = t.temperature();
    }
  }
  distill["loss"] = terms;
  distill["temperature"] = temperature.value_or(1.0);
  distill["alpha"] = total_weight > 0 ? soft_weight / total_weight : 0.0;
  distill["epochs_run"] = runs[0].student.train->history.size();
  // Trained with the student by its feature terms (a hint's projection), not part of it.
  distill["loss_parameters"] = runs[0].student.train->loss_params;
  distill["target"] = spec.distill.target;
  distill["target_reached"] = runs[0].student.train->target_reached;
  if (!spec.distill.stages.empty()) {
    nlohmann::json stages = nlohmann::json::array();
    for (const auto& stage : spec.distill.stages) {
      std::vector<std::string> kinds;
      for (const auto& term : stage.losses) kinds.push_back(term.kind());
      stages.push_back({{"epochs", stage.train.epochs()}, {"losses", kinds}});
    }
    distill["stages"] = stages;
  }
  distill["student_init"] = spec.student.init;
  if (spec.student.init == "teacher") {
    nlohmann::json layer_map = spec.student.init_options.layer_map;
    distill["student_init_from_teacher"] = {{"units", spec.student.init_options.units},
                                            {"every", spec.student.init_options.every},
                                            {"layer_map", layer_map},
                                            {"tensors", runs[0].init.tensors},
                                            {"layers", runs[0].init.lines},
                                            {"val", runs[0].init_val}};
  }
  distill["augment"] = spec.distill.train.augment().describe();
  distill["teaching"] = runs[0].teaching.to_json();
  distill["validation"] = validation_verdict(spec.task, dataset, runs, spec.seed);
  return distill;
}

nlohmann::json timing_json(double data_seconds, const std::vector<FoldRun>& runs) {
  nlohmann::json timing;
  timing["data_seconds"] = data_seconds;
  timing["teacher_seconds"] = runs[0].teacher_seconds;
  timing["teacher_cache_seconds"] = runs[0].cache_seconds;
  timing["teacher_bank_seconds"] = runs[0].teaching.seconds;
  std::vector<double> epoch_seconds;
  for (const auto& r : runs[0].student.train->history) epoch_seconds.push_back(r.seconds);
  timing["distill_epoch_seconds"] = epoch_seconds;
  timing["threads"] = torch::get_num_threads();
  return timing;
}

nlohmann::json data_json(const data::Dataset& dataset) {
  const auto& fold = dataset.folds[0];
  nlohmann::json out = {{"source", dataset.source},
          {"input_shape", dataset.input_shape},
          {"outputs", dataset.outputs},
          {"class_names", dataset.class_names},
          {"folds", dataset.folds.size()},
          {"train", fold.train.size()},
          {"val", fold.val.size()},
          {"test", fold.test.size()},
          {"labeled", fold.labeled.sum().item<int64_t>()},
          {"transfer", fold.transfer_x.defined() ? fold.transfer_x.size(0) : 0}};
  if (dataset.text.vocab > 0) {
    out["text"] = {{"tokenizer", dataset.text.tokenizer}, {"vocab", dataset.text.vocab},
                   {"pad_id", dataset.text.pad_id}, {"max_length", dataset.text.max_length}};
  }
  return out;
}

// The whole of metrics.json but the analysis keys (docs/report.md lists them).
nlohmann::json metrics_json(const RunSpec& spec, const RunOptions& options, const data::Dataset& dataset,
                            const std::vector<FoldRun>& runs, double data_seconds) {
  nlohmann::json metrics;
  metrics["task"] = to_string(spec.task);
  auto collect = [&](Trained FoldRun::*member) {
    std::vector<const Trained*> per_fold;
    for (const auto& r : runs) per_fold.push_back(&(r.*member));
    return model_json(per_fold);
  };
  metrics["models"]["teacher"] = collect(&FoldRun::teacher);
  // An ensemble: each teacher file's own test metrics.
  for (size_t m = 0; m < runs[0].member_tests.size(); ++m) {
    std::vector<const report::Metrics*> tests;
    for (const auto& r : runs) tests.push_back(&r.member_tests[m]);
    metrics["models"]["teacher"]["members"].push_back(
        {{"file", runs[0].member_files[m]}, {"weight", spec.teacher.weights.empty() ? 1.0 : spec.teacher.weights[m]},
         {"test", test_json(tests)}});
  }
  if (!runs[0].member_tests.empty()) {
    metrics["models"]["teacher"]["combine"] = models::to_string(spec.teacher.combine);
    if (!runs[0].teacher_combine.is_null()) metrics["models"]["teacher"]["correctness"] = runs[0].teacher_combine;
  }
  if (spec.distill.baseline) metrics["models"]["baseline"] = collect(&FoldRun::baseline);
  metrics["models"]["student"] = collect(&FoldRun::student);
  metrics["distill"] = distill_json(spec, dataset, runs);
  if (!runs[0].teacher_input.is_null()) {
    metrics["teacher_input"] = runs[0].teacher_input;
    if (runs.size() > 1) {
      for (const auto& r : runs) metrics["teacher_input"]["folds"].push_back(r.teacher_input);
    }
  }
  metrics["timing"] = timing_json(data_seconds, runs);
  metrics["data"] = data_json(dataset);
  metrics["seed"] = spec.seed;
  nlohmann::json exported = nlohmann::json::array();
  nlohmann::json export_bytes = nlohmann::json::object();
  for (const auto& r : runs) {
    for (const auto& file : r.exported) {
      std::string name = fs::relative(file, options.out()).string();
      exported.push_back(name);
      export_bytes[name] = io::model_bytes(file);
    }
  }
  metrics["exports"] = exported;
  metrics["export_bytes"] = export_bytes;
  metrics["environment"] = report::environment_info();
  return metrics;
}

// Everything in the run folder but the models: test outputs, metrics.json (with the analysis),
// epochs.csv, TensorBoard files and report.html.
void write_outputs(const RunSpec& spec, const RunOptions& options, const std::vector<FoldRun>& runs,
                   nlohmann::json& metrics) {
  fs::path out(options.out());
  std::vector<report::TestOutputs> outputs;
  for (size_t f = 0; f < runs.size(); ++f) {
    report::write_test_outputs(report::test_outputs_dir(out, f, runs.size()), runs[f].outputs);
    outputs.push_back(runs[f].outputs);
  }
  report::add_analysis(metrics, outputs, report::AnalysisOptions().seed(spec.seed));
  for (const auto& [key, value] : options.extra_metrics().items()) metrics[key] = value;
  write_file_atomic(out / "metrics.json", metrics.dump(2) + "\n");
  write_file_atomic(out / "epochs.csv", epochs_csv(runs));
  write_tensorboard(out / "tensorboard", runs);
  report::write_report(out);
}

}  // namespace

RunResult run_distillation(const RunSpec& spec, const RunOptions& options) {
  check_spec(spec, options);
  const bool writes = !options.group() || options.group()->is_root();
  if (options.group()) options.group()->check_same("recipe", spec.recipe_text);
  if (writes) {
    fs::create_directories(options.out());
    write_file_atomic(fs::path(options.out()) / "recipe.yaml", spec.recipe_text);
  }

  auto data_start = Clock::now();
  data::Dataset dataset = data::load_dataset(spec.data);
  double data_seconds = seconds_since(data_start);
  spdlog::info("{}", trim(dataset.summary()));
  auto check_augment = [&](const data::AugmentOptions& augment, const std::string& field) {
    // Noise, feature dropout or a mixture of token ids makes numbers that are no token.
    if (dataset.text.vocab > 0 && augment.any()) {
      fail("{}: {}: the rows are texts' token ids, which augmentation would turn into ids of other tokens or none; "
           "augmentation is for images and numeric rows", field, augment.describe());
    }
    const auto& categorical = dataset.folds.front().categorical;
    if ((augment.noise() > 0 || augment.feature_dropout() > 0) && !categorical.empty() &&
        std::all_of(categorical.begin(), categorical.end(), [](bool c) { return c; })) {
      fail("{}: {}: every feature of this table is a category's; noise and feature dropout change numeric features only",
           field, augment.describe());
    }
    data::validate(augment, dataset.input_shape, field);
  };
  check_augment(spec.distill.train.augment(), "distill.augment");
  if (spec.teacher.model) check_augment(spec.teacher.train.augment(), "teacher.train.augment");
  train::check_storage(spec.distill.bank, dataset.outputs);  // before any teacher trains

  std::vector<FoldRun> runs;
  for (size_t f = 0; f < dataset.folds.size(); ++f) runs.push_back(run_fold(spec, options, dataset, f));

  RunResult result;
  if (!writes) return result;
  result.metrics = metrics_json(spec, options, dataset, runs, data_seconds);
  const nlohmann::json& verdict = result.metrics["distill"]["validation"];
  if (verdict.is_object() && verdict["verdict"] == "hurt") spdlog::warn("{}", trim(verdict_line(verdict)));
  write_outputs(spec, options, runs, result.metrics);
  result.table = summary_table(spec.task, result.metrics["models"]) + verdict_line(result.metrics["distill"]["validation"]);
  return result;
}

}  // namespace kd::flow
