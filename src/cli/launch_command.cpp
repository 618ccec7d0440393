// kdistill launch: starts the ranks of a data-parallel group on this host, as torchrun does.
#include <spdlog/spdlog.h>

#include <iostream>

#include "cli/commands.h"
#include "kd/util/error.h"
#include "kd/util/process.h"
#include "kd/util/strings.h"

namespace kd::cli {

namespace {
struct LaunchCommandFlags {
  int64_t nproc = 1;
  int64_t nnodes = 1;
  int64_t node_rank = 0;
  std::string master = "127.0.0.1:29500";
  std::vector<std::string> command;
};
}  // namespace

void register_launch_command(CLI::App& app, GlobalOptions& global) {
  auto flags = std::make_shared<LaunchCommandFlags>();
  auto* command = app.add_subcommand(
      "launch", "start --nproc ranks of a data-parallel group here (of --nnodes hosts): kdistill launch --nproc 2 -- run r.yaml");
  command->add_option("--nproc", flags->nproc, "ranks on this host");
  command->add_option("--nnodes", flags->nnodes, "hosts in the group, each started with its own --node-rank");
  command->add_option("--node-rank", flags->node_rank, "this host's index, 0 to nnodes - 1 (host 0 serves the rendezvous)");
  command->add_option("--master", flags->master, "ADDR:PORT of host 0's rendezvous store");
  command->add_option("command", flags->command, "the kdistill command each rank runs, after --");
  command->callback([flags, &global] {
    int status = 0;  // the first failing rank's exit status
    global.exit_status = guarded([&] {
      apply_global_options(global);
      const std::vector<std::string>& rest = flags->command;
      if (rest.empty()) fail("launch: nothing to run; give the command after --, e.g. kdistill launch --nproc 2 -- run r.yaml");
      if (flags->nproc < 1) fail("launch --nproc: {} is not a number of processes >= 1", flags->nproc);
      if (flags->nnodes < 1) fail("launch --nnodes: {} is not a number of hosts >= 1", flags->nnodes);
      if (flags->node_rank < 0 || flags->node_rank >= flags->nnodes) {
        fail("launch --node-rank: {} is not a host of {} (expected 0 to {})", flags->node_rank, flags->nnodes,
             flags->nnodes - 1);
      }
      auto colon = flags->master.rfind(':');
      if (colon == std::string::npos || colon == 0 || colon + 1 == flags->master.size()) {
        fail("launch --master: {} is not ADDR:PORT", quote(flags->master));
      }
      std::string addr = flags->master.substr(0, colon), port = flags->master.substr(colon + 1);
      int64_t world = flags->nproc * flags->nnodes;
      std::vector<int> pids;
      for (int64_t local = 0; local < flags->nproc; ++local) {
        int64_t rank = flags->node_rank * flags->nproc + local;
        std::vector<std::string> args = {"--rank", std::to_string(rank), "--world-size", std::to_string(world),
                                         "--master-addr", addr, "--master-port", port,
                                         "--local-rank", std::to_string(local)};
        if (global.launch.timeout_seconds) {
          args.insert(args.end(), {"--dist-timeout", fmt::format("{}", *global.launch.timeout_seconds)});
        }
        if (global.threads > 0) args.insert(args.end(), {"--threads", std::to_string(global.threads)});
        if (global.seed) args.insert(args.end(), {"--seed", std::to_string(*global.seed)});
        if (global.device != "cpu") args.insert(args.end(), {"--device", global.device});
        if (!global.max_memory.empty()) args.insert(args.end(), {"--max-memory", global.max_memory});
        if (global.quiet) args.push_back("--quiet");
        if (global.log_level != "info") args.insert(args.end(), {"--log-level", global.log_level});
        args.insert(args.end(), rest.begin(), rest.end());
        pids.push_back(spawn_self(args, true));  // a Ctrl-C reaches the ranks once, through wait_for_all
      }
      spdlog::info("launch: ranks {} to {} of {} started, rendezvous at {}", flags->node_rank * flags->nproc,
                   flags->node_rank * flags->nproc + flags->nproc - 1, world, flags->master);
      for (int s : wait_for_all(pids)) {
        if (s != 0 && status == 0) status = s;
      }
    });
    if (global.exit_status == 0) global.exit_status = status;
  });
}

}  // namespace kd::cli
