// Stop signals: the first Ctrl-C or SIGTERM sets the flag training reads; a second ends the process at
// once with 128 + its number. Each case runs in a child process (a gtest death test).
#include "kd/util/process.h"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>

namespace kd {
namespace {

TEST(StopSignals, TheFirstSetsTheFlag) {
  EXPECT_EXIT(
      {
        install_stop_handlers();
        if (stop_signal() != 0) std::_Exit(1);
        std::raise(SIGTERM);
        std::_Exit(stop_signal() == SIGTERM ? 42 : 1);
      },
      ::testing::ExitedWithCode(42), "");
}

TEST(StopSignals, ASecondEndsTheProcessAtOnce) {
  EXPECT_EXIT(
      {
        install_stop_handlers();
        std::raise(SIGINT);
        std::raise(SIGINT);
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(130), "");
}

}  // namespace
}  // namespace kd
