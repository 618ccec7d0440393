#include "kd/search/asha.h"

#include <algorithm>
#include <numeric>

#include "kd/util/error.h"

namespace kd::search {

namespace {

bool dominates(const Point& a, const Point& b) {
  return a.quality >= b.quality && a.size <= b.size && (a.quality > b.quality || a.size < b.size);
}

}  // namespace

std::vector<int64_t> pareto_ranks(const std::vector<Point>& points) {
  // Peel off fronts; n is at most a few hundred trials, so the quadratic sort is fine.
  std::vector<int64_t> rank(points.size(), -1);
  size_t assigned = 0;
  for (int64_t front = 0; assigned < points.size(); ++front) {
    std::vector<size_t> members;
    for (size_t i = 0; i < points.size(); ++i) {
      if (rank[i] >= 0) continue;
      bool beaten = false;
      for (size_t j = 0; j < points.size() && !beaten; ++j) beaten = rank[j] < 0 && dominates(points[j], points[i]);
      if (!beaten) members.push_back(i);
    }
    for (size_t i : members) rank[i] = front;
    assigned += members.size();
  }
  return rank;
}

std::vector<size_t> pareto_front(const std::vector<Point>& points) {
  auto ranks = pareto_ranks(points);
  std::vector<size_t> front;
  for (size_t i = 0; i < points.size(); ++i) {
    if (ranks[i] != 0) continue;
    bool duplicate = std::any_of(front.begin(), front.end(), [&](size_t j) {
      return points[j].quality == points[i].quality && points[j].size == points[i].size;
    });
    if (!duplicate) front.push_back(i);
  }
  std::sort(front.begin(), front.end(), [&](size_t a, size_t b) { return points[a].size < points[b].size; });
  return front;
}

Asha::Asha(std::vector<int64_t> rungs, int64_t eta) : rungs_(std::move(rungs)), eta_(eta) {
  KD_CHECK(eta_ >= 2, "Asha: eta {} is below 2", eta_);
}

std::vector<int64_t> Asha::rungs_for(int64_t min_epochs, int64_t max_epochs, int64_t eta) {
  std::vector<int64_t> rungs;
  for (int64_t r = min_epochs; r < max_epochs; r *= eta) rungs.push_back(r);
  return rungs;
}

bool Asha::is_rung(int64_t epoch) const { return std::find(rungs_.begin(), rungs_.end(), epoch) != rungs_.end(); }

bool Asha::report(int64_t epoch, int64_t trial, Point point) {
  auto& rung = points_[epoch];
  rung[trial] = point;
  std::vector<Point> points;
  std::vector<int64_t> trials;
  for (const auto& [t, p] : rung) {
    trials.push_back(t);
    points.push_back(p);
  }
  auto ranks = pareto_ranks(points);
  auto sorted = ranks;
  std::sort(sorted.begin(), sorted.end());
  size_t keep = std::max<size_t>(1, points.size() / static_cast<size_t>(eta_));
  size_t self = static_cast<size_t>(std::find(trials.begin(), trials.end(), trial) - trials.begin());
  return ranks[self] <= sorted[keep - 1];
}

}  // namespace kd::search
