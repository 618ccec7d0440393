#include "cli/commands.h"
#include "kd/kdistill.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <csignal>
#include <iostream>

#include "kd/util/error.h"
#include "kd/util/process.h"
#include "kd/util/runtime.h"
#include "kd/util/strings.h"

namespace kd::cli {

void apply_global_options(const GlobalOptions& global) {
  int threads = setup(SetupOptions().threads(global.threads).log_level(global.quiet ? "warn" : global.log_level));
  install_stop_handlers();
  // Past a file-size limit (RLIMIT_FSIZE) a write fails with EFBIG and is reported like a full disk,
  // rather than the process being killed half-way through a file.
  std::signal(SIGXFSZ, SIG_IGN);
  spdlog::debug("threads: {}, BLAS: {}", threads, global.blas_core.empty() ? "not OpenBLAS" : "OpenBLAS " + global.blas_core);
}

int64_t memory_limit(const GlobalOptions& global) {
  if (global.max_memory.empty()) return default_memory_limit();
  auto bytes = parse_bytes(global.max_memory);
  if (!bytes) fail("--max-memory: {} is not a size, expected e.g. 8G, 512M or 0 (no limit)", quote(global.max_memory));
  return *bytes;
}

std::shared_ptr<dist::Group> connect_group(const GlobalOptions& global) {
  auto group = dist::Group::connect(dist::launch_from_environment(global.launch));
  if (group->distributed()) {
    spdlog::set_pattern(fmt::format("[%H:%M:%S] rank {}/{}: %v", group->rank(), group->size()));
    spdlog::info("data-parallel group of {} ranks at {}:{}", group->size(), group->options().master_addr(),
                 group->options().master_port());
  }
  return group;
}

torch::Device chosen_device(const GlobalOptions& global) {
  std::string name = global.device;
  if (name == "cuda") name += ":" + std::to_string(dist::launch_from_environment(global.launch).local_rank());
  std::optional<torch::Device> device;
  try {
    device = torch::Device(name);
  } catch (const c10::Error&) {
  }
  if (!device || !(device->is_cpu() || device->is_cuda())) {
    fail("--device: {} is not a device kdistill runs on: expected cpu, cuda or cuda:N", quote(global.device));
  }
  if (device->is_cuda()) {
    int64_t count = torch::cuda::is_available() ? static_cast<int64_t>(torch::cuda::device_count()) : 0;
    if (count == 0) fail("--device {}: this build of libtorch sees no CUDA device; use --device cpu", name);
    if (device->index() >= count) fail("--device {}: there {} {} CUDA device{} (cuda:0 to cuda:{})", name,
                                       count == 1 ? "is" : "are", count, count == 1 ? "" : "s", count - 1);
  }
  return *device;
}

int guarded(const std::function<void()>& body) {
  try {
    body();
    return 0;
  } catch (const kd::Error& e) {
    std::cerr << "kdistill: error: " << e.what() << "\n";
    return 2;
  } catch (const kd::Interrupted& e) {
    std::cerr << "kdistill: " << e.what() << "\n";
    return 128 + e.signal();
  } catch (const c10::Error& e) {
    std::cerr << "kdistill: error: " << first_line(e) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "kdistill: internal error: " << e.what() << "\n";
    return 1;
  }
}

void register_run_command(CLI::App& app, GlobalOptions& global);
void register_model_commands(CLI::App& app, GlobalOptions& global);
void register_report_commands(CLI::App& app, GlobalOptions& global);
void register_auto_command(CLI::App& app, GlobalOptions& global);
void register_launch_command(CLI::App& app, GlobalOptions& global);

void register_commands(CLI::App& app, GlobalOptions& global) {
  register_run_command(app, global);
  register_model_commands(app, global);
  register_report_commands(app, global);
  register_auto_command(app, global);
  register_launch_command(app, global);
}

}  // namespace kd::cli
