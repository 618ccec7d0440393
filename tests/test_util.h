// Helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
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

namespace kd::test {

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

}  // namespace kd::test
