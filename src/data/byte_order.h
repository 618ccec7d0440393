// Byte-order helpers shared by the array readers (IDX is big-endian, NPY may be either).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace kd::data::detail {

inline bool host_is_little_endian() {
  const uint16_t probe = 1;
  return *reinterpret_cast<const unsigned char*>(&probe) == 1;
}

// Reverses the bytes of each of `count` values of `width` bytes, in place.
inline void swap_bytes(void* data, int64_t count, size_t width) {
  if (width <= 1) return;
  auto* bytes = static_cast<unsigned char*>(data);
  for (int64_t i = 0; i < count; ++i, bytes += width) std::reverse(bytes, bytes + width);
}

}  // namespace kd::data::detail
