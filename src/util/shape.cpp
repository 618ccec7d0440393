#include "kd/util/shape.h"

#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd {

std::string shape_text(c10::IntArrayRef shape) {
  std::vector<std::string> parts;
  for (int64_t d : shape) parts.push_back(std::to_string(d));
  return "[" + join(parts, ", ") + "]";
}

int64_t checked_element_count(c10::IntArrayRef shape, const std::string& what) {
  constexpr int64_t kLimit = int64_t{1} << 40;
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail("{}: shape {} has a negative size", what, shape_text(shape));
    if (d > 0 && n > kLimit / d) fail("{}: shape {} has more than 2^40 elements", what, shape_text(shape));
    n *= d;
  }
  return n;
}

}  // namespace kd
