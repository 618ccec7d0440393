#include "kd/losses/distiller.h"

#include <fmt/format.h>

#include <map>

#include "kd/losses/registry.h"
#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::losses {

Distiller::Distiller(std::vector<LossTermOptions> terms, Task task)
    : options_(std::move(terms)), task_(task) {
  if (options_.empty()) fail("losses: empty, expected at least one term such as {{kind: kl}}");
  std::map<std::string, int> kind_count;
  double weight_sum = 0;
  for (size_t i = 0; i < options_.size(); ++i) {
    const LossTermOptions& options = options_[i];
    std::unique_ptr<LossTerm> term;
    try {
      term = make_loss_term(options);
    } catch (const Error& e) {
      // Every option message starts with its key: "losses[1].temperature: ...".
      throw Error(fmt::format("losses[{}].{}", i, e.what()));
    }
    if (!term->supports(task)) {
      if (task == Task::regression) {
        fail("losses[{}].kind: {} is for classification (logits over classes), the task is regression", i,
             quote(options.kind()));
      }
      fail(
          "losses[{}].target: {} with target \"labels\" needs real-valued labels (regression); for class "
          "labels use kind \"ce\"",
          i, quote(options.kind()));
    }
    weight_sum += options.weight();
    ++kind_count[term->name()];
    terms_.push_back(std::move(term));
  }
  if (weight_sum <= 0) fail("losses: all weights are 0, expected at least one weight > 0");
  std::map<std::string, int> seen;
  for (const auto& term : terms_) {
    std::string name = term->name();
    names_.push_back(kind_count[name] > 1 ? fmt::format("{}_{}", name, seen[name]++) : name);
  }
}

LossValues Distiller::compute(const LossInputs& inputs) const {
  LossValues values;
  for (size_t i = 0; i < terms_.size(); ++i) {
    torch::Tensor value;
    try {
      value = terms_[i]->compute(inputs);
    } catch (const Error& e) {
      throw Error(fmt::format("losses[{}]: {}", i, e.what()));
    }
    torch::Tensor weighted = value * options_[i].weight();
    values.total = values.total.defined() ? values.total + weighted : weighted;
    values.terms.push_back(value.detach());
  }
  return values;
}

bool Distiller::needs_teacher() const {
  for (const auto& term : terms_) {
    if (term->uses_teacher()) return true;
  }
  return false;
}

bool Distiller::needs_labels() const {
  for (const auto& term : terms_) {
    if (term->uses_labels()) return true;
  }
  return false;
}

}  // namespace kd::losses
