#include "kd/data/normalize.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::data {

void validate(const NormalizeOptions& options) {
  const std::vector<std::string> modes = {"standard", "minmax", "none"};
  const std::vector<std::string> scopes = {"auto", "feature", "channel", "global"};
  if (std::find(modes.begin(), modes.end(), options.mode()) == modes.end()) {
    fail("data.normalize: {} is not a mode, expected standard, minmax or none", quote(options.mode()));
  }
  if (std::find(scopes.begin(), scopes.end(), options.scope()) == scopes.end()) {
    fail("data.normalize_scope: {} is not a scope, expected auto, feature, channel or global", quote(options.scope()));
  }
}

namespace {

// Mean and (biased) standard deviation over `dims` (which include 0), in double precision, a block
// of rows at a time (Chan et al.'s pairwise merge): no double copy of the whole training set.
std::pair<torch::Tensor, torch::Tensor> mean_and_std(const torch::Tensor& x, const std::vector<int64_t>& dims) {
  const int64_t block = 4096;
  torch::Tensor mean, m2;
  double count = 0;
  for (int64_t start = 0; start < x.size(0); start += block) {
    torch::Tensor part = x.slice(0, start, std::min(start + block, x.size(0))).to(torch::kDouble);
    torch::Tensor part_mean = part.mean(dims, /*keepdim=*/true);
    double n = static_cast<double>(part.numel()) / static_cast<double>(part_mean.numel());
    torch::Tensor part_m2 = (part - part_mean).square().sum(dims, /*keepdim=*/true);
    if (!mean.defined()) {
      mean = part_mean;
      m2 = part_m2;
    } else {
      torch::Tensor delta = part_mean - mean;
      double total = count + n;
      mean = mean + delta * (n / total);
      m2 = m2 + part_m2 + delta.square() * (count * n / total);
    }
    count += n;
  }
  return {mean, (m2 / count).sqrt()};
}

}  // namespace

Normalizer Normalizer::fit(const torch::Tensor& train_x, const NormalizeOptions& options) {
  validate(options);
  Normalizer normalizer;
  normalizer.mode_ = options.mode();
  normalizer.scope_ = options.scope();
  if (normalizer.scope_ == "auto") normalizer.scope_ = train_x.dim() == 4 ? "channel" : "feature";
  if (options.mode() == "none") return normalizer;
  if (train_x.size(0) == 0) fail("data: cannot fit normalisation on an empty training set");
  const torch::Tensor& x = train_x;
  std::vector<int64_t> dims;
  if (normalizer.scope_ == "feature") {
    dims = {0};
  } else if (normalizer.scope_ == "channel") {
    if (x.dim() != 4) fail("data.normalize_scope: channel needs images [N, C, H, W], found {} dims", x.dim());
    dims = {0, 2, 3};
  } else {
    for (int64_t d = 0; d < x.dim(); ++d) dims.push_back(d);
  }
  torch::Tensor shift, scale;
  if (options.mode() == "standard") {
    std::tie(shift, scale) = mean_and_std(x, dims);
  } else {
    shift = x.amin(dims, true).to(torch::kDouble);
    scale = x.amax(dims, true).to(torch::kDouble) - shift;
  }
  // A constant feature carries no information; leave it centred rather than divide by zero.
  scale = torch::where(scale > 1e-12, scale, torch::ones_like(scale));
  normalizer.shift_ = shift.squeeze(0).to(torch::kFloat);
  normalizer.scale_ = scale.squeeze(0).to(torch::kFloat);
  if (normalizer.scope_ == "global") {
    normalizer.shift_ = normalizer.shift_.reshape({});
    normalizer.scale_ = normalizer.scale_.reshape({});
  }
  return normalizer;
}

torch::Tensor Normalizer::apply(const torch::Tensor& x) const {
  if (identity()) return x;
  return (x - shift_.to(x.device())) / scale_.to(x.device());
}

void Normalizer::apply_(torch::Tensor& x) const {
  if (identity()) return;
  x.sub_(shift_.to(x.device())).div_(scale_.to(x.device()));
}

torch::Tensor Normalizer::invert(const torch::Tensor& x) const {
  if (identity()) return x;
  return x * scale_.to(x.device()) + shift_.to(x.device());
}

namespace {
nlohmann::json tensor_to_json(const torch::Tensor& t) {
  auto flat = t.contiguous().to(torch::kDouble);
  return {{"shape", t.sizes().vec()},
          {"values", std::vector<double>(flat.data_ptr<double>(), flat.data_ptr<double>() + flat.numel())}};
}
torch::Tensor tensor_from_json(const nlohmann::json& json) {
  auto values = json.at("values").get<std::vector<double>>();
  auto shape = json.at("shape").get<std::vector<int64_t>>();
  return torch::tensor(values, torch::kDouble).reshape(shape).to(torch::kFloat);
}
}  // namespace

nlohmann::json Normalizer::to_json() const {
  nlohmann::json json = {{"mode", mode_}, {"scope", scope_}};
  if (!identity()) {
    json["shift"] = tensor_to_json(shift_);
    json["scale"] = tensor_to_json(scale_);
  }
  return json;
}

Normalizer Normalizer::from_json(const nlohmann::json& json) {
  Normalizer normalizer;
  normalizer.mode_ = json.at("mode").get<std::string>();
  normalizer.scope_ = json.value("scope", "feature");
  if (!normalizer.identity()) {
    normalizer.shift_ = tensor_from_json(json.at("shift"));
    normalizer.scale_ = tensor_from_json(json.at("scale"));
  }
  return normalizer;
}

}  // namespace kd::data
