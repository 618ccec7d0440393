#include "kd/data/augment.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::data {

namespace {

// SplitMix64 (Steele et al. 2014): a counter-based hash, so that a row's view needs no generator
// state and any (seed, view, row) can be drawn alone, in any order and on any thread.
uint64_t splitmix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

uint64_t key_of(uint64_t seed, int64_t view, int64_t row) {
  return splitmix(splitmix(splitmix(seed) ^ static_cast<uint64_t>(view)) ^ static_cast<uint64_t>(row));
}

// A uniform in (0, 1) from 53 bits of a hash.
double uniform_of(uint64_t bits) { return (static_cast<double>(bits >> 11) + 0.5) * 0x1.0p-53; }

bool is_image(const std::vector<int64_t>& shape) { return shape.size() == 3; }

}  // namespace

std::string AugmentOptions::describe() const {
  std::vector<std::string> parts;
  if (shift_ > 0) parts.push_back(fmt::format("shift {}", shift_));
  if (flip_) parts.push_back("flip");
  if (cutout_ > 0) parts.push_back(fmt::format("cutout {}", cutout_));
  if (noise_ > 0) parts.push_back(fmt::format("noise {:g}", noise_));
  if (feature_dropout_ > 0) parts.push_back(fmt::format("feature_dropout {:g}", feature_dropout_));
  if (mixup_ > 0) parts.push_back(fmt::format("mixup {:g}", mixup_));
  if (cutmix_ > 0) parts.push_back(fmt::format("cutmix {:g}", cutmix_));
  return parts.empty() ? "none" : join(parts, ", ");
}

void validate(const AugmentOptions& options, const std::vector<int64_t>& input_shape, const std::string& field) {
  if (options.shift() < 0) fail("{}.shift: {} is negative", field, options.shift());
  if (options.cutout() < 0) fail("{}.cutout: {} is negative", field, options.cutout());
  if (!(options.noise() >= 0)) fail("{}.noise: {} is negative", field, options.noise());
  if (!(options.feature_dropout() >= 0 && options.feature_dropout() < 1)) {
    fail("{}.feature_dropout: {} is not a probability in [0, 1)", field, options.feature_dropout());
  }
  if (!(options.mixup() >= 0)) fail("{}.mixup: {} is negative (the Beta distribution's parameter)", field, options.mixup());
  if (!(options.cutmix() >= 0)) fail("{}.cutmix: {} is negative (the Beta distribution's parameter)", field, options.cutmix());
  if (input_shape.empty()) return;
  bool images = is_image(input_shape);
  std::string shape = fmt::format("[{}]", fmt::join(input_shape, ", "));
  for (const auto& [name, on] : {std::pair<const char*, bool>{"shift", options.shift() > 0}, {"flip", options.flip()},
                                 {"cutout", options.cutout() > 0}, {"cutmix", options.cutmix() > 0}}) {
    if (on && !images) fail("{}.{}: needs images [C, H, W]; the rows here are {}", field, name, shape);
  }
  if (images && options.shift() >= std::min(input_shape[1], input_shape[2])) {
    fail("{}.shift: {} pixels is not less than the image's side ({})", field, options.shift(),
         std::min(input_shape[1], input_shape[2]));
  }
}

Augmenter::Augmenter(AugmentOptions options, const torch::Tensor& train_x, uint64_t seed,
                     const std::vector<bool>& categorical)
    : options_(options), seed_(seed) {
  if (!options_.any()) return;
  KD_CHECK(train_x.defined() && train_x.dim() >= 2 && train_x.size(0) > 0, "Augmenter needs training rows");
  torch::NoGradGuard no_grad;
  auto x = train_x.to(torch::kFloat);
  if (x.dim() == 4) {
    auto minimum = x.transpose(0, 1).reshape({x.size(1), -1}).amin(1).contiguous();
    background_.assign(minimum.data_ptr<float>(), minimum.data_ptr<float>() + minimum.numel());
  }
  if (options_.noise() > 0 || options_.feature_dropout() > 0) {
    auto flat = x.reshape({x.size(0), -1});
    auto mean = flat.mean(0).contiguous();
    auto sd = flat.std(0, /*unbiased=*/false).contiguous();
    mean_.assign(mean.data_ptr<float>(), mean.data_ptr<float>() + mean.numel());
    sd_.assign(sd.data_ptr<float>(), sd.data_ptr<float>() + sd.numel());
    KD_CHECK(categorical.empty() || categorical.size() == sd_.size(), "Augmenter: {} categorical flags for {} features",
             categorical.size(), sd_.size());
    numeric_.assign(sd_.size(), true);
    for (size_t j = 0; j < categorical.size(); ++j) {
      numeric_[j] = !categorical[j];
      if (categorical[j]) sd_[j] = 0.0F;
    }
  }
}

torch::Tensor Augmenter::view(const torch::Tensor& x, const torch::Tensor& rows, int64_t view) const {
  if (!options_.per_row()) return x;
  KD_CHECK(x.scalar_type() == torch::kFloat && rows.scalar_type() == torch::kLong && rows.size(0) == x.size(0),
           "Augmenter::view: float32 rows and int64 indices of the same count");
  auto in = x.contiguous();
  auto out = torch::empty_like(in);
  auto index = rows.contiguous();
  const int64_t* row_of = index.data_ptr<int64_t>();
  const float* from = in.data_ptr<float>();
  float* to = out.data_ptr<float>();
  const int64_t n = in.size(0), per_row = in.numel() / std::max<int64_t>(1, n);
  const bool images = in.dim() == 4;
  const int64_t channels = images ? in.size(1) : 0, h = images ? in.size(2) : 0, w = images ? in.size(3) : 0;
  const AugmentOptions& o = options_;
  if (!images) KD_CHECK(o.shift() == 0 && !o.flip() && o.cutout() == 0, "image augmentation of rows of {} dims", in.dim());

  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint64_t key = key_of(seed_, view, row_of[i]);
      const float* src = from + i * per_row;
      float* dst = to + i * per_row;
      if (images) {
        const int64_t span = 2 * o.shift() + 1;
        const int64_t dy = o.shift() > 0 ? static_cast<int64_t>(key % static_cast<uint64_t>(span)) - o.shift() : 0;
        const int64_t dx = o.shift() > 0 ? static_cast<int64_t>((key >> 12) % static_cast<uint64_t>(span)) - o.shift() : 0;
        const bool flip = o.flip() && ((key >> 24) & 1) != 0;
        const uint64_t place = splitmix(key);
        const int64_t cy = static_cast<int64_t>(place % static_cast<uint64_t>(h));
        const int64_t cx = static_cast<int64_t>((place >> 32) % static_cast<uint64_t>(w));
        const int64_t y0 = cy - o.cutout() / 2, x0 = cx - o.cutout() / 2;
        for (int64_t c = 0; c < channels; ++c) {
          const float fill = background_[static_cast<size_t>(c)];
          const float* plane = src + c * h * w;
          float* target = dst + c * h * w;
          for (int64_t y = 0; y < h; ++y) {
            const int64_t sy = y - dy;
            for (int64_t xx = 0; xx < w; ++xx) {
              // out(y, x) = flipped(y - dy, x - dx), flipped(y, x) = in(y, w - 1 - x)
              const int64_t sx = xx - dx;
              bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
              bool cut = o.cutout() > 0 && y >= y0 && y < y0 + o.cutout() && xx >= x0 && xx < x0 + o.cutout();
              target[y * w + xx] = inside && !cut ? plane[sy * w + (flip ? w - 1 - sx : sx)] : fill;
            }
          }
        }
      } else {
        std::copy(src, src + per_row, dst);
      }
      if (o.noise() > 0) {
        // The row's own generator, seeded by its (seed, view, row) key: ATen's vectorised normal
        // fill instead of a Box-Muller pair of hashes and three transcendentals per value.
        auto generator = at::make_generator<at::CPUGeneratorImpl>(splitmix(key ^ 0x6E6F697365ULL));
        auto z = torch::empty({per_row}, torch::kFloat);
        z.normal_(0.0, 1.0, generator);
        const float* normal = z.data_ptr<float>();
        const auto scale = static_cast<float>(o.noise());
        for (int64_t j = 0; j < per_row; ++j) dst[j] += scale * sd_[static_cast<size_t>(j)] * normal[j];
      }
      if (o.feature_dropout() > 0) {
        for (int64_t j = 0; j < per_row; ++j) {
          const uint64_t a = splitmix(key ^ (static_cast<uint64_t>(j) * 0xD1B54A32D192ED03ULL));
          if (numeric_[static_cast<size_t>(j)] && uniform_of(a) < o.feature_dropout()) dst[j] = mean_[static_cast<size_t>(j)];
        }
      }
    }
  });
  return out;
}

Augmenter::Mixed Augmenter::mix(const torch::Tensor& x, int64_t epoch, int64_t batch) const {
  Mixed m{x, torch::arange(x.size(0), torch::kLong), 1.0};
  if (!options_.mixes() || x.size(0) < 2) return m;
  std::mt19937_64 random(key_of(seed_ ^ 0x6D6978ULL, epoch, batch));
  bool use_cutmix = options_.cutmix() > 0 && x.dim() == 4 &&
                    (options_.mixup() <= 0 || std::uniform_int_distribution<int>(0, 1)(random) == 1);
  double a = use_cutmix ? options_.cutmix() : options_.mixup();
  // Beta(a, a) as G1 / (G1 + G2) of two Gamma(a) draws.
  std::gamma_distribution<double> gamma(a, 1.0);
  double g1 = gamma(random), g2 = gamma(random);
  double lambda = g1 + g2 > 0 ? g1 / (g1 + g2) : 0.5;
  auto generator = at::make_generator<at::CPUGeneratorImpl>(random());
  m.partner = torch::randperm(x.size(0), generator, torch::TensorOptions().dtype(torch::kLong));
  auto other = x.index_select(0, m.partner);
  if (!use_cutmix) {
    m.x = x * lambda + other * (1.0 - lambda);
    m.lambda = lambda;
    return m;
  }
  // A box of area (1 - lambda) of the image at a uniform centre, clipped to the image; lambda is
  // then the area actually kept.
  int64_t h = x.size(2), w = x.size(3);
  double side = std::sqrt(1.0 - lambda);
  auto cut_h = static_cast<int64_t>(std::round(h * side)), cut_w = static_cast<int64_t>(std::round(w * side));
  int64_t cy = std::uniform_int_distribution<int64_t>(0, h - 1)(random);
  int64_t cx = std::uniform_int_distribution<int64_t>(0, w - 1)(random);
  int64_t y0 = std::clamp<int64_t>(cy - cut_h / 2, 0, h), y1 = std::clamp<int64_t>(cy + cut_h - cut_h / 2, 0, h);
  int64_t x0 = std::clamp<int64_t>(cx - cut_w / 2, 0, w), x1 = std::clamp<int64_t>(cx + cut_w - cut_w / 2, 0, w);
  m.x = x.clone();
  if (y1 > y0 && x1 > x0) {
    m.x.narrow(2, y0, y1 - y0).narrow(3, x0, x1 - x0).copy_(other.narrow(2, y0, y1 - y0).narrow(3, x0, x1 - x0));
  }
  m.lambda = 1.0 - static_cast<double>((y1 - y0) * (x1 - x0)) / static_cast<double>(h * w);
  return m;
}

}  // namespace kd::data
