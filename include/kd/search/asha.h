// Multi-fidelity pruning for the search: asynchronous successive halving (ASHA, Li et al. 2020)
// with rungs at min_epochs * eta^k epochs. A trial goes on past a rung when it ranks in the top
// 1/eta of the trials that reached that rung. Ranks are Pareto ranks in (quality, size), as in
// multi-objective ASHA (Schmucker et al. 2021), so that a small student that is not yet the most
// accurate is not pruned for being small: the search looks for the smallest student that is good
// enough, not only the most accurate one.
//
//   Asha asha(Asha::rungs_for(1, 10, 3), 3);    // rungs at epochs 1, 3, 9
//   if (asha.is_rung(epoch) && !asha.report(epoch, trial, val_accuracy, params)) stop();
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

namespace kd::search {

// A measured trial: quality (higher is better) and size (smaller is better).
struct Point {
  double quality = 0.0;
  double size = 0.0;
};

// Non-dominated sorting: 0 for the points no other point beats in both, 1 for the next front, ...
// A point dominates another when it is at least as good in both and better in one.
std::vector<int64_t> pareto_ranks(const std::vector<Point>& points);

// Indices of the rank-0 points, by increasing size (equal points: the first one only).
std::vector<size_t> pareto_front(const std::vector<Point>& points);

class Asha {
 public:
  Asha(std::vector<int64_t> rungs, int64_t eta);
  // min_epochs, min_epochs * eta, ... below max_epochs.
  static std::vector<int64_t> rungs_for(int64_t min_epochs, int64_t max_epochs, int64_t eta);

  bool is_rung(int64_t epoch) const;
  // Records the trial's point at the rung `epoch` and says whether it goes on: its Pareto rank
  // among the rung's points is at most the rank of the k-th best, k = max(1, n / eta).
  bool report(int64_t epoch, int64_t trial, Point point);
  const std::vector<int64_t>& rungs() const { return rungs_; }

 private:
  std::vector<int64_t> rungs_;
  int64_t eta_;
  std::map<int64_t, std::map<int64_t, Point>> points_;  // rung epoch -> trial -> point
};

}  // namespace kd::search
