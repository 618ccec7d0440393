#include "kd/dist/group.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::dist {
namespace {

using Clock = std::chrono::steady_clock;

// Each rank stamps the store this often; a stamp that stops moving is a lost rank.
constexpr int64_t kBeatMilliseconds = 400;

std::optional<std::string> environment(const char* name) {
  const char* value = std::getenv(name);
  if (!value || !*value) return std::nullopt;
  return std::string(value);
}

int64_t integer_setting(const std::optional<int64_t>& flag, const char* variable, const char* flag_name,
                        int64_t fallback) {
  if (flag) return *flag;
  auto text = environment(variable);
  if (!text) return fallback;
  try {
    size_t used = 0;
    int64_t value = std::stoll(*text, &used);
    if (used == text->size()) return value;
  } catch (const std::exception&) {
  }
  fail("{} (or {}): {} is not a whole number", variable, flag_name, quote(*text));
}

int64_t milliseconds(double seconds) { return static_cast<int64_t>(seconds * 1000.0); }

std::string message_of(const std::exception& e) { return first_line(e); }

}  // namespace

LaunchOptions launch_from_environment(const LaunchFlags& flags) {
  LaunchOptions options;
  options.world_size(integer_setting(flags.world_size, "WORLD_SIZE", "--world-size", 1));
  options.rank(integer_setting(flags.rank, "RANK", "--rank", 0));
  options.local_rank(integer_setting(flags.local_rank, "LOCAL_RANK", "--local-rank", options.rank()));
  options.master_port(integer_setting(flags.master_port, "MASTER_PORT", "--master-port", 29500));
  options.master_addr(flags.master_addr ? *flags.master_addr : environment("MASTER_ADDR").value_or("127.0.0.1"));
  if (flags.timeout_seconds) {
    options.timeout_seconds(*flags.timeout_seconds);
  } else if (auto text = environment("KD_DIST_TIMEOUT")) {
    try {
      options.timeout_seconds(std::stod(*text));
    } catch (const std::exception&) {
      fail("KD_DIST_TIMEOUT (or --dist-timeout): {} is not a number of seconds", quote(*text));
    }
  }
  if (options.world_size() < 1) fail("WORLD_SIZE (or --world-size): {} is not a number of processes >= 1", options.world_size());
  if (options.rank() < 0 || options.rank() >= options.world_size()) {
    fail("RANK (or --rank): {} is not a rank of a group of {} (WORLD_SIZE): expected 0 to {}", options.rank(),
         options.world_size(), options.world_size() - 1);
  }
  if (options.master_port() < 1 || options.master_port() > 65535) {
    fail("MASTER_PORT (or --master-port): {} is not a TCP port (1 to 65535)", options.master_port());
  }
  if (options.master_addr().empty()) fail("MASTER_ADDR (or --master-addr): empty, expected a host name or address");
  if (!(options.timeout_seconds() > 0)) {
    fail("KD_DIST_TIMEOUT (or --dist-timeout): {} is not a positive number of seconds", options.timeout_seconds());
  }
  return options;
}

struct Group::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  // A heartbeat on a connection of its own: when a collective fails, the ranks whose beat stopped are
  // the ones lost.
  c10::intrusive_ptr<c10d::TCPStore> beat_store;
  std::thread beat;
  std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
  int64_t gathers = 0;

  // The ranks whose heartbeat stopped: their stamps, read twice a few beats apart, did not move; {0}
  // when the store no longer answers.
  std::vector<int64_t> lost(int64_t world, int64_t self) {
    std::vector<int64_t> out;
    try {
      auto stamps = [&] {
        std::vector<std::string> values;
        for (int64_t r = 0; r < world; ++r) {
          auto bytes = store->get("kd/alive/" + std::to_string(r));
          values.emplace_back(bytes.begin(), bytes.end());
        }
        return values;
      };
      auto before = stamps();
      std::this_thread::sleep_for(std::chrono::milliseconds(3 * kBeatMilliseconds));
      auto after = stamps();
      for (int64_t r = 0; r < world; ++r) {
        if (r != self && before[static_cast<size_t>(r)] == after[static_cast<size_t>(r)]) out.push_back(r);
      }
    } catch (const std::exception&) {
      return {0};
    }
    return out;
  }

  std::string lost_ranks(int64_t world, int64_t self) {
    std::vector<int64_t> ranks = lost(world, self);
    if (ranks == std::vector<int64_t>{0} && self != 0) {
      try {
        store->check({"kd/world/0"});
      } catch (const std::exception&) {
        return "rank 0 (the master: its store no longer answers)";
      }
    }
    if (ranks.empty()) return "a connection (every rank still beats: a network split, or a rank far behind)";
    std::vector<std::string> names;
    for (int64_t r : ranks) names.push_back(std::to_string(r));
    return (names.size() == 1 ? "rank " : "ranks ") + join(names, ", ");
  }
};

Group::Group(LaunchOptions options) : options_(std::move(options)) {}

Group::~Group() {
  if (!impl_) return;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  if (impl_->beat.joinable()) impl_->beat.join();
}

std::shared_ptr<Group> Group::connect(const LaunchOptions& options) {
  std::shared_ptr<Group> group(new Group(options));
  if (options.world_size() == 1) return group;
  auto impl = std::make_unique<Impl>();
  const auto timeout = std::chrono::milliseconds(milliseconds(options.timeout_seconds()));
  std::string where = fmt::format("{}:{}", options.master_addr(), options.master_port());
  // Under torchrun the agent serves the store at MASTER_PORT already, and says so: rank 0 joins it.
  const bool agent_store = environment("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(options.master_port());
    store_options.isServer = options.rank() == 0 && !agent_store;
    store_options.numWorkers = static_cast<size_t>(options.world_size());
    store_options.waitWorkers = false;
    store_options.timeout = timeout;
    impl->store = c10::make_intrusive<c10d::TCPStore>(options.master_addr(), store_options);
    store_options.isServer = false;
    impl->beat_store = c10::make_intrusive<c10d::TCPStore>(options.master_addr(), store_options);
  } catch (const std::exception& e) {
    fail("rank {}: cannot {} the group's store at {} (MASTER_ADDR, MASTER_PORT) within {} s: {}", options.rank(),
         options.rank() == 0 && !agent_store ? "serve" : "reach", where, options.timeout_seconds(), message_of(e));
  }
  // Each rank claims its number once, and all agree on the group's size before Gloo connects.
  auto text = [](const std::vector<uint8_t>& bytes) { return std::string(bytes.begin(), bytes.end()); };
  try {
    if (impl->store->add("kd/claims/" + std::to_string(options.rank()), 1) > 1) {
      fail("RANK: two processes of the group at {} claim rank {}", where, options.rank());
    }
    std::string size = std::to_string(options.world_size());
    impl->store->set("kd/world/" + std::to_string(options.rank()), std::vector<uint8_t>(size.begin(), size.end()));
    std::string root = text(impl->store->get("kd/world/0"));
    if (root != size) {
      fail("WORLD_SIZE: rank {} was started with {} and rank 0 with {}", options.rank(), size, root);
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail("rank {}: the group at {} did not gather within {} s: {}", options.rank(), where, options.timeout_seconds(),
         message_of(e));
  }
  try {
    auto gloo = c10d::ProcessGroupGloo::Options::create();
    gloo->timeout = timeout;
    if (auto interface = environment("GLOO_SOCKET_IFNAME")) {
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(*interface));
    } else if (options.master_addr() == "127.0.0.1" || options.master_addr() == "localhost") {
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    gloo->threads = 1;
    impl->group = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("kd/gloo", impl->store), static_cast<int>(options.rank()),
        static_cast<int>(options.world_size()), gloo);
  } catch (const std::exception& e) {
    fail("rank {}: the Gloo process group of {} ranks at {} did not connect within {} s: {}", options.rank(),
         options.world_size(), where, options.timeout_seconds(), message_of(e));
  }
  Impl* raw = impl.get();
  int64_t rank = options.rank();
  impl->beat = std::thread([raw, rank] {
    std::unique_lock<std::mutex> lock(raw->mutex);
    while (!raw->stopping) {
      try {
        auto now = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
        std::string stamp = std::to_string(now);
        raw->beat_store->set("kd/alive/" + std::to_string(rank), std::vector<uint8_t>(stamp.begin(), stamp.end()));
      } catch (const std::exception&) {
        // The master is gone or finished: the collectives say so.
      }
      raw->wake.wait_for(lock, std::chrono::milliseconds(kBeatMilliseconds));
    }
  });
  group->impl_ = std::move(impl);
  return group;
}

void Group::guard(const std::string& what, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    fail("rank {}: the group of {} lost {} during {} (timeout {} s): {}", rank(), size(), impl_->lost_ranks(size(), rank()),
         what, options_.timeout_seconds(), message_of(e));
  }
}

void Group::all_reduce_sum(std::vector<torch::Tensor>& tensors) {
  if (!impl_ || tensors.empty()) return;
  guard("an all-reduce", [&] { impl_->group->allreduce(tensors)->wait(); });
}

std::function<void()> Group::start_all_reduce_sum(std::vector<torch::Tensor>& tensors) {
  if (!impl_ || tensors.empty()) return [] {};
  c10::intrusive_ptr<c10d::Work> work;
  guard("an all-reduce", [&] { work = impl_->group->allreduce(tensors); });
  return [this, work] { guard("an all-reduce", [&] { work->wait(); }); };
}

void Group::broadcast(std::vector<torch::Tensor>& tensors, int64_t root) {
  if (!impl_ || tensors.empty()) return;
  c10d::BroadcastOptions options;
  options.rootRank = static_cast<int>(root);
  guard("a broadcast", [&] { impl_->group->broadcast(tensors, options)->wait(); });
}

void Group::barrier() {
  if (!impl_) return;
  guard("a barrier", [&] { impl_->group->barrier()->wait(); });
}

std::vector<std::string> Group::all_gather_text(const std::string& key, const std::string& value) {
  if (!impl_) return {value};
  std::vector<std::string> values;
  std::string prefix = fmt::format("kd/gather/{}/{}/", impl_->gathers++, key);
  guard("a gather of " + key, [&] {
    impl_->store->set(prefix + std::to_string(rank()), std::vector<uint8_t>(value.begin(), value.end()));
    for (int64_t r = 0; r < size(); ++r) {
      auto bytes = impl_->store->get(prefix + std::to_string(r));
      values.emplace_back(bytes.begin(), bytes.end());
    }
  });
  return values;
}

void Group::store_set(const std::string& key, const std::string& value) {
  KD_CHECK(impl_, "store_set on a group of one");
  guard("a store write of " + key, [&] { impl_->store->set(key, std::vector<uint8_t>(value.begin(), value.end())); });
}

std::string Group::store_get(const std::string& key) {
  KD_CHECK(impl_, "store_get on a group of one");
  std::string value;
  guard("a store read of " + key, [&] {
    auto bytes = impl_->store->get(key);
    value.assign(bytes.begin(), bytes.end());
  });
  return value;
}

std::optional<std::string> Group::store_try_get(const std::string& key) {
  KD_CHECK(impl_, "store_try_get on a group of one");
  std::optional<std::string> value;
  guard("a store read of " + key, [&] {
    if (!impl_->store->check({key})) return;
    auto bytes = impl_->store->get(key);
    value = std::string(bytes.begin(), bytes.end());
  });
  return value;
}

bool Group::store_compare_set(const std::string& key, const std::string& expected, const std::string& desired) {
  KD_CHECK(impl_, "store_compare_set on a group of one");
  bool done = false;
  guard("a store update of " + key, [&] {
    auto now = impl_->store->compareSet(key, std::vector<uint8_t>(expected.begin(), expected.end()),
                                        std::vector<uint8_t>(desired.begin(), desired.end()));
    done = std::string(now.begin(), now.end()) == desired;
  });
  return done;
}

std::vector<int64_t> Group::lost_ranks() {
  if (!impl_) return {};
  return impl_->lost(size(), rank());
}

StoreLock::StoreLock(Group& group, std::string key) : group_(group), key_(std::move(key)) {
  std::string me = std::to_string(group_.rank());
  auto start = Clock::now(), checked = Clock::now();
  while (!group_.store_compare_set(key_, "", me)) {
    double waited = std::chrono::duration<double>(Clock::now() - start).count();
    std::string holder = group_.store_try_get(key_).value_or("");
    if (waited > group_.options().timeout_seconds()) {
      fail("rank {}: {} has been held by rank {} for more than {} s", group_.rank(), key_, holder,
           group_.options().timeout_seconds());
    }
    // A lock held by a rank that died is taken over.
    if (std::chrono::duration<double>(Clock::now() - checked).count() > 2.0 && !holder.empty()) {
      auto lost = group_.lost_ranks();
      if (std::find(lost.begin(), lost.end(), std::stoll(holder)) != lost.end() &&
          group_.store_compare_set(key_, holder, me)) {
        break;
      }
      checked = Clock::now();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

StoreLock::~StoreLock() {
  try {
    group_.store_set(key_, "");
  } catch (const std::exception&) {
    // The group is gone: nobody waits for the lock.
  }
}

void Group::check_same(const std::string& what, const std::string& value) {
  auto values = all_gather_text(what, value);
  for (size_t r = 1; r < values.size(); ++r) {
    if (values[r] != values[0]) {
      fail("rank {}: rank {} has another {} than rank 0; every rank must run the same", rank(), r, what);
    }
  }
}

}  // namespace kd::dist
