// Shapes in messages: shape_text({2, 3}) -> "[2, 3]".
#pragma once

#include <c10/util/ArrayRef.h>

#include <string>

namespace kd {

std::string shape_text(c10::IntArrayRef shape);

}  // namespace kd
