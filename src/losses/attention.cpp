#include "kd/losses/attention.h"

#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::losses {

torch::Tensor AttentionLoss::compute(const LossInputs& inputs) const {
  auto [s, t] = features(inputs);
  if (s.dim() != 4) fail("loss \"attention\": {} is not a feature map [N, C, H, W]", tap_text(true, s));
  if (t.dim() != 4) fail("loss \"attention\": {} is not a feature map [N, C, H, W]", tap_text(false, t));
  const double p = options_.number("p");
  auto map_of = [p](const torch::Tensor& f) { return f.abs().pow(p).mean(1, /*keepdim=*/true); };
  auto [a_s, a_t] = detail::same_spatial_size(map_of(s), map_of(t));
  auto unit = [](const torch::Tensor& a) {
    torch::Tensor flat = a.flatten(1);
    return flat / flat.norm(2, 1, /*keepdim=*/true).clamp_min(1e-12);
  };
  return (unit(a_s) - unit(a_t)).pow(2).mean();
}

}  // namespace kd::losses
