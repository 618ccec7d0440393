// Pareto ranks and fronts, and the multi-objective successive-halving pruner.
#include <gtest/gtest.h>

#include "kd/search/asha.h"

namespace kd::test {
namespace {

using search::Asha;
using search::Point;

TEST(Pareto, RanksPeelFrontsOff) {
  // quality (higher better), size (smaller better)
  std::vector<Point> points = {{90, 100}, {80, 10}, {85, 200}, {70, 50}, {90, 100}, {60, 5}};
  // Front 0: (90,100) twice, (80,10), (60,5). (85,200) is beaten by (90,100); (70,50) by (80,10).
  EXPECT_EQ(search::pareto_ranks(points), (std::vector<int64_t>{0, 0, 1, 1, 0, 0}));
  // By increasing size, the duplicate listed once.
  EXPECT_EQ(search::pareto_front(points), (std::vector<size_t>{5, 1, 0}));
}

TEST(Pareto, ThirdFrontAndEmptyInput) {
  std::vector<Point> chain = {{3, 3}, {2, 4}, {1, 5}};  // each beaten by the one before
  EXPECT_EQ(search::pareto_ranks(chain), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_TRUE(search::pareto_front({}).empty());
}

TEST(Asha, RungsGrowByEtaBelowTheLastEpoch) {
  EXPECT_EQ(Asha::rungs_for(1, 10, 3), (std::vector<int64_t>{1, 3, 9}));
  EXPECT_EQ(Asha::rungs_for(2, 20, 2), (std::vector<int64_t>{2, 4, 8, 16}));
  EXPECT_TRUE(Asha::rungs_for(5, 5, 3).empty());
}

TEST(Asha, PromotesTheParetoBestThirdAndSpareSmallStudents) {
  Asha asha({1, 3}, 3);
  EXPECT_TRUE(asha.is_rung(3));
  EXPECT_FALSE(asha.is_rung(2));
  EXPECT_TRUE(asha.report(1, 0, {80, 1000}));   // alone: goes on
  EXPECT_FALSE(asha.report(1, 1, {70, 2000}));  // worse and larger than trial 0
  EXPECT_TRUE(asha.report(1, 2, {60, 100}));    // worse but smaller: on the front, goes on
  EXPECT_FALSE(asha.report(1, 3, {65, 1500}));  // beaten by trial 0
  // Five points, top 5/3 = 1: trial 4 is beaten. Six points, top 2: trial 5 beats trial 0 and is on the front.
  EXPECT_FALSE(asha.report(1, 4, {50, 3000}));
  EXPECT_TRUE(asha.report(1, 5, {95, 900}));
  // Rungs are separate.
  EXPECT_TRUE(asha.report(3, 1, {10, 5000}));
}

}  // namespace
}  // namespace kd::test
