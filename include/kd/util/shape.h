// Shapes: shape_text({2, 3}) -> "[2, 3]" for messages; element_count({2, 3}) -> 6.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <string>

namespace kd {

std::string shape_text(c10::IntArrayRef shape);

// The number of elements of a tensor of `shape` (1 for the empty shape).
inline int64_t element_count(c10::IntArrayRef shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// element_count of a shape read from a file: kd::Error "`what`: shape [..] has a negative size" or
// "... has more than 2^40 elements" (more than any model file holds; for an empty shape, its other
// sizes multiplied), checked before anything is allocated for it.
int64_t checked_element_count(c10::IntArrayRef shape, const std::string& what);

// A tensor read from a file (a model's state, a checkpoint) whose sizes and strides reach only into its
// own storage: kd::Error "`what`: ..." otherwise (a damaged or crafted archive can declare a tensor
// larger than the bytes behind it, and copying from it would read past them).
void check_within_storage(const at::Tensor& tensor, const std::string& what);

}  // namespace kd
