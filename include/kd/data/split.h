// Train/validation partitions: holdout and K-fold, stratified by class for
// classification, deterministic for a given seed.
//
//   labels: int64 [N] class ids (stratified) or an undefined/float tensor (plain shuffle)
//   holdout_split(labels, 0.1, 7)  -> {train: 90% of rows, val: 10%}, each class in proportion
//   kfold_split(labels, 5, 7)      -> 5 splits; every row is in exactly one val fold
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace kd::data {

struct Split {
  std::vector<int64_t> train;  // row indices, ascending
  std::vector<int64_t> val;    // row indices, ascending
};

// Rows 0..count-1 split so that round(count * val_fraction) go to val.
// Stratified when `labels` is an int64 tensor of class ids (largest-remainder allocation
// per class, so the total is exact and each class keeps its proportion).
Split holdout_split(int64_t count, const torch::Tensor& labels, double val_fraction, uint64_t seed);

// K folds; fold sizes differ by at most one; stratified as above.
std::vector<Split> kfold_split(int64_t count, const torch::Tensor& labels, int64_t folds, uint64_t seed);

// A seeded random subset of `count` rows of size `keep`, stratified like holdout_split, ascending.
std::vector<int64_t> subsample(int64_t count, const torch::Tensor& labels, int64_t keep, uint64_t seed);

// rows as an int64 tensor, for index_select.
torch::Tensor to_index(const std::vector<int64_t>& rows);

}  // namespace kd::data
