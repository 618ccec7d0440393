// kdistill: the command-line front. Parses, calls the library, prints, exits.
// Every kd::Error becomes one line on stderr and exit status 2.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <iostream>
#include <string>

#include "cli/commands.h"
#include "kd/util/error.h"
#include "kd/util/runtime.h"
#include "kd/util/version.h"

int main(int argc, char** argv) {
  std::string blas_core = kd::use_fitting_blas_kernels();
  CLI::App app{"kdistill: knowledge distillation from a large teacher to a small, fast student"};
  app.set_version_flag("--version", std::string("kdistill ") + kd::build_version());
  app.require_subcommand(1);

  kd::cli::GlobalOptions global;
  global.blas_core = blas_core;
  app.add_option("--threads", global.threads, "intra-op threads (default: all cores)");
  app.add_option("--seed", global.seed, "random seed (overrides the recipe's)");
  app.add_option("--device", global.device,
                 "where models train and run: cpu (default), cuda (cuda:LOCAL_RANK) or cuda:N");
  app.add_option("--max-memory", global.max_memory,
                 "refuse data sets that need more memory: 8G, 512M, 0 = no limit (default: 80 % of RAM or the cgroup's limit)");
  app.add_flag("-q,--quiet", global.quiet, "print only warnings and errors");
  app.add_option("--log-level", global.log_level, "trace | debug | info | warn | error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  // Data-parallel launch, as torchrun's variables (which they override): docs/distributed.md.
  app.add_option("--rank", global.launch.rank, "this process's rank in a data-parallel group (RANK)");
  app.add_option("--world-size", global.launch.world_size, "processes in the group (WORLD_SIZE)");
  app.add_option("--master-addr", global.launch.master_addr, "host of rank 0's rendezvous store (MASTER_ADDR)");
  app.add_option("--master-port", global.launch.master_port, "its TCP port (MASTER_PORT)");
  app.add_option("--local-rank", global.launch.local_rank, "rank on this host (LOCAL_RANK)");
  app.add_option("--dist-timeout", global.launch.timeout_seconds,
                 "seconds to wait for the group, and for a lost rank before stopping (KD_DIST_TIMEOUT; default 60)");

  // Global options are accepted after the subcommand too (`kdistill run r.yaml --threads 2`): a
  // subcommand passes the options it does not know up to here.
  app.fallthrough();
  kd::cli::register_commands(app, global);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int status = app.exit(e);
    return status == 0 ? 0 : 2;
  }
  return global.exit_status;
}
