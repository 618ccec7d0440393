#include "kd/util/progress.h"

#include <gtest/gtest.h>

namespace kd {
namespace {

TEST(Progress, LineShowsBarRateAndTimeLeft) {
  // 50 of 200 steps in 10 s: 5 steps/s, 150 steps left -> 30 s; a quarter of the 20-character bar.
  EXPECT_EQ(Progress::line("student", 50, 200, "steps", 10.0),
            "student [#####...............] 50/200 steps  5.0 steps/s  ETA 30s");
  // 1 of 10,000 in 2 s: 9,999 steps at 0.5 steps/s = 19,998 s = 5 h 33 min.
  EXPECT_EQ(Progress::line("t", 1, 10000, "steps", 2.0), "t [....................] 1/10000 steps  0.5 steps/s  ETA 5h33m");
  EXPECT_EQ(Progress::line("t", 0, 10, "steps", 0.0), "t [....................] 0/10 steps  0.0 steps/s  ETA ?");
}

}  // namespace
}  // namespace kd
