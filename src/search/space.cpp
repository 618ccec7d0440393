#include "kd/search/space.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "kd/losses/registry.h"
#include "kd/models/zoo.h"
#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::search {

namespace {

struct DimensionInfo {
  std::string name;
  DimensionKind kind;
  double min, max;  // the domain a recipe's range must lie in
};

// The one table of dimensions: the options of the loss kinds that declare a search range
// (losses::LossOption, e.g. temperature) come after `loss`.
const std::vector<DimensionInfo>& dimension_table() {
  static const std::vector<DimensionInfo> table = [] {
    std::vector<DimensionInfo> t = {
        {"student", DimensionKind::choice, 0, 0},
        {"width", DimensionKind::log_real, 1e-3, 64},
        {"depth", DimensionKind::integer, 1, 16},
        {"loss", DimensionKind::choice, 0, 0},
    };
    std::vector<DimensionInfo> rest = {
        {"alpha", DimensionKind::real, 0, 1},
        {"lr", DimensionKind::log_real, 1e-7, 10},
    };
    for (const auto& use : losses::loss_option_table()) {
      const auto& o = use.option;
      if (o.search_low <= 0) continue;
      for (const auto& other : t) KD_CHECK(other.name != o.key, "loss option {} clashes with a search dimension", o.key);
      for (const auto& other : rest) KD_CHECK(other.name != o.key, "loss option {} clashes with a search dimension", o.key);
      t.push_back({o.key, DimensionKind::log_real, o.search_low / 20, o.search_high * 5});
    }
    t.insert(t.end(), rest.begin(), rest.end());
    return t;
  }();
  return table;
}

// The searched options (LossOption with a search range) that `kind` declares.
std::vector<losses::LossOption> searched_options(const std::string& kind) {
  std::vector<losses::LossOption> options;
  for (const auto& o : losses::loss_options(kind)) {
    if (o.search_low > 0) options.push_back(o);
  }
  return options;
}

const DimensionInfo& info_for(const std::string& name, const std::string& field) {
  for (const auto& info : dimension_table()) {
    if (name == info.name) return info;
  }
  auto suggestion = nearest(name, dimension_names());
  fail("{}: unknown search dimension{}; expected one of {}", field,
       suggestion ? fmt::format(" (did you mean {}?)", *suggestion) : "", join(dimension_names(), ", "));
}

double round4(double value) { return std::stod(fmt::format("{:.4g}", value)); }

std::string number(double value) { return fmt::format("{}", value); }

const Dimension* find(const std::vector<Dimension>& dimensions, const std::string& name) {
  for (const auto& d : dimensions) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

// Hidden sizes (mlp) or channels (cnn) for `depth` layers: the recipe's first ones, then more of the
// last (mlp) or twice the last per added stage (cnn).
std::vector<int64_t> resized(std::vector<int64_t> sizes, int64_t depth, bool doubling) {
  if (sizes.empty()) sizes = {32};
  while (static_cast<int64_t>(sizes.size()) < depth) sizes.push_back(sizes.back() * (doubling ? 2 : 1));
  sizes.resize(static_cast<size_t>(depth));
  return sizes;
}

std::string list_text(const std::vector<int64_t>& values) {
  std::vector<std::string> parts;
  for (auto v : values) parts.push_back(std::to_string(v));
  return "[" + join(parts, ", ") + "]";
}

}  // namespace

const std::vector<std::string>& dimension_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& info : dimension_table()) n.push_back(info.name);
    return n;
  }();
  return names;
}

int64_t Dimension::cells() const {
  if (kind == DimensionKind::integer) return static_cast<int64_t>(high - low) + 1;
  if (kind == DimensionKind::choice) return static_cast<int64_t>(choices.size());
  return 0;
}

bool Dimension::fixed() const {
  if (kind == DimensionKind::choice || kind == DimensionKind::integer) return cells() == 1;
  return low == high;
}

nlohmann::json Dimension::decode(double u) const {
  u = std::clamp(u, 0.0, 1.0);
  if (kind == DimensionKind::integer || kind == DimensionKind::choice) {
    int64_t n = cells();
    int64_t index = std::min<int64_t>(n - 1, static_cast<int64_t>(std::floor(u * static_cast<double>(n))));
    if (kind == DimensionKind::choice) return choices[static_cast<size_t>(index)];
    return static_cast<int64_t>(low) + index;
  }
  if (kind == DimensionKind::log_real) return round4(std::exp(std::log(low) + u * (std::log(high) - std::log(low))));
  return round4(low + u * (high - low));
}

Dimension numeric_dimension(const std::string& name, double low, double high, const std::string& field) {
  const auto& info = info_for(name, field);
  if (info.kind == DimensionKind::choice) fail("{}: {} takes a list of names, not numbers", field, name);
  if (!(low <= high)) fail("{}: the range [{}, {}] is empty; expected [low, high] with low <= high", field, low, high);
  if (low < info.min || high > info.max) {
    fail("{}: [{}, {}] is outside {}'s domain [{}, {}]", field, low, high, name, info.min, info.max);
  }
  if (info.kind == DimensionKind::integer && (low != std::floor(low) || high != std::floor(high))) {
    fail("{}: {} takes whole numbers, found [{}, {}]", field, name, low, high);
  }
  return Dimension{name, info.kind, low, high, {}};
}

Dimension choice_dimension(const std::string& name, std::vector<std::string> choices, const std::string& field) {
  const auto& info = info_for(name, field);
  if (info.kind != DimensionKind::choice || name == "student") {
    fail("{}: {} takes {}", field, name, name == "student" ? "candidate specs under search.students" : "a number or [low, high]");
  }
  if (choices.empty()) fail("{}: the list is empty; e.g. [kl, js, dkd]", field);
  const auto& kinds = losses::loss_term_kinds();
  for (const auto& c : choices) {
    if (std::find(kinds.begin(), kinds.end(), c) == kinds.end()) {
      fail("{}: {} is not a loss kind; expected one of {}", field, quote(c), join(kinds, ", "));
    }
  }
  return Dimension{name, DimensionKind::choice, 0, 0, std::move(choices)};
}

void validate(const SearchOptions& options) {
  if (options.epochs() < 0) fail("search.epochs: {} is negative", options.epochs());
  if (options.min_epochs() < 1) fail("search.min_epochs: {} is not a positive number", options.min_epochs());
  if (options.eta() < 2) fail("search.eta: {} is below 2 (the reduction factor of successive halving)", options.eta());
  if (options.startup_trials() < 1) fail("search.startup_trials: {} is not a positive number", options.startup_trials());
  const std::vector<std::string> fronts = {"params", "macs", "latency_ms"};
  if (std::find(fronts.begin(), fronts.end(), options.front()) == fronts.end()) {
    fail("search.front: {} is not one of {}", quote(options.front()), join(fronts, ", "));
  }
}

SearchSpace make_space(const flow::RunSpec& base, const SearchOptions& options) {
  validate(options);
  SearchSpace space;
  space.regression = base.task == Task::regression;
  const auto& set = options.dimensions();
  std::vector<std::string> used;
  auto add = [&](Dimension fallback) {
    const Dimension* given = find(set, fallback.name);
    space.dimensions.push_back(given ? *given : fallback);
    used.push_back(fallback.name);
  };

  if (!options.students().empty()) {
    if (find(set, "width") || find(set, "depth")) {
      fail("search.students: give candidate students or width/depth ranges, not both");
    }
    space.students = options.students();
    std::vector<std::string> indices;
    for (size_t i = 0; i < space.students.size(); ++i) indices.push_back(std::to_string(i));
    space.dimensions.push_back(Dimension{"student", DimensionKind::choice, 0, 0, indices});
  } else if (base.student.model) {
    const auto& spec = *base.student.model;
    const std::vector<int64_t>* stages = models::zoo_stage_sizes(spec);
    bool sized = stages && !stages->empty();
    const models::ZooArch* arch = models::find_zoo_arch(spec.arch());
    if (sized || (arch && arch->uses("width"))) add(Dimension{"width", DimensionKind::log_real, 0.125, 2.0, {}});
    if (sized) add(Dimension{"depth", DimensionKind::integer, 1, static_cast<double>(stages->size()) + 1, {}});
  }

  if (!options.recipe_losses()) {
    if (space.regression) {
      add(Dimension{"loss", DimensionKind::choice, 0, 0, {"mse", "huber"}});
    } else {
      add(Dimension{"loss", DimensionKind::choice, 0, 0, {"kl", "js", "dkd"}});
    }
    // The options the candidate kinds declare a search range for (temperature).
    std::vector<std::string> added;
    for (const auto& kind : space.dimensions.back().choices) {
      for (const auto& o : searched_options(kind)) {
        if (std::find(added.begin(), added.end(), o.key) != added.end()) continue;
        add(Dimension{o.key, DimensionKind::log_real, o.search_low, o.search_high, {}});
        added.push_back(o.key);
      }
    }
    // From 0: "no teacher" (alpha below 0.05 is taken as 0) is a candidate like any other.
    add(Dimension{"alpha", DimensionKind::real, 0.0, 1.0, {}});
  }
  // A wide log range: a 4-unit student on a table of 128 rows needed 10x the usual Adam rate.
  double lr = base.distill.train.optimizer().lr();
  if (lr > 0) add(Dimension{"lr", DimensionKind::log_real, round4(lr / 30), round4(std::min(1.0, lr * 30)), {}});
  else if (base.distill.train.optimizer().name() == "sgd") add(Dimension{"lr", DimensionKind::log_real, 1e-3, 0.5, {}});
  else add(Dimension{"lr", DimensionKind::log_real, 1e-4, 0.1, {}});

  for (const auto& d : set) {
    if (std::find(used.begin(), used.end(), d.name) != used.end()) continue;
    std::string why = d.name == "width" || d.name == "depth"
                          ? (base.student.model ? "the recipe's student (arch " + base.student.model->arch() + ") has no " + d.name + " to vary"
                                                : "the student is a TorchScript file")
                          : losses::find_loss_option(d.name) && !options.recipe_losses()
                              ? "none of the candidate losses reads " + d.name
                              : "loss: recipe keeps the recipe's losses";
    fail("search.{}: not searched here: {}", d.name, why);
  }
  return space;
}

Config decode(const SearchSpace& space, const std::vector<double>& unit) {
  KD_CHECK(unit.size() == space.dimensions.size(), "decode: {} coordinates for {} dimensions", unit.size(),
           space.dimensions.size());
  Config config = nlohmann::json::object();
  for (size_t i = 0; i < unit.size(); ++i) config[space.dimensions[i].name] = space.dimensions[i].decode(unit[i]);
  return config;
}

std::vector<std::string> overrides(const SearchSpace& space, const Config& config, const flow::RunSpec& base) {
  std::vector<std::string> sets;
  if (config.contains("student")) {
    size_t index = std::stoul(config["student"].get<std::string>());
    sets.push_back("student.model=" + space.students.at(index));
  }
  if (config.contains("width")) sets.push_back("student.model.width_multiplier=" + number(config["width"]));
  if (config.contains("depth") && base.student.model) {
    const auto& spec = *base.student.model;
    int64_t depth = config["depth"].get<int64_t>();
    // Conv stages double their channels going deeper; hidden layers keep their width.
    const std::string& key = models::find_zoo_arch(spec.arch())->stages;
    const std::vector<int64_t>* stages = models::zoo_stage_sizes(spec);
    KD_CHECK(stages, "depth searched for arch {} without stages", spec.arch());
    sets.push_back("student.model." + key + "=" + list_text(resized(*stages, depth, key == "channels")));
  }
  if (config.contains("loss")) {
    std::string kind = config["loss"].get<std::string>();
    double alpha = config.value("alpha", 0.5);
    if (alpha < 0.05) alpha = 0.0;
    double rest = round4(1.0 - alpha);
    if (space.regression) {
      sets.push_back(fmt::format("distill.losses=[{{kind: {}, target: teacher, weight: {}}}, {{kind: mse, target: labels, "
                                 "weight: {}}}]", kind, number(alpha), number(rest)));
    } else {
      std::string term = fmt::format("kind: {}, weight: {}", kind, number(alpha));
      for (const auto& o : searched_options(kind)) {
        if (config.contains(o.key)) term += fmt::format(", {}: {}", o.key, number(config[o.key].get<double>()));
      }
      sets.push_back(fmt::format("distill.losses=[{{{}}}, {{kind: ce, weight: {}}}]", term, number(rest)));
    }
  }
  if (config.contains("lr")) {
    // The whole optimizer map: the recipe may say `optimizer: adam`, which has no .lr to set.
    const auto& o = base.distill.train.optimizer();
    train::OptimizerOptions d;
    std::vector<std::string> keys = {"name: " + o.name(), "lr: " + number(config["lr"])};
    if (o.momentum() != d.momentum()) keys.push_back("momentum: " + number(o.momentum()));
    if (o.nesterov() != d.nesterov()) keys.push_back(fmt::format("nesterov: {}", o.nesterov()));
    if (o.weight_decay() != d.weight_decay()) keys.push_back("weight_decay: " + number(o.weight_decay()));
    if (o.beta1() != d.beta1()) keys.push_back("beta1: " + number(o.beta1()));
    if (o.beta2() != d.beta2()) keys.push_back("beta2: " + number(o.beta2()));
    sets.push_back("distill.optimizer={" + join(keys, ", ") + "}");
  }
  // A trial trains one stage on its searched objective; so does the final run: the recipe's stages
  // (a hint on taps a resized student may lack) are not part of the search.
  if (!base.distill.stages.empty()) sets.push_back("distill.stages=null");
  return sets;
}

std::string config_text(const Config& config) {
  std::vector<std::string> parts;
  for (const auto& [key, value] : config.items()) {
    // fmt prints the shortest text that reads back to the same double; json's dump may not (0.012070000000000001).
    std::string text = value.is_string()          ? value.get<std::string>()
                       : value.is_number_float() ? number(value.get<double>())
                                                 : value.dump();
    parts.push_back(key + "=" + text);
  }
  return join(parts, " ");
}

}  // namespace kd::search
