#include "kd/search/auto.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "kd/losses/distiller.h"
#include "kd/models/init.h"
#include "kd/search/asha.h"
#include "kd/search/tpe.h"
#include "kd/report/metrics.h"
#include "kd/train/evaluate.h"
#include "kd/train/target.h"
#include "kd/teacher/teacher_cache.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/process.h"
#include "kd/util/progress.h"
#include "kd/util/strings.h"

namespace kd::search {

namespace fs = std::filesystem;

namespace {


constexpr double kInfinity = std::numeric_limits<double>::infinity();

// One trial as trials.json keeps it (the same keys, in the same units, as trials.csv).
struct TrialRecord {
  int64_t id = 0;
  std::vector<double> unit;
  Config config;
  std::vector<std::string> overrides;
  std::string status;  // running (in the ledger) | complete | pruned | budget | infeasible | skipped | failed
  std::string reason;  // why infeasible, skipped or failed
  int64_t epochs = 0;  // epochs trained (on the first fold)
  std::map<int64_t, double> rungs;  // rung epoch -> validation value (first fold)
  double value = std::nan("");      // validation value of the selection metric (K folds: the mean)
  double value_std = 0.0;
  int64_t params = 0, macs = 0;
  double latency_ms = 0.0;
  double seconds = 0.0;
  bool meets_target = false;
  int64_t worker = 0;  // the process that ran it (0: the lead)
};

nlohmann::json to_json(const TrialRecord& t) {
  nlohmann::json rungs = nlohmann::json::object();
  for (const auto& [epoch, value] : t.rungs) rungs[std::to_string(epoch)] = value;
  return {{"trial", t.id}, {"status", t.status}, {"reason", t.reason}, {"epochs", t.epochs},
          {"value", std::isfinite(t.value) ? nlohmann::json(t.value) : nlohmann::json()}, {"value_std", t.value_std},
          {"meets_target", t.meets_target}, {"params", t.params}, {"macs", t.macs}, {"latency_ms", t.latency_ms},
          {"seconds", t.seconds}, {"worker", t.worker}, {"config", t.config}, {"overrides", t.overrides}, {"unit", t.unit}, {"rungs", rungs}};
}

TrialRecord trial_from_json(const nlohmann::json& j) {
  TrialRecord t;
  t.id = j.at("trial").get<int64_t>();
  t.status = j.at("status").get<std::string>();
  t.reason = j.at("reason").get<std::string>();
  t.epochs = j.at("epochs").get<int64_t>();
  t.value = j.at("value").is_null() ? std::nan("") : j.at("value").get<double>();
  t.value_std = j.at("value_std").get<double>();
  t.meets_target = j.at("meets_target").get<bool>();
  t.params = j.at("params").get<int64_t>();
  t.macs = j.at("macs").get<int64_t>();
  t.latency_ms = j.at("latency_ms").get<double>();
  t.seconds = j.at("seconds").get<double>();
  t.worker = j.value("worker", int64_t{0});
  t.config = j.at("config");
  t.overrides = j.at("overrides").get<std::vector<std::string>>();
  t.unit = j.at("unit").get<std::vector<double>>();
  for (const auto& [epoch, value] : j.at("rungs").items()) t.rungs[std::stoll(epoch)] = value.get<double>();
  return t;
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string trials_csv(const std::vector<TrialRecord>& trials, const std::string& metric) {
  std::ostringstream out;
  out << "trial,status,epochs,val_" << metric << ",val_" << metric
      << "_std,meets_target,params,macs,latency_ms,seconds,config,overrides,reason\n";
  for (const auto& t : trials) {
    std::vector<std::string> sets;
    for (const auto& s : t.overrides) sets.push_back("--set '" + s + "'");
    out << fmt::format("{},{},{},{},{:.4g},{},{},{},{:.4f},{:.2f},{},{},{}\n", t.id, t.status, t.epochs,
                       std::isfinite(t.value) ? fmt::format("{:.6g}", t.value) : "", t.value_std,
                       t.meets_target ? 1 : 0, t.params, t.macs, t.latency_ms, t.seconds,
                       csv_field(config_text(t.config)), csv_field(join(sets, " ")), csv_field(t.reason));
  }
  return out.str();
}

// trials.json: the search's state, shared by its worker processes. Every read-change-write holds
// an exclusive lock on DIR/trials.lock, so that workers see each other's trials and rung scores. In a
// data-parallel group (AutoOptions::group) the state lives in the group's store under a store lock
// instead, and rank 0 writes trials.json and trials.csv from it.
struct LedgerState {
  double search_seconds = 0.0;  // time spent by earlier invocations and the lead so far
  std::vector<TrialRecord> trials;
};

class Ledger {
 public:
  Ledger(const fs::path& out, std::string fingerprint, dist::Group* group)
      : file_(out / "trials.json"), csv_(out / "trials.csv"), lock_((out / "trials.lock").string()),
        fingerprint_(std::move(fingerprint)), group_(group && group->distributed() ? group : nullptr) {}

  bool exists() const { return fs::exists(file_); }

  // Runs `change` on the state under the lock and writes the state back.
  template <typename F>
  auto update(F&& change) {
    if (group_) {
      dist::StoreLock lock(*group_, kStoreLock);
      LedgerState state = parse(group_->store_get(kStoreKey));
      auto result = change(state);
      publish(state);
      return result;
    }
    FileLock lock(lock_);
    LedgerState state = read();
    auto result = change(state);
    write(state);
    return result;
  }

  // The state as it is now (under the lock, not written back).
  LedgerState snapshot() const {
    if (group_) return parse(group_->store_get(kStoreKey));
    FileLock lock(lock_);
    return read();
  }

  // Starts the ledger of a new search, whatever the folder held, or with `state` (a resumed search's):
  // in a group, rank 0 alone calls it, before any rank reads the ledger.
  void reset(const LedgerState& state = LedgerState()) {
    if (group_) {
      publish(state);
      return;
    }
    FileLock lock(lock_);
    write(state);
  }

  // trials.json as it is on disk (a search to resume).
  LedgerState saved() const {
    FileLock lock(lock_);
    return read();
  }

  void set_metric(std::string metric) { metric_ = std::move(metric); }

 private:
  static constexpr const char* kStoreKey = "kd/auto/ledger";
  static constexpr const char* kStoreLock = "kd/auto/ledger.lock";

  // The state into the group's store; rank 0 also writes the files.
  void publish(const LedgerState& state) const {
    group_->store_set(kStoreKey, text_of(state));
    if (group_->is_root()) write(state);
  }

  LedgerState read() const {
    if (!fs::exists(file_)) return LedgerState();
    return parse(read_file(file_));
  }

  LedgerState parse(const std::string& text) const {
    LedgerState state;
    try {
      auto saved = nlohmann::json::parse(text);
      if (saved.at("fingerprint").get<std::string>() != fingerprint_) {
        fail("--resume: {} was searched with another recipe, --set values or target; resume with the same ones, or "
             "use a new --out", file_.parent_path().string());
      }
      state.search_seconds = saved.at("search_seconds").get<double>();
      for (const auto& j : saved.at("trials")) state.trials.push_back(trial_from_json(j));
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not a trials file this version wrote ({})", file_.string(), e.what());
    }
    return state;
  }

  std::string text_of(const LedgerState& state) const {
    nlohmann::json saved;
    saved["fingerprint"] = fingerprint_;
    saved["search_seconds"] = state.search_seconds;
    saved["trials"] = nlohmann::json::array();
    for (const auto& t : state.trials) saved["trials"].push_back(to_json(t));
    return saved.dump(1) + "\n";
  }

  void write(const LedgerState& state) const {
    write_file_atomic(file_, text_of(state));
    write_file_atomic(csv_, trials_csv(state.trials, metric_));
  }

  fs::path file_, csv_;
  std::string lock_;
  std::string fingerprint_;
  dist::Group* group_ = nullptr;
  std::string metric_ = "value";
};

// Quiets the per-epoch lines of the trials' trainers (one line per trial is printed instead).
class QuietLog {
 public:
  QuietLog() : level_(spdlog::get_level()) {
    if (level_ == spdlog::level::info) spdlog::set_level(spdlog::level::warn);
  }
  ~QuietLog() { spdlog::set_level(level_); }

 private:
  spdlog::level::level_enum level_;
};

// What every trial shares: the data, the teachers' cached outputs, the target and the pruner.
struct Search {
  Search(const SpecFactory& factory, const AutoOptions& auto_options)
      : make_spec(factory), options(auto_options), base(factory({})) {}

  const SpecFactory& make_spec;
  const AutoOptions& options;
  flow::RunSpec base;
  SearchSpace space;
  data::Dataset dataset;
  std::vector<teacher::TeacherCache> caches;
  train::Target target = train::Target::parse("accuracy >= 0", "target");
  std::string metric;
  bool higher = true;
  double teacher_value = 0.0;
  int64_t epochs = 0;
  std::vector<std::string> epoch_overrides;  // what makes a trial train `epochs` epochs
  std::vector<int64_t> rungs;
  double smallest_size = 0.0;  // of the smallest student in the space (0: unknown, e.g. for latency)
  bool size_searched = true;   // false when every trial trains the same student: then the best score wins
  Clock::time_point start = Clock::now();
  Clock::time_point deadline;
  Ledger* ledger = nullptr;
  bool lead = true;             // the process that started the search, or rank 0 (workers, other ranks: false)
  int64_t worker = 0;           // this process's number among the search's (--worker K, or its rank)
  dist::Group* group = nullptr;  // a data-parallel group whose ranks run trials side by side, or null
  double spent_before = 0.0;    // search seconds of the run this one resumes
  std::string target_text;      // as given, or the default for the task
  double threshold = 0.0;       // the target's value on validation rows, from the teacher's
  double cache_seconds = 0.0;   // the teachers' cached outputs, all folds
  // With per-row augmentation: each fold's soft-label bank, made by the first trial that needs it
  // and shared by every later one (trials differ in students and objectives, not in their views).
  std::vector<std::shared_ptr<const train::SoftLabelBank>> banks;
  teacher::Teaching teaching;   // how the trials are taught (the first fold's; seconds: every fold's bank)
  double bank_seconds = 0.0;
  train::TrainOptions sized;    // the recipe's distill training, sized to the rows
  int64_t batches = 0;          // a training epoch's batches

  double quality(double value) const { return higher ? value : -value; }
  // The run spec of the configuration at these unit coordinates (no trial epochs).
  flow::RunSpec spec_at(const std::vector<double>& unit) const { return make_spec(overrides(space, decode(space, unit), base)); }
  double size_of(const TrialRecord& t) const {
    const auto& axis = options.search().front();
    return axis == "macs" ? static_cast<double>(t.macs) : axis == "latency_ms" ? t.latency_ms : static_cast<double>(t.params);
  }

  // Lower is better: any value that meets the target beats every one that does not; among those
  // that do, the smaller student wins; among the others, the smaller shortfall.
  double loss(const TrialRecord& t) const {
    if (!std::isfinite(t.value)) return kInfinity;
    if (!size_searched) return -quality(t.value);
    if (target.reached(t.value, teacher_value)) return std::log10(std::max(1.0, size_of(t)));
    return 1e3 + std::abs(target.threshold(teacher_value) - t.value);
  }

  report::Metrics validate(models::Model& model, size_t fold) const {
    return train::score_validation(model, dataset.task, dataset.folds[fold], caches[fold].val);
  }
};

models::ModelPtr new_student(const Search& search, const flow::RunSpec& spec, size_t fold) {
  torch::manual_seed(spec.seed + 100);  // the initial weights `kdistill run` gives the same recipe
  auto model = flow::build_student(spec.student, search.dataset);
  if (spec.student.init == "teacher") {
    const auto& data = search.dataset.folds[fold];
    torch::Tensor sample = data.train.x.index_select(0, teacher::labelled_sample(data, flow::kInitSampleRows));
    models::copy_from_teacher(*model, *search.caches[fold].model, spec.student.init_options, sample);
  }
  return model;
}

// A trial's rows on fold `fold` and what teaches them: the cached outputs, or with per-row
// augmentation the fold's shared bank (made here by the first trial that asks, with the views
// `kdistill run` would use for the trials' epochs), or nothing (mixtures: the live teacher).
train::TrainData trial_data(Search& search, const flow::RunSpec& spec, size_t fold, const train::TrainOptions& train) {
  if (search.banks.empty()) search.banks.resize(search.dataset.folds.size());
  auto& shared = search.banks[fold];
  teacher::Teaching teaching;
  auto storage = train::BankStorage(spec.distill.bank)
                     .spill_dir(flow::fold_dir(search.options.out(), fold, search.dataset.folds.size()));
  auto data = teacher::distill_train_data(search.dataset.folds[fold], search.caches[fold], train,
                                          flow::bank_views(spec.distill, search.epochs), teaching, storage, shared);
  if (data.bank && !shared) {
    shared = data.bank;
    search.cache_seconds += teaching.seconds;  // in the final estimate: its run makes one when it needs other views
    search.bank_seconds += teaching.seconds;
  }
  if (fold == 0) {
    search.teaching = teaching;
    search.teaching.seconds = search.bank_seconds;
  }
  return data;
}

// Records the trial's score at a rung in the ledger and says whether it goes on: successive halving
// over every trial (of every worker) that reached the rung.
bool promoted(Search& search, const TrialRecord& trial, int64_t epoch, double value) {
  return search.ledger->update([&](LedgerState& state) {
    Asha asha(search.rungs, search.options.search().eta());
    for (const auto& other : state.trials) {
      if (other.id == trial.id) continue;
      for (const auto& [e, v] : other.rungs) asha.report(e, other.id, {search.quality(v), search.size_of(other)});
    }
    for (auto& mine : state.trials) {
      if (mine.id != trial.id) continue;
      mine = trial;
      mine.status = "running";
      mine.rungs[epoch] = value;
    }
    return asha.report(epoch, trial.id, {search.quality(value), search.size_of(trial)});
  });
}

TrialRecord run_trial(Search& search, TrialRecord t) {
  int64_t id = t.id;
  t.status.clear();  // "running" in the ledger until it returns
  auto start = Clock::now();
  try {
    auto sets = t.overrides;
    sets.insert(sets.end(), search.epoch_overrides.begin(), search.epoch_overrides.end());
    flow::RunSpec spec = search.make_spec(sets);
    {
      // Measured on a model of its own: timing draws random inputs from the generator training uses.
      auto probe = new_student(search, spec, 0);
      auto summary = probe->summary(search.dataset.input_shape);
      t.params = summary.params;
      t.macs = summary.macs;
      t.latency_ms = train::size_of(*probe, search.dataset.input_shape, "", search.options.latency_repeats(),
                                   search.dataset.folds[0].test.x, 0.0)  // a trial's: `repeats` passes alone
                         .at("latency_ms").at("batch1").get<double>();
    }
    if (search.options.max_params() > 0 && t.params > search.options.max_params()) {
      t.status = "infeasible";
      t.reason = fmt::format("{} params > --max-params {}", t.params, search.options.max_params());
    } else if (search.options.max_latency_ms() > 0 && t.latency_ms > search.options.max_latency_ms()) {
      t.status = "infeasible";
      t.reason = fmt::format("{:.4f} ms > --max-latency-ms {}", t.latency_ms, search.options.max_latency_ms());
    }
    // The search wants the smallest student that meets the target: once one does, larger ones are not trained.
    const TrialRecord* smallest = nullptr;
    auto state = search.ledger->snapshot();
    for (const auto& o : state.trials) {
      if (o.meets_target && (!smallest || search.size_of(o) < search.size_of(*smallest))) smallest = &o;
    }
    // Measured latency varies by several percent from one measurement to the next: skip only clearly slower ones.
    double margin = search.options.search().front() == "latency_ms" ? 1.1 : 1.0;
    if (t.status.empty() && search.size_searched && smallest && search.size_of(t) >= margin * search.size_of(*smallest)) {
      t.status = "skipped";
      t.reason = fmt::format("{} {:.4g} >= {}{:.4g} of trial {}, which meets the target", search.options.search().front(),
                             search.size_of(t), margin > 1 ? "1.1 x " : "", search.size_of(*smallest), smallest->id);
    }
    if (!t.status.empty()) {
      t.seconds = seconds_since(start);
      return t;
    }
    losses::Distiller distiller(spec.distill.losses, search.dataset.task);
    std::vector<double> values;
    size_t folds = search.dataset.folds.size();
    for (size_t f = 0; f < folds; ++f) {
      if (f > 0 && Clock::now() >= search.deadline) {
        t.status = "budget";
        break;
      }
      auto model = new_student(search, spec, f);
      train::TrainOptions train = spec.distill.train;
      train.seed(spec.seed).checkpoint("").resume(false).target(std::nullopt).selection_metric(search.metric)
          .device(search.options.device());
      train::Trainer trainer(train, distiller, folds == 1 ? fmt::format("trial {}", id)
                                                           : fmt::format("trial {} (fold {}/{})", id, f + 1, folds));
      if (f == 0) {
        trainer.stop_when([&](const train::EpochRecord& record) -> std::string {
          t.epochs = record.epoch;
          double value = train::metric_value(record.val, search.metric);
          if (std::find(search.rungs.begin(), search.rungs.end(), record.epoch) != search.rungs.end()) {
            bool go_on = promoted(search, t, record.epoch, value);
            t.rungs[record.epoch] = value;
            if (!go_on) return "pruned";
          }
          if (Clock::now() >= search.deadline) return "budget";
          return "";
        });
      }
      auto data = trial_data(search, spec, f, train);
      QuietLog quiet;
      auto result = trainer.fit(*model, data, [&](models::Model& m) { return search.validate(m, f); },
                                search.caches[f].model.get());
      double value = train::metric_value(result.history[static_cast<size_t>(result.best_epoch - 1)].val, search.metric);
      values.push_back(value);
      if (f == 0) {
        t.epochs = static_cast<int64_t>(result.history.size());
        if (result.stop_reason == "pruned" || result.stop_reason == "budget") {
          t.status = result.stop_reason;
          break;
        }
      }
    }
    nlohmann::json over_folds = report::fold_summary(values);
    t.value = values.size() == folds ? over_folds["mean"].get<double>() : values[0];
    t.value_std = values.size() == folds ? over_folds["std"].get<double>() : 0.0;
    if (t.status.empty()) t.status = "complete";
    t.meets_target = t.status == "complete" && search.target.reached(t.value, search.teacher_value);
  } catch (const Error& e) {
    t.status = "failed";
    t.reason = e.what();
  } catch (const c10::Error& e) {
    t.status = "failed";
    t.reason = first_line(e);
  }
  t.seconds = seconds_since(start);
  return t;
}

std::vector<Observation> observations(const Search& search, const std::vector<TrialRecord>& trials) {
  std::vector<Observation> history;
  for (const auto& t : trials) {
    if (t.status == "running") continue;
    int64_t fidelity = t.status == "complete" ? search.epochs + 1 : t.epochs;
    history.push_back({t.unit, fidelity, search.loss(t)});
  }
  return history;
}

// The student the search ends with: the smallest complete trial that meets the target (ties: the
// better value); else the best complete trial (ties: the smaller); else the best trial that reached
// the most epochs.
const TrialRecord* choose(const Search& search, const std::vector<TrialRecord>& trials) {
  const TrialRecord* best = nullptr;
  auto better = [&](const TrialRecord& a, const TrialRecord& b) {
    bool a_done = a.status == "complete", b_done = b.status == "complete";
    if (a_done != b_done) return a_done;
    if (a.meets_target != b.meets_target) return a.meets_target;
    if (a.meets_target && search.size_of(a) != search.size_of(b)) return search.size_of(a) < search.size_of(b);
    if (!a_done && a.epochs != b.epochs) return a.epochs > b.epochs;
    if (search.quality(a.value) != search.quality(b.value)) return search.quality(a.value) > search.quality(b.value);
    return search.size_of(a) < search.size_of(b);
  };
  for (const auto& t : trials) {
    if (!std::isfinite(t.value)) continue;
    if (!best || better(t, *best)) best = &t;
  }
  return best;
}

// Unit coordinates of the smallest (or largest) student the space holds: width and depth at that end of
// their ranges, and the candidate student with the smallest (largest) `size`; the other dimensions in
// the middle.
std::vector<double> extreme_student(Search& search, bool largest,
                                    const std::function<double(const models::ModelSummary&)>& size) {
  std::vector<double> unit(search.space.dimensions.size(), 0.5);
  for (size_t d = 0; d < unit.size(); ++d) {
    const auto& name = search.space.dimensions[d].name;
    if (name == "width" || name == "depth") unit[d] = largest ? 1.0 : 0.0;
  }
  for (size_t d = 0; d < unit.size(); ++d) {
    if (search.space.dimensions[d].name != "student") continue;
    auto cells = static_cast<double>(search.space.dimensions[d].cells());
    double best_size = 0.0, best_u = 0.5;
    for (double c = 0; c < cells; ++c) {
      unit[d] = (c + 0.5) / cells;
      double candidate = size(new_student(search, search.spec_at(unit), 0)->summary(search.dataset.input_shape));
      if (c == 0 || (largest ? candidate > best_size : candidate < best_size)) {
        best_size = candidate;
        best_u = unit[d];
      }
    }
    unit[d] = best_u;
  }
  return unit;
}

// Size (on the front axis) of the smallest student the space holds. Once a trial this small meets the
// target there is nothing left to find. 0 for the latency axis, which is measured, not computed.
double smallest_student_size(Search& search) {
  const auto& axis = search.options.search().front();
  if (axis == "latency_ms") return 0.0;
  auto size = [&](const models::ModelSummary& summary) {
    return static_cast<double>(axis == "macs" ? summary.macs : summary.params);
  };
  auto unit = extreme_student(search, false, size);
  return size(new_student(search, search.spec_at(unit), 0)->summary(search.dataset.input_shape));
}

// Seconds per step of the largest student in the space on the first fold, from a short run.
double probe_seconds_per_step(Search& search, int64_t steps) {
  auto unit = extreme_student(search, true, [](const models::ModelSummary& s) { return static_cast<double>(s.params); });
  auto spec = search.spec_at(unit);
  auto model = new_student(search, spec, 0);
  losses::Distiller distiller(spec.distill.losses, search.dataset.task);
  train::TrainOptions train = spec.distill.train;
  train.steps(steps).checkpoint("").resume(false).seed(spec.seed).device(search.options.device());
  train::Trainer trainer(train, distiller, "timing");
  auto data = trial_data(search, spec, 0, train);
  QuietLog quiet;
  auto result = trainer.fit(*model, data, [&](models::Model& m) { return search.validate(m, 0); },
                            search.caches[0].model.get());
  return result.history[0].seconds / static_cast<double>(std::max<int64_t>(1, result.steps));
}

std::string front_table(const Search& search, const std::vector<TrialRecord>& trials, const std::vector<size_t>& front,
                        const TrialRecord* chosen) {
  std::ostringstream out;
  out << fmt::format("{:<7} {:>10} {:>12} {:>10} {:>14}  {}\n", "trial", "params", "MACs", "ms/batch1",
                     "val " + search.metric, "config");
  for (size_t i : front) {
    const auto& t = trials[i];
    out << fmt::format("{:<7} {:>10} {:>12} {:>10.3f} {:>14.3f}  {}{}\n", t.id, t.params, t.macs, t.latency_ms, t.value,
                       config_text(t.config), chosen && chosen->id == t.id ? "  <- chosen" : "");
  }
  return out.str();
}

// The other worker processes of a search: this program again with the same arguments plus
// --worker K and the deadline, the threads split between the workers.
std::vector<int> start_workers(const AutoOptions& options, Clock::time_point deadline) {
  int threads = std::max<int>(1, torch::get_num_threads() / static_cast<int>(options.workers()));
  torch::set_num_threads(threads);
  auto until = std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(deadline - Clock::now());
  double until_seconds = std::chrono::duration<double>(until.time_since_epoch()).count();
  std::vector<std::string> args = {"--threads", std::to_string(threads)};
  auto own = own_arguments();
  for (size_t i = 0; i < own.size(); ++i) {
    if (own[i] == "--threads") {
      ++i;
      continue;
    }
    if (starts_with(own[i], "--threads=") || own[i] == "--resume") continue;
    args.push_back(own[i]);
  }
  std::vector<int> pids;
  for (int64_t k = 1; k < options.workers(); ++k) {
    auto worker_args = args;
    for (const auto& a : {std::string("--worker"), std::to_string(k), std::string("--worker-until"), fmt::format("{:.3f}", until_seconds)}) {
      worker_args.push_back(a);
    }
    pids.push_back(spawn_self(worker_args));
  }
  spdlog::info("search: {} worker processes of {} thread{} each", options.workers(), threads, threads == 1 ? "" : "s");
  return pids;
}

}  // namespace

std::string default_target(Task task) {
  return task == Task::classification ? "accuracy >= teacher - 1.0" : "rmse <= 1.05 * teacher";
}

double parse_duration(const std::string& text, const std::string& field) {
  std::string s = trim(text);
  auto bad = [&]() { fail("{}: {} is not a duration; expected e.g. 90s, 20m, 1h30m or a number of seconds", field, quote(text)); };
  if (s.empty()) bad();
  if (auto plain = parse_double(s)) {
    if (*plain <= 0) bad();
    return *plain;
  }
  double total = 0.0;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '.')) ++j;
    if (j == i || j == s.size()) bad();
    auto value = parse_double(s.substr(i, j - i));
    if (!value) bad();
    char unit = s[j];
    double scale = unit == 'h' ? 3600 : unit == 'm' ? 60 : unit == 's' ? 1 : 0;
    if (scale == 0) bad();
    total += *value * scale;
    i = j + 1;
  }
  if (total <= 0) bad();
  return total;
}

std::string duration_text(double seconds) {
  auto s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

namespace {

void check_flags(const AutoOptions& options) {
  if (options.budget_seconds() <= 0) fail("--budget: {} is not a positive duration", options.budget_seconds());
  if (options.max_params() < 0) fail("--max-params: {} is negative", options.max_params());
  if (options.max_latency_ms() < 0) fail("--max-latency-ms: {} is negative", options.max_latency_ms());
  if (options.trials() < 0) fail("--trials: {} is negative", options.trials());
  if (options.workers() < 1) fail("--workers: {} is not a positive number", options.workers());
}

// The space and the target; every override the space can produce must make a valid recipe: the
// corners and every loss kind are checked before any data is read.
void define_search(Search& search) {
  const AutoOptions& options = search.options;
  const flow::RunSpec& base = search.base;
  search.space = make_space(base, options.search());
  search.target_text = !options.target().empty()        ? options.target()
                       : !base.distill.target.empty() ? base.distill.target
                                                      : default_target(base.task);
  search.target = train::Target::parse(search.target_text, options.target().empty() ? "distill.target" : "--target");
  search.metric = search.target.metric();
  search.higher = train::higher_is_better(search.metric);
  auto check = [&](const std::vector<double>& unit) {
    auto spec = search.spec_at(unit);
    losses::Distiller distiller(spec.distill.losses, base.task);
    train::validate(spec.distill.train, "distill");
  };
  size_t dims = search.space.dimensions.size();
  for (double u : {0.0, 1.0}) check(std::vector<double>(dims, u));
  for (size_t d = 0; d < dims; ++d) {
    auto cells = search.space.dimensions[d].cells();
    if (search.space.dimensions[d].name != "loss") continue;
    for (int64_t c = 0; c < cells; ++c) {
      std::vector<double> unit(dims, 0.5);
      unit[d] = (static_cast<double>(c) + 0.5) / static_cast<double>(cells);
      check(unit);
    }
  }
}

// --resume in a folder without trials.json: the search was killed before it began one.
void warn_nothing_to_resume(const std::string& out) {
  spdlog::warn("{}: nothing to resume (no trials.json from an earlier search); starting from the beginning", out);
}

// The ledger of trials (trials.json, file-locked: workers share it), fresh or resumed, and the deadline.
void open_ledger(Search& search, Ledger& ledger) {
  const AutoOptions& options = search.options;
  ledger.set_metric(search.metric);
  search.ledger = &ledger;
  search.lead = options.worker() == 0;
  search.worker = options.worker();
  if (search.group) {
    // Rank 0 opens the ledger in the store and says how much budget is left; the others read it.
    search.lead = search.group->is_root();
    search.worker = search.group->rank();
    double left = 0.0;
    if (search.lead) {
      flow::check_out_folder(options.out(), options.resume(), options.force());
      LedgerState state;
      if (options.resume()) {
        if (ledger.exists()) state = ledger.saved();
        else warn_nothing_to_resume(options.out());
        search.spent_before = state.search_seconds;
        state.trials.erase(std::remove_if(state.trials.begin(), state.trials.end(),
                                          [](const TrialRecord& t) { return t.status == "running"; }),
                           state.trials.end());
        spdlog::info("search: resuming after {} trials ({} spent)", state.trials.size(), duration_text(search.spent_before));
      }
      ledger.reset(state);
      left = options.budget_seconds() - search.spent_before;
      search.group->store_set("kd/auto/left", fmt::format("{}", left));
    } else {
      left = std::stod(search.group->store_get("kd/auto/left"));
    }
    search.deadline = search.start + std::chrono::milliseconds(static_cast<int64_t>(1000 * left));
    return;
  }
  if (!search.lead) {
    auto until = std::chrono::system_clock::time_point(std::chrono::milliseconds(static_cast<int64_t>(1000 * options.worker_until())));
    search.deadline = search.start + std::chrono::duration_cast<Clock::duration>(until - std::chrono::system_clock::now());
    return;
  }
  flow::check_out_folder(options.out(), options.resume(), options.force());
  if (options.resume() && !ledger.exists()) {
    warn_nothing_to_resume(options.out());
    ledger.reset();
  } else if (options.resume()) {
    // Trials a killed search left running are run again; the finished ones are kept.
    auto kept = ledger.update([&](LedgerState& state) {
      search.spent_before = state.search_seconds;
      state.trials.erase(std::remove_if(state.trials.begin(), state.trials.end(),
                                        [](const TrialRecord& t) { return t.status == "running"; }),
                         state.trials.end());
      return state.trials.size();
    });
    spdlog::info("search: resuming after {} trials ({} spent)", kept, duration_text(search.spent_before));
  } else {
    ledger.reset();
  }
  search.deadline =
      search.start + std::chrono::milliseconds(static_cast<int64_t>(1000 * (options.budget_seconds() - search.spent_before)));
}

// The data read once, each fold's teacher prepared once, and the target's threshold from the teachers.
void prepare_teachers(Search& search) {
  const flow::RunSpec& base = search.base;
  search.dataset = data::load_dataset(base.data);
  spdlog::info("{}", trim(search.dataset.summary()));
  size_t folds = search.dataset.folds.size();
  for (size_t f = 0; f < folds; ++f) {
    // In a group the ranks train the teacher data-parallel; each keeps the whole cache (its trials need it).
    auto run = teacher::TeacherRun()
                   .seed(base.seed)
                   .fingerprint(base.teacher_fingerprint)
                   .resume(search.options.resume())
                   .group(search.options.group())
                   .shard_cache(false)
                   .device(search.options.device());
    search.caches.push_back(
        teacher::prepare_teacher(base.teacher, run, search.dataset, f, flow::fold_dir(search.options.out(), f, folds)));
    search.cache_seconds += search.caches.back().cache_seconds;
    const auto& fold = search.dataset.folds[f];
    auto teacher_val = train::score(base.task, fold, search.caches[f].val, fold.val.y, {});
    search.teacher_value += train::metric_value(teacher_val, search.metric) / static_cast<double>(folds);
  }
  search.threshold = search.target.threshold(search.teacher_value);
}

// A trial's epochs (search.epochs, else the recipe's, from distill.steps when it gives steps), the
// rungs, and the size of the smallest student the space holds.
void size_trials(Search& search) {
  const AutoOptions& options = search.options;
  const auto& cache = search.caches[0];
  int64_t rows = cache.train.size(0) + (cache.transfer.defined() ? cache.transfer.size(0) : 0);
  search.sized = train::sized_for_rows(search.base.distill.train, rows);
  search.batches = (rows + search.sized.batch_size() - 1) / search.sized.batch_size();
  search.epochs = options.search().epochs() > 0 ? options.search().epochs()
                  : search.sized.steps() > 0    ? (search.sized.steps() + search.batches - 1) / search.batches
                                                : search.sized.epochs();
  search.epoch_overrides = {fmt::format("distill.epochs={}", search.epochs), "distill.steps=0"};
  search.rungs = Asha::rungs_for(options.search().min_epochs(), search.epochs, options.search().eta());
  search.size_searched = std::any_of(search.space.dimensions.begin(), search.space.dimensions.end(), [](const Dimension& d) {
    return (d.name == "width" || d.name == "depth" || d.name == "student") && !d.fixed();
  });
  search.smallest_size = search.size_searched ? smallest_student_size(search) : 0.0;
}

// The lead's plan in the log, with the final retraining's estimated time (returned).
double announce(Search& search) {
  const flow::RunSpec& base = search.base;
  int64_t final_steps = search.sized.steps() > 0 ? search.sized.steps() : search.sized.epochs() * search.batches;
  double per_step = probe_seconds_per_step(search, std::min<int64_t>(20, search.batches));
  double final_estimate = 1.1 * (per_step * static_cast<double>(final_steps) * (base.distill.baseline ? 2.0 : 1.0) *
                                     static_cast<double>(search.dataset.folds.size()) +
                                 search.cache_seconds);
  std::vector<std::string> rung_text;
  for (auto r : search.rungs) rung_text.push_back(std::to_string(r));
  spdlog::info("search: target {} on validation rows (teacher {:.4g}: threshold {:.4g}); {} dimensions; trials of {} "
               "epochs, rungs at epochs {}",
               search.target_text, search.teacher_value, search.threshold, search.space.dimensions.size(), search.epochs,
               rung_text.empty() ? "(none)" : join(rung_text, ", "));
  spdlog::info("search: budget {} (teacher included); then the final retraining, at most about {} (estimated from the "
               "largest student in the space)",
               duration_text(search.options.budget_seconds()), duration_text(final_estimate));
  return final_estimate;
}

// Claims a trial under the ledger's lock: its number, and a configuration not tried or running yet;
// nothing when the search is over, with the reason in `stop`.
std::optional<TrialRecord> claim_trial(Search& search, TpeSampler& sampler, std::string& stop) {
  const AutoOptions& options = search.options;
  return search.ledger->update([&](LedgerState& state) -> std::optional<TrialRecord> {
    if (options.trials() > 0 && static_cast<int64_t>(state.trials.size()) >= options.trials()) {
      stop = "trials";
      return std::nullopt;
    }
    if (Clock::now() >= search.deadline) return std::nullopt;
    for (const auto& t : state.trials) {
      if (t.meets_target && search.size_of(t) <= search.smallest_size) {
        stop = "smallest";
        return std::nullopt;
      }
    }
    int64_t id = 0;
    for (const auto& t : state.trials) id = std::max(id, t.id + 1);
    auto history = observations(search, state.trials);
    TrialRecord t;
    t.id = id;
    t.status = "running";
    t.worker = search.worker;
    bool fresh = false;
    for (uint64_t attempt = 0; attempt < 32 && !fresh; ++attempt) {
      t.unit = sampler.suggest(history, static_cast<uint64_t>(id) + attempt * 1000003);
      t.config = decode(search.space, t.unit);
      fresh = std::none_of(state.trials.begin(), state.trials.end(), [&](const TrialRecord& o) { return o.config == t.config; });
    }
    if (!fresh) {
      stop = "space";
      return std::nullopt;
    }
    t.overrides = overrides(search.space, t.config, search.base);
    state.trials.push_back(t);
    return t;
  });
}

// Trials until the budget, the trial limit, the space or the smallest student stops the search
// (returned: budget, trials, space or smallest).
std::string run_trials(Search& search) {
  TpeSampler sampler(search.space.dimensions,
                     TpeOptions().seed(search.base.seed).startup_trials(search.options.search().startup_trials()));
  std::string stop = "budget";
  while (true) {
    auto claimed = claim_trial(search, sampler, stop);
    if (!claimed) {
      if (stop == "space") spdlog::info("search: every configuration of the space has been tried");
      if (stop == "smallest") spdlog::info("search: the smallest student in the space meets the target: nothing smaller to find");
      return stop;
    }
    TrialRecord t = run_trial(search, *claimed);
    auto [done, best] = search.ledger->update([&](LedgerState& state) {
      for (auto& o : state.trials) {
        if (o.id == t.id) o = t;
      }
      if (search.lead) state.search_seconds = search.spent_before + seconds_since(search.start);
      const TrialRecord* b = choose(search, state.trials);
      return std::make_pair(state.trials.size(), b ? std::optional<TrialRecord>(*b) : std::nullopt);
    });
    double left = std::chrono::duration<double>(search.deadline - Clock::now()).count();
    spdlog::info("trial {}: {} after {} epochs, val {} {}, {} params ({}); best of {}: trial {}{}; {} left", t.id, t.status,
                 t.epochs, search.metric, std::isfinite(t.value) ? fmt::format("{:.4g}", t.value) : "-", t.params,
                 t.reason.empty() ? config_text(t.config) : t.reason, done, best ? std::to_string(best->id) : "none",
                 best && best->meets_target ? fmt::format(" ({} params, meets the target)", best->params) : "",
                 duration_text(left));
  }
}

// Every worker waited for; the trials as the ledger holds them, a trial still running marked failed.
std::vector<TrialRecord> collect_trials(Search& search, const std::vector<int>& workers) {
  for (size_t k = 0; k < workers.size(); ++k) {
    int status = wait_for(workers[k]);
    if (status != 0) spdlog::warn("search: worker {} ended with status {}; its finished trials are kept", k + 1, status);
  }
  return search.ledger->update([&](LedgerState& state) {
    for (auto& t : state.trials) {
      if (t.status != "running") continue;
      t.status = "failed";
      t.reason = "its worker process ended before the trial did";
    }
    state.search_seconds = search.spent_before + seconds_since(search.start);
    return state.trials;
  });
}

// Indices of the complete trials on the Pareto front of quality and size.
std::vector<size_t> front_of(const Search& search, const std::vector<TrialRecord>& trials) {
  std::vector<size_t> complete;
  std::vector<Point> points;
  for (size_t i = 0; i < trials.size(); ++i) {
    if (trials[i].status != "complete" || !std::isfinite(trials[i].value)) continue;
    complete.push_back(i);
    points.push_back({search.quality(trials[i].value), search.size_of(trials[i])});
  }
  std::vector<size_t> front;
  for (size_t k : pareto_front(points)) front.push_back(complete[k]);
  return front;
}

// What search.json and metrics.json's "search" hold.
nlohmann::json search_json(const Search& search, const std::vector<TrialRecord>& trials, const std::vector<size_t>& front,
                           const TrialRecord& chosen, const std::string& stop, double final_estimate) {
  const AutoOptions& options = search.options;
  nlohmann::json s;
  s["target"] = search.target_text;
  s["metric"] = search.metric;
  s["teacher_val"] = search.teacher_value;
  s["threshold"] = search.threshold;
  s["target_reached"] = chosen.meets_target;
  s["front_axis"] = options.search().front();
  s["budget_seconds"] = options.budget_seconds();
  s["search_seconds"] = search.spent_before + seconds_since(search.start);
  s["final_estimate_seconds"] = final_estimate;
  s["stopped_by"] = stop;
  s["epochs"] = search.epochs;
  s["rungs"] = search.rungs;
  s["eta"] = options.search().eta();
  s["folds"] = search.dataset.folds.size();
  s["teaching"] = search.teaching.to_json();
  nlohmann::json counts = nlohmann::json::object();
  for (const auto& t : trials) counts[t.status] = counts.value(t.status, 0) + 1;
  s["trials"] = trials.size();
  s["status_counts"] = counts;
  nlohmann::json space = nlohmann::json::array();
  for (const auto& d : search.space.dimensions) {
    const char* kinds[] = {"real", "log_real", "integer", "choice"};
    nlohmann::json j = {{"name", d.name}, {"kind", kinds[static_cast<int>(d.kind)]}};
    if (d.kind == DimensionKind::choice) j["choices"] = d.choices;
    else j["range"] = {d.low, d.high};
    space.push_back(j);
  }
  s["space"] = space;
  nlohmann::json all = nlohmann::json::array();
  for (const auto& t : trials) {
    all.push_back({{"trial", t.id}, {"status", t.status}, {"value", std::isfinite(t.value) ? nlohmann::json(t.value) : nlohmann::json()},
                   {"size", search.size_of(t)}, {"params", t.params}, {"epochs", t.epochs}, {"meets_target", t.meets_target},
                   {"config", config_text(t.config)}});
  }
  s["points"] = all;
  nlohmann::json front_ids = nlohmann::json::array();
  for (size_t i : front) front_ids.push_back(trials[i].id);
  s["front"] = front_ids;
  s["chosen"] = to_json(chosen);
  s["chosen"].erase("unit");
  return s;
}

// The outcome as printed: the counts, the front and the choice.
std::string outcome_table(const Search& search, const std::vector<TrialRecord>& trials, const std::vector<size_t>& front,
                          const TrialRecord& chosen, const nlohmann::json& s) {
  std::ostringstream table;
  table << fmt::format("search: {} trials in {} ({}), stopped by {}\n", trials.size(),
                       duration_text(s["search_seconds"].get<double>()), config_text(s["status_counts"]),
                       s["stopped_by"].get<std::string>());
  table << "Pareto front (complete trials, validation rows):\n" << front_table(search, trials, front, &chosen);
  if (chosen.meets_target) {
    table << fmt::format("chosen: trial {}, {} params, val {} {:.4g} meets the target {} (threshold {:.4g})\n", chosen.id,
                         chosen.params, search.metric, chosen.value, search.target_text, search.threshold);
  } else {
    table << fmt::format("target not reached: no complete trial meets {} (threshold {:.4g}); the best found is trial {} "
                         "with val {} {:.4g}\n",
                         search.target_text, search.threshold, chosen.id, search.metric, chosen.value);
  }
  return table.str();
}

// The chosen student retrained by `kdistill run` with the baseline and every output.
// Data-parallel over the search's group when `group` is set.
std::string final_run(const Search& search, const TrialRecord& chosen, const nlohmann::json& s,
                      const std::shared_ptr<dist::Group>& group) {
  size_t folds = search.dataset.folds.size();
  double per_epoch = chosen.seconds / static_cast<double>(std::max<int64_t>(1, chosen.epochs * static_cast<int64_t>(folds)));
  spdlog::info("final: retraining trial {} with the baseline and every run output (about {})", chosen.id,
               duration_text(per_epoch * static_cast<double>(search.sized.epochs()) * (search.base.distill.baseline ? 2 : 1) *
                             static_cast<double>(folds)));
  flow::RunSpec spec = search.make_spec(chosen.overrides);
  // The trials' banks teach the final student too when its epochs ask for as many views.
  // The search checked the folder when it began (open_ledger): the final run may write over its own.
  return flow::run_distillation(spec, flow::RunOptions()
                                          .out(search.options.out())
                                          .force(true)
                                          .extra_metrics({{"search", s}})
                                          .banks(search.banks)
                                          .group(group)
                                          .device(search.options.device()))
      .table;
}

// Rank 0 of a group: waits until every other rank has set DONE/<rank> in the store, or was lost (a
// rank lost after its trials is marked failed with the others'). Whether every rank is still there.
bool wait_for_ranks(Search& search, const std::string& done_key) {
  dist::Group& group = *search.group;
  std::vector<bool> done(static_cast<size_t>(group.size()), false);
  done[0] = true;
  auto last_check = Clock::now();
  bool whole = true;
  while (std::find(done.begin(), done.end(), false) != done.end()) {
    for (int64_t r = 1; r < group.size(); ++r) {
      if (!done[static_cast<size_t>(r)] && group.store_try_get(fmt::format("{}/{}", done_key, r))) done[static_cast<size_t>(r)] = true;
    }
    if (seconds_since(last_check) > 5.0) {
      for (int64_t r : group.lost_ranks()) {
        if (!done[static_cast<size_t>(r)]) spdlog::warn("search: rank {} was lost; its finished trials are kept", r);
        done[static_cast<size_t>(r)] = true;
        whole = false;
      }
      last_check = Clock::now();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return whole;
}

// Another rank of a group after its trials: rank 0's choice (the overrides of the student to retrain,
// or none: no final run, or rank 0 runs it alone because a rank was lost), and the final run trained
// data-parallel with it.
void follow_final_run(Search& search) {
  dist::Group& group = *search.group;
  group.store_set(fmt::format("kd/auto/finished/{}", group.rank()), "1");
  std::optional<std::string> choice;
  while (!(choice = group.store_try_get("kd/auto/final"))) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  group.store_set(fmt::format("kd/auto/told/{}", group.rank()), "1");  // rank 0 may end now: its store is read
  auto decided = nlohmann::json::parse(*choice);
  if (!decided.contains("overrides")) return;
  flow::run_distillation(search.make_spec(decided["overrides"].get<std::vector<std::string>>()),
                         flow::RunOptions().out(search.options.out()).force(true).banks(search.banks).group(search.options.group())
                             .device(search.options.device()));
}

}  // namespace

AutoResult run_auto(const SpecFactory& make_spec, const AutoOptions& options) {
  check_flags(options);
  Search search(make_spec, options);
  if (options.group() && options.group()->distributed()) {
    search.group = options.group().get();
    if (options.workers() > 1) {
      fail("--workers: {} in a data-parallel group of {} ranks: each rank runs trials already; leave --workers out",
           options.workers(), search.group->size());
    }
  }
  define_search(search);

  fs::path out(options.out());
  if (!search.group || search.group->is_root()) fs::create_directories(out);
  std::string fingerprint = search.base.recipe_text + fmt::format("target: {}\nmax_params: {}\nmax_latency_ms: {}\n",
                                                                   search.target_text, options.max_params(),
                                                                   options.max_latency_ms());
  if (search.group) search.group->check_same("recipe and search flags", fingerprint);
  Ledger ledger(out, fingerprint, search.group);
  open_ledger(search, ledger);
  prepare_teachers(search);
  size_trials(search);
  double final_estimate = 0.0;
  std::vector<int> workers;
  if (search.lead) {
    final_estimate = announce(search);
    if (options.workers() > 1) workers = start_workers(options, search.deadline);
  }
  std::string stop = run_trials(search);
  AutoResult result;
  if (search.group && !search.lead) {
    follow_final_run(search);
    return result;
  }
  if (!search.lead) return result;

  // A group that lost a rank cannot train together: rank 0 then retrains the chosen student alone.
  std::shared_ptr<dist::Group> final_group = options.group();
  if (search.group && !wait_for_ranks(search, "kd/auto/finished")) final_group = nullptr;
  std::vector<TrialRecord> trials = collect_trials(search, workers);
  std::vector<size_t> front = front_of(search, trials);
  const TrialRecord* chosen = choose(search, trials);
  // The other ranks of a group wait for the choice: the final run trains data-parallel.
  // It serves the store they read it from: it waits until each has read it (or is lost).
  auto tell_ranks = [&](const nlohmann::json& decided) {
    if (!search.group) return;
    search.group->store_set("kd/auto/final", decided.dump());
    wait_for_ranks(search, "kd/auto/told");
  };
  if (!chosen) {
    tell_ranks(nlohmann::json::object());
    fail("search: no trial finished an epoch within the budget of {} ({} trials started); raise --budget",
         duration_text(options.budget_seconds()), trials.size());
  }
  result.target_reached = chosen->meets_target;
  result.search = search_json(search, trials, front, *chosen, stop, final_estimate);
  write_file_atomic(out / "search.json", result.search.dump(2) + "\n");
  result.table = outcome_table(search, trials, front, *chosen, result.search);
  // The whole table is printed at the end (the CLI); the log gets the outcome before the final retraining.
  auto lines = split(trim(result.table), '\n');
  spdlog::info("{}", lines.front());
  spdlog::info("{}", lines.back());
  tell_ranks(options.final_run() && final_group ? nlohmann::json{{"overrides", chosen->overrides}} : nlohmann::json::object());
  if (options.final_run()) result.final_table = final_run(search, *chosen, result.search, final_group);
  return result;
}

}  // namespace kd::search
