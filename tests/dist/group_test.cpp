// dist::launch_from_environment and Group: the settings as torchrun gives them, their errors, and a
// group of one that needs no network.
#include "kd/dist/group.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "test_util.h"

namespace kd::dist {
namespace {

// Sets environment variables for one test and restores them after.
class Environment {
 public:
  Environment(std::initializer_list<std::pair<const char*, const char*>> values) {
    for (const auto& [name, value] : values) {
      const char* old = std::getenv(name);
      saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
      setenv(name, value, 1);
    }
  }
  ~Environment() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        setenv(name.c_str(), value->c_str(), 1);
      } else {
        unsetenv(name.c_str());
      }
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST(Launch, SettingsComeFromFlagsThenTheEnvironmentThenDefaults) {
  Environment none({{"RANK", ""}, {"WORLD_SIZE", ""}, {"MASTER_ADDR", ""}, {"MASTER_PORT", ""}, {"LOCAL_RANK", ""},
                    {"KD_DIST_TIMEOUT", ""}});
  LaunchOptions defaults = launch_from_environment({});
  EXPECT_EQ(defaults.rank(), 0);
  EXPECT_EQ(defaults.world_size(), 1);
  EXPECT_EQ(defaults.master_addr(), "127.0.0.1");
  EXPECT_EQ(defaults.master_port(), 29500);
  EXPECT_EQ(defaults.timeout_seconds(), 60.0);
  Environment torchrun({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "node0"}, {"MASTER_PORT", "1234"},
                        {"LOCAL_RANK", "1"}, {"KD_DIST_TIMEOUT", "5"}});
  LaunchOptions given = launch_from_environment({});
  EXPECT_EQ(given.rank(), 3);
  EXPECT_EQ(given.world_size(), 4);
  EXPECT_EQ(given.master_addr(), "node0");
  EXPECT_EQ(given.master_port(), 1234);
  EXPECT_EQ(given.local_rank(), 1);
  EXPECT_EQ(given.timeout_seconds(), 5.0);
  LaunchFlags flags;
  flags.rank = 0;
  flags.master_port = 4321;
  LaunchOptions flagged = launch_from_environment(flags);
  EXPECT_EQ(flagged.rank(), 0);
  EXPECT_EQ(flagged.master_port(), 4321);
  EXPECT_EQ(flagged.world_size(), 4);
}

TEST(Launch, BadSettingsAreNamed) {
  {
    Environment env({{"RANK", "2"}, {"WORLD_SIZE", "2"}});
    KD_EXPECT_ERROR(launch_from_environment({}),
                    "RANK (or --rank): 2 is not a rank of a group of 2 (WORLD_SIZE): expected 0 to 1");
  }
  {
    Environment env({{"RANK", "0"}, {"WORLD_SIZE", "two"}});
    KD_EXPECT_ERROR(launch_from_environment({}), "WORLD_SIZE (or --world-size): \"two\" is not a whole number");
  }
  {
    Environment env({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"MASTER_PORT", "70000"}});
    KD_EXPECT_ERROR(launch_from_environment({}), "MASTER_PORT (or --master-port): 70000 is not a TCP port (1 to 65535)");
  }
  {
    Environment env({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"MASTER_PORT", "29500"}, {"KD_DIST_TIMEOUT", "-1"}});
    KD_EXPECT_ERROR(launch_from_environment({}), "KD_DIST_TIMEOUT (or --dist-timeout): -1 is not a positive number of seconds");
  }
}

TEST(Group, OneProcessIsAGroupOfOneWithoutANetwork) {
  auto group = Group::connect(LaunchOptions());
  EXPECT_FALSE(group->distributed());
  EXPECT_TRUE(group->is_root());
  std::vector<torch::Tensor> t = {torch::ones({3})};
  group->all_reduce_sum(t);
  EXPECT_TRUE(torch::equal(t[0], torch::ones({3})));
  group->check_same("recipe", "x");
  EXPECT_EQ(group->all_gather_text("k", "v"), std::vector<std::string>{"v"});
}

TEST(Group, AnUnreachableMasterIsAnErrorWithinTheTimeout) {
  // Rank 1 of 2, with nobody serving the store: it gives up after the timeout, naming the setting.
  auto start = std::chrono::steady_clock::now();
  std::string message = test::error_of([] {
    Group::connect(LaunchOptions().rank(1).world_size(2).master_port(1).timeout_seconds(2));
  });
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(message.find("rank 1: cannot reach the group's store at 127.0.0.1:1 (MASTER_ADDR, MASTER_PORT) within 2 s"),
            std::string::npos) << message;
  EXPECT_LT(seconds, 10.0);
}

}  // namespace
}  // namespace kd::dist
