// The one table of loss kinds: kind name -> factory. Adding a kind = one header, one source,
// one line in src/losses/registry.cpp, its tests and its docs; its own options (LossOption, declared
// by the term) reach the recipe reader, the checks, the docs table and `kdistill auto` from there.
//
// Example:
//   auto term = kd::losses::make_loss_term(kd::losses::LossTermOptions("js").temperature(2));
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kd/losses/loss_term.h"

namespace kd::losses {

using LossTermFactory = std::function<std::unique_ptr<LossTerm>(const LossTermOptions&)>;

// Every kind, in table order: kl, reverse_kl, js, mse, huber, ce, dkd, dist, hint, attention, rkd,
// cosine, correlation.
std::vector<std::string> loss_term_kinds();

// The factory for `kind`; kd::Error `kind: "kdl" is not a loss kind (did you mean "kl"?); expected
// one of ...` when it is not in the table.
const LossTermFactory& loss_term_factory(const std::string& kind);

// The options `kind` declares (its term's declared_options()); kd::Error for an unknown kind.
const std::vector<LossOption>& loss_options(const std::string& kind);

// Every option some kind declares, in table order, with the kinds that read it (what docs/losses.md's
// table shows); kd::Error-free lookups of one key's first declaration (nullptr: none) and of all keys.
struct LossOptionUse {
  LossOption option;
  std::vector<std::string> kinds;
};
std::vector<LossOptionUse> loss_option_table();
const LossOption* find_loss_option(const std::string& key);
std::vector<std::string> loss_option_keys();

// Checks `options` (kd::Error naming the field: `temperature: found 0, expected > 0`) and builds the term.
std::unique_ptr<LossTerm> make_loss_term(const LossTermOptions& options);

}  // namespace kd::losses
