// Helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <random>
#include <string>
#include <vector>

#include "kd/util/error.h"

// Expects `statement` to throw kd::Error whose message contains `substring`.
#define KD_EXPECT_ERROR(statement, substring)                                                   \
  do {                                                                                          \
    try {                                                                                       \
      statement;                                                                                \
      ADD_FAILURE() << "expected kd::Error containing \"" << (substring) << "\", nothing thrown"; \
    } catch (const kd::Error& e) {                                                              \
      EXPECT_NE(std::string(e.what()).find(substring), std::string::npos)                       \
          << "message: " << e.what() << "\nexpected to contain: " << (substring);               \
    }                                                                                           \
  } while (0)

// A test whose peer (Python torch, Node.js packages, Debian data) is missing: skipped with `reason` on a
// developer's machine, a failure when KD_REQUIRE_PEERS=1 (set by .ci/run), so that CI cannot pass with
// an interop check left out. `reason` may be a stream chain: KD_PEER_MISSING(path << " is missing").
#define KD_PEER_MISSING(reason)                                                        \
  do {                                                                                 \
    std::ostringstream kd_peer_reason;                                                 \
    kd_peer_reason << reason;                                                          \
    if (kd::test::peers_required()) FAIL() << "peer missing: " << kd_peer_reason.str(); \
    GTEST_SKIP() << kd_peer_reason.str();                                              \
  } while (0)

namespace kd::test {

// Whether KD_REQUIRE_PEERS=1 is set: every peer a test needs must be there.
inline bool peers_required() {
  const char* value = std::getenv("KD_REQUIRE_PEERS");
  return value != nullptr && std::string(value) == "1";
}

// The kd::Error message of `call`, or "" when it does not throw.
inline std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const kd::Error& e) {
    return e.what();
  }
  return "";
}

// {n, shape...}: the shape of a batch of n examples of `shape`.
inline std::vector<int64_t> batch_shape(int64_t n, const std::vector<int64_t>& shape) {
  std::vector<int64_t> full = {n};
  full.insert(full.end(), shape.begin(), shape.end());
  return full;
}

// A fresh empty folder under the system temp dir, removed when the object goes.
class TempDir {
 public:
  TempDir() {
    std::random_device device;
    path_ = std::filesystem::temp_directory_path() / ("kd_test_" + std::to_string(device()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// A folder of fixtures made once for every test process: named after `key` (the text of the scripts
// that make it), filled by `make` in a temporary folder and renamed into place, so that a half-made
// folder is never used. `make` returns "" or what failed; `why` gets that, or "" on success.
inline std::filesystem::path shared_fixture_dir(const std::string& prefix, const std::string& key,
                                                const std::string& last_file,
                                                const std::function<std::string(const std::filesystem::path&)>& make,
                                                std::string& why) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / (prefix + std::to_string(std::hash<std::string>{}(key)));
  why.clear();
  if (fs::exists(dir / last_file)) return dir;
  TempDir making;
  why = make(making.path());
  if (!why.empty()) return {};
  std::error_code ec;
  fs::rename(making.path(), dir, ec);  // another test process may have finished first: use its folder
  if (!fs::exists(dir / last_file)) why = "cannot put the fixtures in " + dir.string() + ": " + ec.message();
  return dir;
}

}  // namespace kd::test
