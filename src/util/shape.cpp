#include "kd/util/shape.h"

#include "kd/util/strings.h"

namespace kd {

std::string shape_text(c10::IntArrayRef shape) {
  std::vector<std::string> parts;
  for (int64_t d : shape) parts.push_back(std::to_string(d));
  return "[" + join(parts, ", ") + "]";
}

}  // namespace kd
