#include "kd/losses/attention_map.h"

#include <limits>

#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::losses {

torch::Tensor AttentionMapLoss::compute(const LossInputs& inputs) const {
  auto [s, t] = features(inputs);
  for (const auto& [student, map] : {std::pair<bool, const torch::Tensor&>{true, s}, {false, t}}) {
    if (map.dim() != 4 || map.size(2) != map.size(3)) {
      fail("loss \"attention_map\": {} is not an attention map [N, heads, L, L] (tap a transformer layer's "
           "attention, e.g. layer1.attention)", tap_text(student, map));
    }
  }
  if (s.size(2) != t.size(2)) {
    fail("loss \"attention_map\": {} and {} attend over different lengths; both models must read the same tokens",
         tap_text(true, s), tap_text(false, t));
  }
  if (options_.word("heads") == "mean" || s.size(1) != t.size(1)) {
    s = s.mean(1, /*keepdim=*/true);
    t = t.mean(1, /*keepdim=*/true);
  }
  // A query position holds a token when some query attends to it as a key.
  torch::Tensor tokens = t.amax(2).gt(0).to(s.scalar_type());  // [N, H, L]
  torch::Tensor rows;                                            // [N, H, L]: one value per query
  if (options_.word("measure") == "kl") {
    // The smallest positive float keeps log s finite where the teacher's weight is positive.
    torch::Tensor tiny_s = s.clamp_min(std::numeric_limits<float>::min());
    rows = (torch::xlogy(t, t) - torch::xlogy(t, tiny_s)).sum(3);
  } else {
    rows = (s - t).pow(2).mean(3);
  }
  return (rows * tokens).sum() / tokens.sum().clamp_min(1);
}

}  // namespace kd::losses
