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
  // The sizes other than 0 are bounded too: an empty tensor of shape [0, 2^62] has strides past int64.
  int64_t n = 1;
  bool empty = false, too_big = false;
  for (int64_t d : shape) {
    if (d < 0) fail("{}: shape {} has a negative size", what, shape_text(shape));
    if (d == 0) empty = true;
    else if (too_big || n > kLimit / d) too_big = true;
    else n *= d;
  }
  if (too_big) {
    fail("{}: shape {} has {} 2^40 elements", what, shape_text(shape), empty ? "sizes that multiply past" : "more than");
  }
  return empty ? 0 : n;
}

void check_within_storage(const at::Tensor& tensor, const std::string& what) {
  if (!tensor.defined() || tensor.numel() == 0) return;
  if (!tensor.has_storage() || tensor.storage().data() == nullptr) {
    fail("{}: tensor of shape {} has no data stored for it (the file is damaged)", what, shape_text(tensor.sizes()));
  }
  // The last element's offset, in elements from the storage's start; strides of a tensor read back
  // are never negative.
  int64_t last = tensor.storage_offset();
  bool bad = last < 0;
  for (int64_t d = 0; d < tensor.dim(); ++d) {
    if (tensor.stride(d) < 0) bad = true;
    else last += (tensor.size(d) - 1) * tensor.stride(d);
  }
  const auto itemsize = static_cast<int64_t>(tensor.element_size());
  const auto bytes = static_cast<int64_t>(tensor.storage().nbytes());
  if (bad || last >= bytes / itemsize) {
    fail("{}: tensor of shape {} reaches past the {} bytes stored for it (the file is damaged)", what,
         shape_text(tensor.sizes()), bytes);
  }
}

}  // namespace kd
