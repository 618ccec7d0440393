// What an array file's header says, read without its data: how much memory the array will take
// (data::estimate_memory) before anything is allocated.
#pragma once

#include <cstdint>
#include <vector>

namespace kd::data {

struct ArrayHeader {
  std::vector<int64_t> shape;
  int64_t itemsize = 0;  // bytes a value in the file
  // Saturates at 2^56 (no file holds that many values) rather than overflowing on a crafted header.
  int64_t elements() const {
    constexpr int64_t kHuge = int64_t{1} << 56;
    int64_t n = 1;
    for (int64_t d : shape) {
      if (d < 0 || __builtin_mul_overflow(n, d, &n) || n > kHuge) return kHuge;
    }
    return n;
  }
};

}  // namespace kd::data
