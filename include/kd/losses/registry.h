// The one table of loss kinds: kind name -> factory. Adding a kind = one header, one source,
// one line in src/losses/registry.cpp, and its tests.
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

// Every kind, in table order: kl, reverse_kl, js, mse, huber, ce, dkd.
std::vector<std::string> loss_term_kinds();

// The factory for `kind`; kd::Error `kind: "kdl" is not a loss kind (did you mean "kl"?); expected
// one of ...` when it is not in the table.
const LossTermFactory& loss_term_factory(const std::string& kind);

// Checks `options` (kd::Error naming the field: `temperature: found 0, expected > 0`) and builds the term.
std::unique_ptr<LossTerm> make_loss_term(const LossTermOptions& options);

}  // namespace kd::losses
