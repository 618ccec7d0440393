#include "kd/losses/registry.h"

#include <fmt/format.h>

#include <cmath>

#include "kd/losses/cross_entropy.h"
#include "kd/losses/dkd.h"
#include "kd/losses/huber.h"
#include "kd/losses/js.h"
#include "kd/losses/kl.h"
#include "kd/losses/mse.h"
#include "kd/losses/reverse_kl.h"
#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::losses {
namespace {

struct Entry {
  std::string kind;
  LossTermFactory factory;
};

template <typename Term>
LossTermFactory factory_of() {
  return [](const LossTermOptions& options) { return std::make_unique<Term>(options); };
}

// THE table of loss kinds.
const std::vector<Entry>& table() {
  static const std::vector<Entry> entries = {
      {"kl", factory_of<KlLoss>()},       {"reverse_kl", factory_of<ReverseKlLoss>()},
      {"js", factory_of<JsLoss>()},       {"mse", factory_of<MseLoss>()},
      {"huber", factory_of<HuberLoss>()}, {"ce", factory_of<CrossEntropyLoss>()},
      {"dkd", factory_of<DkdLoss>()},
  };
  return entries;
}

// The value of option `key` as text, and whether it differs from the default.
std::pair<std::string, bool> option_value(const LossTermOptions& options, const std::string& key) {
  const LossTermOptions defaults;
  auto number = [](double value, double fallback) {
    return std::make_pair(fmt::format("{}", value), value != fallback);
  };
  if (key == "temperature") return number(options.temperature(), defaults.temperature());
  if (key == "label_smoothing") return number(options.label_smoothing(), defaults.label_smoothing());
  if (key == "delta") return number(options.delta(), defaults.delta());
  if (key == "alpha") return number(options.alpha(), defaults.alpha());
  if (key == "beta") return number(options.beta(), defaults.beta());
  KD_CHECK(key == "target", "unknown option key {}", key);
  return {quote(options.target()), options.target() != defaults.target()};
}

void check_range(const char* key, double value, bool ok, const char* expected) {
  if (!ok || !std::isfinite(value)) fail("{}: found {}, expected {}", key, value, expected);
}

void check_options(const LossTermOptions& options, const LossTerm& term) {
  check_range("weight", options.weight(), options.weight() >= 0, "a number >= 0");
  const std::vector<std::string> used = term.option_keys();
  for (const char* key : {"temperature", "label_smoothing", "delta", "target", "alpha", "beta"}) {
    bool is_used = std::find(used.begin(), used.end(), key) != used.end();
    auto [text, changed] = option_value(options, key);
    if (!is_used && changed) {
      fail("{}: loss {} does not use {} (found {}); its keys are kind, weight{}{}", key,
           quote(options.kind()), key, text, used.empty() ? "" : ", ", join(used, ", "));
    }
  }
  check_range("temperature", options.temperature(), options.temperature() > 0, "a number > 0");
  check_range("label_smoothing", options.label_smoothing(),
              options.label_smoothing() >= 0 && options.label_smoothing() < 1, "a number in [0, 1)");
  check_range("delta", options.delta(), options.delta() > 0, "a number > 0");
  check_range("alpha", options.alpha(), options.alpha() >= 0, "a number >= 0");
  check_range("beta", options.beta(), options.beta() >= 0, "a number >= 0");
  if (options.target() != "teacher" && options.target() != "labels") {
    fail("target: found {}, expected \"teacher\" or \"labels\"", quote(options.target()));
  }
}

}  // namespace

std::vector<std::string> loss_term_kinds() {
  std::vector<std::string> kinds;
  for (const auto& entry : table()) kinds.push_back(entry.kind);
  return kinds;
}

const LossTermFactory& loss_term_factory(const std::string& kind) {
  for (const auto& entry : table()) {
    if (entry.kind == kind) return entry.factory;
  }
  std::vector<std::string> kinds = loss_term_kinds();
  auto suggestion = nearest(kind, kinds);
  fail("kind: {} is not a loss kind{}; expected one of {}", quote(kind),
       suggestion ? fmt::format(" (did you mean {}?)", quote(*suggestion)) : "", join(kinds, ", "));
}

std::unique_ptr<LossTerm> make_loss_term(const LossTermOptions& options) {
  std::unique_ptr<LossTerm> term = loss_term_factory(options.kind())(options);
  check_options(options, *term);
  return term;
}

}  // namespace kd::losses
