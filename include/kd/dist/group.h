// Data-parallel groups of processes on libtorch's own distributed engine (c10d): a TCPStore for the
// rendezvous (rank 0 serves it at MASTER_ADDR:MASTER_PORT) and a Gloo process group for the
// collectives, set up as torchrun sets up its workers (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
// LOCAL_RANK). One process is a group of one: every collective is then a no-op, and nothing connects.
//
//   auto group = dist::Group::connect(dist::launch_from_environment(flags));
//   group->all_reduce_sum(gradients);  // in place, the same sum on every rank
//
// A rank that dies or a network split makes the others' next collective fail within `timeout`
// with a kd::Error naming the ranks that stopped answering; never a hang.
#pragma once

#include <torch/arg.h>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kd::dist {

struct LaunchOptions {
  TORCH_ARG(int64_t, rank) = 0;
  TORCH_ARG(int64_t, world_size) = 1;
  TORCH_ARG(std::string, master_addr) = "127.0.0.1";
  TORCH_ARG(int64_t, master_port) = 29500;
  TORCH_ARG(int64_t, local_rank) = 0;
  TORCH_ARG(double, timeout_seconds) = 60.0;  // rendezvous, and any collective waiting on a lost rank
};

// Flags given on the command line (unset: from the environment, then the defaults above).
struct LaunchFlags {
  std::optional<int64_t> rank, world_size, master_port, local_rank;
  std::optional<std::string> master_addr;
  std::optional<double> timeout_seconds;
};

// The launch settings: each flag, else its environment variable (RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT, LOCAL_RANK, KD_DIST_TIMEOUT), else the default. kd::Error naming the setting for a value
// that is not a number, a rank outside [0, world size), a port outside [1, 65535].
LaunchOptions launch_from_environment(const LaunchFlags& flags);

class Group {
 public:
  // A group of `options.world_size()` processes, this one `options.rank()`; connects (and waits up to
  // the timeout for all ranks) when the world size is above 1.
  static std::shared_ptr<Group> connect(const LaunchOptions& options);
  ~Group();

  int64_t rank() const { return options_.rank(); }
  int64_t size() const { return options_.world_size(); }
  bool is_root() const { return rank() == 0; }
  bool distributed() const { return size() > 1; }
  const LaunchOptions& options() const { return options_; }

  // Element-wise sums over the ranks, in place, bitwise equal on every rank.
  void all_reduce_sum(std::vector<torch::Tensor>& tensors);
  // all_reduce_sum started on the group's communication thread; returns at once with a function that
  // waits for the sums (and fails as all_reduce_sum does). Every rank starts the same collectives in
  // the same order; they finish in that order.
  std::function<void()> start_all_reduce_sum(std::vector<torch::Tensor>& tensors);
  // Rank `root`'s tensors copied into every rank's (same shapes and types).
  void broadcast(std::vector<torch::Tensor>& tensors, int64_t root = 0);
  // Every rank's `value`, in rank order (through the store).
  std::vector<std::string> all_gather_text(const std::string& key, const std::string& value);
  // kd::Error on every rank unless all ranks hold the same `value` of `what` (a recipe, a data file):
  // names the first rank that differs.
  void check_same(const std::string& what, const std::string& value);
  void barrier();

  // The group's key-value store (rank 0's TCPStore), for what ranks share beside tensors: store_get
  // waits up to the timeout for the key, store_try_get answers at once (nothing when it is not set),
  // store_compare_set sets `desired` only where the value is `expected` ("" also matches a key not set).
  void store_set(const std::string& key, const std::string& value);
  std::string store_get(const std::string& key);
  std::optional<std::string> store_try_get(const std::string& key);
  bool store_compare_set(const std::string& key, const std::string& expected, const std::string& desired);
  // The ranks whose heartbeat stopped (its stamp read twice, a few beats apart); {0} when rank 0's
  // store no longer answers.
  std::vector<int64_t> lost_ranks();

 private:
  struct Impl;
  explicit Group(LaunchOptions options);
  // Runs `fn` (a collective or a store operation); its failure becomes a kd::Error naming the lost ranks.
  void guard(const std::string& what, const std::function<void()>& fn);
  LaunchOptions options_;
  std::unique_ptr<Impl> impl_;
};

// An exclusive lock of the group held while the object lives: `key` in the store holds the rank that
// has it. kd::Error when it cannot be had within the timeout (naming the rank that holds it).
class StoreLock {
 public:
  StoreLock(Group& group, std::string key);
  ~StoreLock();
  StoreLock(const StoreLock&) = delete;
  StoreLock& operator=(const StoreLock&) = delete;

 private:
  Group& group_;
  std::string key_;
};

}  // namespace kd::dist
