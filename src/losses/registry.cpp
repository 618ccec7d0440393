#include "kd/losses/registry.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "kd/losses/attention.h"
#include "kd/losses/attention_map.h"
#include "kd/losses/correlation.h"
#include "kd/losses/cosine.h"
#include "kd/losses/cross_entropy.h"
#include "kd/losses/dist.h"
#include "kd/losses/dkd.h"
#include "kd/losses/hint.h"
#include "kd/losses/huber.h"
#include "kd/losses/js.h"
#include "kd/losses/kl.h"
#include "kd/losses/mse.h"
#include "kd/losses/reverse_kl.h"
#include "kd/losses/rkd.h"
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
      {"dkd", factory_of<DkdLoss>()},     {"dist", factory_of<DistLoss>()},
      {"hint", factory_of<HintLoss>()},   {"attention", factory_of<AttentionLoss>()},
      {"rkd", factory_of<RkdLoss>()},     {"cosine", factory_of<CosineLoss>()},
      {"correlation", factory_of<CorrelationLoss>()}, {"attention_map", factory_of<AttentionMapLoss>()},
  };
  return entries;
}

void check_range(const char* key, double value, bool ok, const char* expected) {
  if (!ok || !std::isfinite(value)) fail("{}: found {}, expected {}", key, value, expected);
}

const LossOption* find_option(const std::vector<LossOption>& options, const std::string& key) {
  for (const auto& option : options) {
    if (option.key == key) return &option;
  }
  return nullptr;
}

// The declaration `kind` reads `key` by: its own, else the first kind's in the table that declares it.
const LossOption& option_for(const std::string& kind, const std::string& key) {
  bool known = std::any_of(table().begin(), table().end(), [&](const Entry& e) { return e.kind == kind; });
  if (known) {
    if (const LossOption* own = find_option(loss_options(kind), key)) return *own;
  }
  const LossOption* any = find_loss_option(key);
  if (!any) fail("{}: no loss kind has this option; the options are {}", key, join(loss_option_keys(), ", "));
  return *any;
}

std::string words_text(const std::vector<std::string>& words) {
  std::vector<std::string> quoted;
  for (const auto& w : words) quoted.push_back(quote(w));
  return join(quoted, " or ");
}

void check_options(const LossTermOptions& options, const LossTerm& term) {
  check_range("weight", options.weight(), options.weight() >= 0, "a number >= 0");
  const std::vector<LossOption> declared = term.declared_options();
  std::vector<std::string> keys;
  for (const auto& option : declared) keys.push_back(option.key);
  auto refuse = [&](const std::string& key, const std::string& found) {
    fail("{}: loss {} does not use {} (found {}); its keys are kind, weight{}{}", key, quote(options.kind()), key,
         found, keys.empty() ? "" : ", ", join(keys, ", "));
  };
  for (const auto& [key, value] : options.numbers()) {
    const LossOption* own = find_option(declared, key);
    if (own && own->is_word()) fail("{}: found {}, expected {}", key, value, words_text(own->words));
    if (!own) {
      const LossOption& other = option_for(options.kind(), key);
      if (other.is_word() || value != other.number) refuse(key, fmt::format("{}", value));
      continue;
    }
    if (!own->range.contains(value) || !std::isfinite(value)) {
      fail("{}: found {}, expected a number {}", key, value, own->range.text());
    }
  }
  for (const auto& [key, value] : options.words()) {
    const LossOption* own = find_option(declared, key);
    if (!own) {
      const LossOption& other = option_for(options.kind(), key);
      if (!other.is_word() || value != other.words.front()) refuse(key, quote(value));
      continue;
    }
    if (own->any_word) {
      if (value.empty()) fail("{}: empty, expected a name", key);
      continue;
    }
    if (std::find(own->words.begin(), own->words.end(), value) == own->words.end()) {
      fail("{}: found {}, expected {}", key, quote(value), words_text(own->words));
    }
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

const std::vector<LossOption>& loss_options(const std::string& kind) {
  static const std::map<std::string, std::vector<LossOption>> declared = [] {
    std::map<std::string, std::vector<LossOption>> all;
    for (const auto& entry : table()) all[entry.kind] = entry.factory(LossTermOptions(entry.kind))->declared_options();
    return all;
  }();
  loss_term_factory(kind);  // the error for an unknown kind
  return declared.at(kind);
}

std::vector<LossOptionUse> loss_option_table() {
  std::vector<LossOptionUse> uses;
  for (const auto& entry : table()) {
    for (const auto& option : loss_options(entry.kind)) {
      auto it = std::find_if(uses.begin(), uses.end(), [&](const LossOptionUse& u) { return u.option.key == option.key; });
      if (it == uses.end()) {
        uses.push_back({option, {entry.kind}});
      } else {
        KD_CHECK(it->option.help == option.help && it->option.number == option.number && it->option.words == option.words &&
                     it->option.any_word == option.any_word,
                 "loss option {} is declared differently by {} and {}", option.key, it->kinds.front(), entry.kind);
        it->kinds.push_back(entry.kind);
      }
    }
  }
  return uses;
}

const LossOption* find_loss_option(const std::string& key) {
  static const std::vector<LossOptionUse> uses = loss_option_table();
  for (const auto& use : uses) {
    if (use.option.key == key) return &use.option;
  }
  return nullptr;
}

std::vector<std::string> loss_option_keys() {
  std::vector<std::string> keys;
  for (const auto& use : loss_option_table()) keys.push_back(use.option.key);
  return keys;
}

LossOption temperature_option() {
  auto option = LossOption::of_number("temperature", "softmax temperature T", 1.0, OptionRange::above(0));
  option.search_low = 1;
  option.search_high = 20;
  return option;
}

LossOption target_option() {
  return LossOption::of_words("target", "what the student is compared with (labels: regression only)",
                              {"teacher", "labels"});
}

bool OptionRange::contains(double value) const {
  return (low_open ? value > low : value >= low) && (high_open ? value < high : value <= high);
}

std::string OptionRange::text() const {
  if (std::isinf(high)) return fmt::format("{} {}", low_open ? ">" : ">=", low);
  return fmt::format("in {}{}, {}{}", low_open ? "(" : "[", low, high, high_open ? ")" : "]");
}

LossTermOptions& LossTermOptions::set(const std::string& key, double value) {
  numbers_[key] = value;
  words_.erase(key);
  return *this;
}

LossTermOptions& LossTermOptions::set(const std::string& key, std::string value) {
  words_[key] = std::move(value);
  numbers_.erase(key);
  return *this;
}

double LossTermOptions::number(const std::string& key) const {
  auto it = numbers_.find(key);
  return it != numbers_.end() ? it->second : option_for(kind_, key).number;
}

std::string LossTermOptions::word(const std::string& key) const {
  auto it = words_.find(key);
  if (it != words_.end()) return it->second;
  const LossOption& option = option_for(kind_, key);
  KD_CHECK(option.is_word(), "loss option {} is a number", key);
  return option.words.front();
}

std::unique_ptr<LossTerm> make_loss_term(const LossTermOptions& options) {
  std::unique_ptr<LossTerm> term = loss_term_factory(options.kind())(options);
  check_options(options, *term);
  return term;
}

}  // namespace kd::losses
