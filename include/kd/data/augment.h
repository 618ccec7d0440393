// Augmentation as a data stage. A view of a row is a function of (seed, view, row) only: view v of
// row r is the same image whatever batch it lands in, so one teacher pass can compute the teacher's
// outputs for view v of every row (the soft-label bank, kd/teacher/teacher_cache.h) and a student
// trained on view v later sees exactly the inputs those outputs belong to.
//
// Per row (bank or live teacher):
//   images [N, C, H, W]: shift by up to `shift` pixels each way (the uncovered border takes the
//   channel's background), horizontal flip (opt-in: not every data set is mirror-symmetric), cutout
//   (a square of side `cutout` at a random centre set to the background);
//   any rows: Gaussian noise of `noise` times each feature's standard deviation, and feature dropout
//   (each value replaced by its feature's mean with probability `feature_dropout`).
// Per batch (a live teacher only: a bank cannot hold every mixture):
//   mixup (each row mixed with a partner row of the same batch, weight lambda ~ Beta(a, a)) and cutmix
//   (a box of the partner pasted in; lambda = the area kept). With both, each batch takes one of them.
//
// The background of an image channel is its smallest value over the training rows (black in the
// raw image: after normalisation, zero padding would paint a grey frame); a feature's mean and
// standard deviation are over the training rows too.
//
//   Augmenter augmenter(AugmentOptions().shift(2), train_x, /*seed=*/0);
//   torch::Tensor xb = augmenter.view(batch_x, batch_rows, /*view=*/epoch % views);
//   auto mixed = augmenter.mix(xb, epoch, batch_index);  // when options.mixes()
#pragma once

#include <torch/arg.h>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace kd::data {

struct AugmentOptions {
  TORCH_ARG(int64_t, shift) = 0;            // images: largest shift in pixels, each way
  TORCH_ARG(bool, flip) = false;            // images: horizontal flip with probability 1/2
  TORCH_ARG(int64_t, cutout) = 0;           // images: side of the square set to the background; 0 = off
  TORCH_ARG(double, noise) = 0.0;           // Gaussian noise, in standard deviations of each feature
  TORCH_ARG(double, feature_dropout) = 0.0; // probability that a value is replaced by its feature's mean
  TORCH_ARG(double, mixup) = 0.0;           // Beta(a, a) of mixup; 0 = off
  TORCH_ARG(double, cutmix) = 0.0;          // Beta(a, a) of cutmix (images); 0 = off

 public:
  bool per_row() const { return shift_ > 0 || flip_ || cutout_ > 0 || noise_ > 0 || feature_dropout_ > 0; }
  bool mixes() const { return mixup_ > 0 || cutmix_ > 0; }
  bool any() const { return per_row() || mixes(); }
  // "shift 2, flip, mixup 0.2"; "none" when off.
  std::string describe() const;
};

// kd::Error naming `field` (e.g. distill.augment.shift) for a negative size, a probability outside
// [0, 1), or an image operation on rows that are not images (`input_shape`: one example's shape).
void validate(const AugmentOptions& options, const std::vector<int64_t>& input_shape, const std::string& field);

class Augmenter {
 public:
  // `train_x`: float32 [N, ...] training rows, for the image backgrounds and the features' spread.
  // `categorical`: per feature, whether it encodes a category (a table's one-hot or index columns):
  // noise and feature dropout leave those as they are (empty: every feature is numeric).
  Augmenter(AugmentOptions options, const torch::Tensor& train_x, uint64_t seed, const std::vector<bool>& categorical = {});

  const AugmentOptions& options() const { return options_; }

  // View `view` of rows `x` (float32 [B, ...]) whose indices among the training rows are `rows`
  // (int64 [B]). A new tensor; `x` is returned as it is when no per-row operation is on.
  torch::Tensor view(const torch::Tensor& x, const torch::Tensor& rows, int64_t view) const;

  // Mixup or cutmix of a batch: x = lambda * x + (1 - lambda) * x[partner] (cutmix: inside a box).
  // Loss terms are then lambda * term(labels) + (1 - lambda) * term(labels[partner]).
  struct Mixed {
    torch::Tensor x;
    torch::Tensor partner;  // int64 [B]: the row each row is mixed with
    double lambda = 1.0;    // weight of the row's own label
  };
  // Depends on (seed, epoch, batch) only. lambda = 1 and the batch unchanged when mixing is off.
  Mixed mix(const torch::Tensor& x, int64_t epoch, int64_t batch) const;

 private:
  AugmentOptions options_;
  uint64_t seed_;
  std::vector<float> background_;  // per image channel
  std::vector<float> mean_, sd_;   // per feature (flattened example); sd 0 for a categorical one
  std::vector<bool> numeric_;      // per feature: noise and feature dropout change it
};

}  // namespace kd::data
