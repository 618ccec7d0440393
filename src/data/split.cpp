#include "kd/data/split.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "kd/util/error.h"

namespace kd::data {

namespace {

// Rows grouped by class (one group when unstratified), each group shuffled with the seed.
std::vector<std::vector<int64_t>> shuffled_groups(int64_t count, const torch::Tensor& labels, uint64_t seed) {
  std::vector<std::vector<int64_t>> groups;
  bool stratified = labels.defined() && labels.scalar_type() == torch::kLong;
  if (stratified) {
    KD_CHECK(labels.numel() == count, "labels {} rows, expected {}", labels.numel(), count);
    auto values = labels.contiguous();
    const int64_t* y = values.data_ptr<int64_t>();
    int64_t classes = count == 0 ? 0 : *std::max_element(y, y + count) + 1;
    groups.resize(static_cast<size_t>(classes));
    for (int64_t i = 0; i < count; ++i) groups[static_cast<size_t>(y[i])].push_back(i);
  } else {
    groups.emplace_back(static_cast<size_t>(count));
    std::iota(groups[0].begin(), groups[0].end(), 0);
  }
  std::mt19937_64 generator(seed);
  for (auto& group : groups) std::shuffle(group.begin(), group.end(), generator);
  return groups;
}

// How many of each group to take so that the total is exactly `total` and each group gets
// its proportional share (largest remainder; ties go to the larger group, then the lower id).
std::vector<int64_t> allocate(const std::vector<std::vector<int64_t>>& groups, int64_t count, int64_t total) {
  std::vector<int64_t> take(groups.size());
  std::vector<std::pair<double, size_t>> remainders;
  int64_t assigned = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    double exact = count == 0 ? 0.0 : static_cast<double>(groups[g].size()) * total / count;
    take[g] = static_cast<int64_t>(std::floor(exact));
    assigned += take[g];
    remainders.emplace_back(exact - take[g], g);
  }
  std::stable_sort(remainders.begin(), remainders.end(), [&](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first > b.first;
    return groups[a.second].size() > groups[b.second].size();
  });
  for (size_t i = 0; assigned < total && i < remainders.size(); ++i, ++assigned) take[remainders[i].second]++;
  return take;
}

}  // namespace

Split holdout_split(int64_t count, const torch::Tensor& labels, double val_fraction, uint64_t seed) {
  if (!(val_fraction > 0.0 && val_fraction < 1.0)) {
    fail("data.val_fraction: {} is outside (0, 1)", val_fraction);
  }
  auto val_count = static_cast<int64_t>(std::llround(count * val_fraction));
  if (val_count < 1 || val_count >= count) {
    fail("data.val_fraction: {} of {} rows leaves {} for validation and {} for training; need at least 1 of each",
         val_fraction, count, val_count, count - val_count);
  }
  auto groups = shuffled_groups(count, labels, seed);
  auto take = allocate(groups, count, val_count);
  Split split;
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t i = 0; i < groups[g].size(); ++i) {
      (static_cast<int64_t>(i) < take[g] ? split.val : split.train).push_back(groups[g][i]);
    }
  }
  std::sort(split.train.begin(), split.train.end());
  std::sort(split.val.begin(), split.val.end());
  return split;
}

std::vector<Split> kfold_split(int64_t count, const torch::Tensor& labels, int64_t folds, uint64_t seed) {
  if (folds < 2) fail("data.folds: {} is too few, expected at least 2 (0, the default: one train/validation split)", folds);
  if (folds > count) fail("data.folds: {} folds for {} rows, expected at most one fold per row", folds, count);
  auto groups = shuffled_groups(count, labels, seed);
  // Deal each class round-robin, continuing where the previous class stopped, so fold
  // sizes differ by at most one and every class is spread evenly.
  std::vector<int64_t> fold_of(static_cast<size_t>(count));
  int64_t next = 0;
  for (const auto& group : groups) {
    for (int64_t row : group) {
      fold_of[static_cast<size_t>(row)] = next;
      next = (next + 1) % folds;
    }
  }
  std::vector<Split> splits(static_cast<size_t>(folds));
  for (int64_t row = 0; row < count; ++row) {
    for (int64_t f = 0; f < folds; ++f) {
      (fold_of[static_cast<size_t>(row)] == f ? splits[f].val : splits[f].train).push_back(row);
    }
  }
  return splits;
}

std::vector<int64_t> subsample(int64_t count, const torch::Tensor& labels, int64_t keep, uint64_t seed) {
  if (keep >= count) {
    std::vector<int64_t> all(static_cast<size_t>(count));
    std::iota(all.begin(), all.end(), 0);
    return all;
  }
  auto groups = shuffled_groups(count, labels, seed);
  auto take = allocate(groups, count, keep);
  std::vector<int64_t> rows;
  for (size_t g = 0; g < groups.size(); ++g) {
    rows.insert(rows.end(), groups[g].begin(), groups[g].begin() + take[g]);
  }
  std::sort(rows.begin(), rows.end());
  return rows;
}

torch::Tensor to_index(const std::vector<int64_t>& rows) {
  return torch::tensor(rows, torch::kLong);
}

}  // namespace kd::data
