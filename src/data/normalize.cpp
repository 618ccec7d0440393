#include "kd/data/normalize.h"

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

Normalizer Normalizer::fit(const torch::Tensor& train_x, const NormalizeOptions& options) {
  validate(options);
  Normalizer normalizer;
  normalizer.mode_ = options.mode();
  normalizer.scope_ = options.scope();
  if (normalizer.scope_ == "auto") normalizer.scope_ = train_x.dim() == 4 ? "channel" : "feature";
  if (options.mode() == "none") return normalizer;
  if (train_x.size(0) == 0) fail("data: cannot fit normalisation on an empty training set");
  auto x = train_x.to(torch::kDouble);
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
    shift = x.mean(dims, /*keepdim=*/true);
    scale = x.std(dims, /*unbiased=*/false, /*keepdim=*/true);
  } else {
    shift = x.amin(dims, true);
    scale = x.amax(dims, true) - shift;
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
