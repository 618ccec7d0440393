// What an array file's header says, read without its data: how much memory the array will take
// (data::estimate_memory) before anything is allocated.
#pragma once

#include <cstdint>
#include <vector>

namespace kd::data {

struct ArrayHeader {
  std::vector<int64_t> shape;
  int64_t itemsize = 0;  // bytes a value in the file
  int64_t elements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

}  // namespace kd::data
