// libFuzzer's entry points. One binary holds every target; it is installed once per target as
// fuzz_NAME (a link), and the name it is started by picks the target (fuzz/targets.cpp).
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "targets.h"

namespace {

const kd::fuzz::Target* target = nullptr;
std::filesystem::path folder;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  std::string name = std::filesystem::path((*argv)[0]).filename().string();
  if (name.rfind("fuzz_", 0) == 0) target = kd::fuzz::find_target(name.substr(5));
  if (target == nullptr) {
    std::fprintf(stderr, "%s: start this program as fuzz_NAME, NAME one of:", name.c_str());
    for (const auto& t : kd::fuzz::targets()) std::fprintf(stderr, " %s", t.name.c_str());
    std::fprintf(stderr, "\n");
    std::exit(2);
  }
  spdlog::set_level(spdlog::level::off);  // warnings about the inputs, thousands a second
  torch::set_num_threads(1);
  folder = kd::fuzz::scratch_folder();
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(folder, ec);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string escaped = kd::fuzz::run_target(*target, data, size, folder);
  if (!escaped.empty()) {
    std::fprintf(stderr, "fuzz_%s: not refused with a kd::Error: %s\n", target->name.c_str(), escaped.c_str());
    std::abort();
  }
  return 0;
}
