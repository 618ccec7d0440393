// The subcommands. Each registers its flags and a callback that calls the library.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>

#include "kd/dist/group.h"

namespace kd::cli {

struct GlobalOptions {
  int threads = 0;
  std::optional<uint64_t> seed;
  bool quiet = false;
  std::string log_level = "info";
  int exit_status = 0;
  std::string blas_core;  // OpenBLAS's kernels in force, for the debug log ("" when not OpenBLAS)
  dist::LaunchFlags launch;  // --rank, --world-size, ...: over RANK, WORLD_SIZE, ... (torchrun's)
  std::string device = "cpu";  // --device: cpu, cuda (this rank's LOCAL_RANK) or cuda:N
  std::string max_memory;      // --max-memory: "" = default_memory_limit(), "0" = no limit
};

void register_commands(CLI::App& app, GlobalOptions& global);

// Sets logging and threads from the global flags; call first in every command.
void apply_global_options(const GlobalOptions& global);

// Runs `body`, turning any error into one line on stderr and an exit status:
// 2 for bad input (kd::Error), 1 for anything else.
int guarded(const std::function<void()>& body);

// The process group the launch flags and environment describe (a group of one without them); with
// several ranks, log lines say which rank wrote them.
std::shared_ptr<dist::Group> connect_group(const GlobalOptions& global);

// The bytes --max-memory allows a data set (data::DataSpec::max_memory); kd::Error naming the flag for
// text that is not a size.
int64_t memory_limit(const GlobalOptions& global);

// The device --device names: `cuda` alone is cuda:LOCAL_RANK (one GPU a rank on each host). kd::Error
// naming --device for another name, or for CUDA where this libtorch has none or fewer devices.
torch::Device chosen_device(const GlobalOptions& global);

}  // namespace kd::cli
