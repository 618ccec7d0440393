#include "kd/io/onnx_model.h"

#include <fmt/format.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/shape.h"
#include "kd/util/strings.h"
#include "kd/io/onnx_tensor.h"

namespace kd::io {
namespace {

using Tensors = std::vector<torch::Tensor>;

// What an operator sees: its node's attributes, its inputs (undefined where an optional input is
// absent), the model's opset and the number of outputs the node names.
struct OpContext {
  const onnx::NodeProto& node;
  Tensors inputs;
  int64_t opset = 0;
  torch::Device device = torch::kCPU;

  bool has(size_t i) const { return i < inputs.size() && inputs[i].defined(); }
  const torch::Tensor& in(size_t i) const {
    if (!has(i)) fail("input {} is missing", i);
    return inputs[i];
  }
  size_t outputs() const { return static_cast<size_t>(node.output_size()); }
  const onnx::AttributeProto* attr(const std::string& name) const {
    for (const auto& a : node.attribute()) {
      if (a.name() == name) return &a;
    }
    return nullptr;
  }
  int64_t i(const std::string& name, int64_t fallback) const {
    const auto* a = attr(name);
    return a ? a->i() : fallback;
  }
  double f(const std::string& name, double fallback) const {
    const auto* a = attr(name);
    return a ? a->f() : fallback;
  }
  std::string s(const std::string& name, const std::string& fallback) const {
    const auto* a = attr(name);
    return a ? a->s() : fallback;
  }
  std::optional<std::vector<int64_t>> ints(const std::string& name) const {
    const auto* a = attr(name);
    if (!a) return std::nullopt;
    return std::vector<int64_t>(a->ints().begin(), a->ints().end());
  }
  std::vector<int64_t> ints(const std::string& name, std::vector<int64_t> fallback) const {
    return ints(name).value_or(std::move(fallback));
  }
};

using OpFn = std::function<Tensors(const OpContext&)>;

std::vector<int64_t> to_ints(const torch::Tensor& t) {
  torch::Tensor flat = t.to(torch::kCPU).to(torch::kLong).contiguous().flatten();
  return std::vector<int64_t>(flat.data_ptr<int64_t>(), flat.data_ptr<int64_t>() + flat.numel());
}

int64_t norm_axis(int64_t axis, int64_t rank) {
  int64_t a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) fail("axis {} is out of range for rank {}", axis, rank);
  return a;
}

std::vector<int64_t> norm_axes(const std::vector<int64_t>& axes, int64_t rank) {
  std::vector<int64_t> out;
  for (int64_t a : axes) out.push_back(norm_axis(a, rank));
  return out;
}

// Axes from the input `index` (newer opsets) or the attribute "axes" (older ones).
std::optional<std::vector<int64_t>> axes_of(const OpContext& c, size_t index, int64_t input_since) {
  if (c.opset >= input_since) {
    if (c.has(index)) return to_ints(c.inputs[index]);
    return std::nullopt;
  }
  return c.ints("axes");
}

Tensors one(torch::Tensor t) { return {std::move(t)}; }

bool integral(const torch::Tensor& t) { return !t.is_floating_point() && !t.is_complex(); }

// ---- convolution and pooling ---------------------------------------------------------------------

// Begin and end padding of each spatial dim, from `pads` or `auto_pad`.
struct SpatialPads {
  std::vector<int64_t> begin, end;
  bool symmetric() const { return begin == end; }
};

SpatialPads spatial_pads(const OpContext& c, const std::vector<int64_t>& in, const std::vector<int64_t>& kernel,
                         const std::vector<int64_t>& strides, const std::vector<int64_t>& dilations) {
  size_t n = in.size();
  SpatialPads p{std::vector<int64_t>(n, 0), std::vector<int64_t>(n, 0)};
  std::string auto_pad = c.s("auto_pad", "NOTSET");
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    for (size_t d = 0; d < n; ++d) {
      int64_t out = (in[d] + strides[d] - 1) / strides[d];
      int64_t total = std::max<int64_t>(0, (out - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1 - in[d]);
      int64_t small = total / 2;
      p.begin[d] = auto_pad == "SAME_UPPER" ? small : total - small;
      p.end[d] = total - p.begin[d];
    }
  } else if (auto_pad == "NOTSET") {
    std::vector<int64_t> pads = c.ints("pads", std::vector<int64_t>(2 * n, 0));
    if (pads.size() != 2 * n) fail("pads has {} values, expected {}", pads.size(), 2 * n);
    for (size_t d = 0; d < n; ++d) {
      p.begin[d] = pads[d];
      p.end[d] = pads[d + n];
    }
  } else if (auto_pad != "VALID") {
    fail("auto_pad {} is not NOTSET, SAME_UPPER, SAME_LOWER or VALID", quote(auto_pad));
  }
  return p;
}

// torch's pad list (last dim first) for the spatial dims.
std::vector<int64_t> torch_pad_list(const SpatialPads& p) {
  std::vector<int64_t> list;
  for (size_t d = p.begin.size(); d-- > 0;) {
    list.push_back(p.begin[d]);
    list.push_back(p.end[d]);
  }
  return list;
}

struct Window {
  std::vector<int64_t> kernel, strides, dilations;
  SpatialPads pads;
  // Whether torch's own symmetric padding (at most half the effective kernel) can express `pads`.
  bool torch_padding() const {
    if (!pads.symmetric()) return false;
    for (size_t d = 0; d < kernel.size(); ++d) {
      if (pads.begin[d] > ((kernel[d] - 1) * dilations[d] + 1) / 2) return false;
    }
    return true;
  }
};

Window window_of(const OpContext& c, const torch::Tensor& x, std::vector<int64_t> kernel) {
  auto spatial = static_cast<size_t>(x.dim() - 2);
  if (x.dim() < 3) fail("expects input [N, C, ...spatial], got {}", shape_text(x.sizes()));
  if (kernel.size() != spatial) fail("kernel_shape has {} dims for {} spatial dims", kernel.size(), spatial);
  Window w;
  w.kernel = kernel;
  w.strides = c.ints("strides", std::vector<int64_t>(spatial, 1));
  w.dilations = c.ints("dilations", std::vector<int64_t>(spatial, 1));
  if (w.strides.size() != spatial || w.dilations.size() != spatial) {
    fail("strides/dilations do not have {} values", spatial);
  }
  auto positive = [](const std::vector<int64_t>& v) { return std::all_of(v.begin(), v.end(), [](int64_t x) { return x >= 1; }); };
  if (!positive(kernel) || !positive(w.strides) || !positive(w.dilations)) {
    fail("kernel_shape {}, strides {} and dilations {}: each must be 1 or more", shape_text(kernel), shape_text(w.strides),
         shape_text(w.dilations));
  }
  std::vector<int64_t> in(x.sizes().begin() + 2, x.sizes().end());
  w.pads = spatial_pads(c, in, kernel, w.strides, w.dilations);
  return w;
}

Tensors conv(const OpContext& c) {
  const torch::Tensor& x = c.in(0);
  const torch::Tensor& weight = c.in(1);
  std::vector<int64_t> kernel = c.ints("kernel_shape", std::vector<int64_t>(weight.sizes().begin() + 2, weight.sizes().end()));
  Window w = window_of(c, x, kernel);
  torch::Tensor input = x;
  std::vector<int64_t> padding = w.pads.begin;
  if (!w.pads.symmetric()) {
    input = torch::constant_pad_nd(x, torch_pad_list(w.pads), 0);
    padding.assign(padding.size(), 0);
  }
  std::vector<int64_t> output_padding(padding.size(), 0);
  c10::optional<torch::Tensor> bias;
  if (c.has(2)) bias = c.inputs[2];
  return one(at::convolution(input, weight, bias, w.strides, padding, w.dilations, false, output_padding,
                             c.i("group", 1)));
}

Tensors max_pool(const OpContext& c) {
  // torch pools floats only: integers go through float (exact for 8- and 16-bit values).
  const torch::Tensor& x = integral(c.in(0)) ? c.in(0).to(torch::kFloat) : c.in(0);
  auto type = c.in(0).scalar_type();
  Window w = window_of(c, x, c.ints("kernel_shape", std::vector<int64_t>{}));
  bool ceil = c.i("ceil_mode", 0) != 0;
  torch::Tensor input = x;
  std::vector<int64_t> padding = w.pads.begin;
  if (!w.torch_padding()) {
    input = torch::constant_pad_nd(x, torch_pad_list(w.pads), -std::numeric_limits<double>::infinity());
    padding.assign(padding.size(), 0);
  }
  bool indices = c.outputs() > 1 && !c.node.output(1).empty();
  if (indices && (input.dim() != 4 || !w.torch_padding())) {
    fail("the Indices output is supported for 2-d pooling with symmetric pads only");
  }
  switch (x.dim()) {
    case 3:
      return one(torch::max_pool1d(input, w.kernel, w.strides, padding, w.dilations, ceil).to(type));
    case 4: {
      if (!indices) return one(torch::max_pool2d(input, w.kernel, w.strides, padding, w.dilations, ceil).to(type));
      auto [y, index] = torch::max_pool2d_with_indices(input, w.kernel, w.strides, padding, w.dilations, ceil);
      // torch counts within each (n, c) plane, row-major; ONNX counts in the whole tensor, in row-major
      // (storage_order 0) or column-major (1) order.
      int64_t height = x.size(2), width = x.size(3);
      if (c.i("storage_order", 0) != 0) index = torch::remainder(index, width) * height + torch::div(index, width, "floor");
      torch::Tensor plane = torch::arange(x.size(0) * x.size(1), index.options()).reshape({x.size(0), x.size(1), 1, 1});
      return {y.to(type), index + plane * height * width};
    }
    case 5:
      return one(torch::max_pool3d(input, w.kernel, w.strides, padding, w.dilations, ceil).to(type));
    default:
      fail("expects 1-d to 3-d pooling, got input {}", shape_text(x.sizes()));
  }
}

torch::Tensor avg_pool_nd(const torch::Tensor& x, const Window& w, const std::vector<int64_t>& padding, bool ceil,
                          bool count_pad) {
  switch (x.dim()) {
    case 3:
      return torch::avg_pool1d(x, w.kernel, w.strides, padding, ceil, count_pad);
    case 4:
      return torch::avg_pool2d(x, w.kernel, w.strides, padding, ceil, count_pad);
    case 5:
      return torch::avg_pool3d(x, w.kernel, w.strides, padding, ceil, count_pad);
    default:
      fail("expects 1-d to 3-d pooling, got input {}", shape_text(x.sizes()));
  }
}

Tensors average_pool(const OpContext& c) {
  const torch::Tensor& x = c.in(0);
  Window w = window_of(c, x, c.ints("kernel_shape", std::vector<int64_t>{}));
  for (int64_t d : w.dilations) {
    if (d != 1) fail("dilations other than 1 are not supported");
  }
  bool ceil = c.i("ceil_mode", 0) != 0;
  bool count_pad = c.i("count_include_pad", 0) != 0;
  if (w.torch_padding()) return one(avg_pool_nd(x, w, w.pads.begin, ceil, count_pad));
  // Padding torch cannot express: pad with zeros, average, and divide by the share of real values.
  std::vector<int64_t> none(w.kernel.size(), 0);
  std::vector<int64_t> pad = torch_pad_list(w.pads);
  torch::Tensor y = avg_pool_nd(torch::constant_pad_nd(x, pad, 0), w, none, ceil, true);
  if (count_pad) return one(y);
  std::vector<int64_t> ones_shape = {1, 1};
  ones_shape.insert(ones_shape.end(), x.sizes().begin() + 2, x.sizes().end());
  torch::Tensor share = avg_pool_nd(torch::constant_pad_nd(torch::ones(ones_shape, x.options()), pad, 0), w, none, ceil, true);
  return one(y / share);
}

Tensors global_average_pool(const OpContext& c) {
  const torch::Tensor& x = c.in(0);
  std::vector<int64_t> dims;
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  return one(x.mean(dims, /*keepdim=*/true));
}

Tensors batch_normalization(const OpContext& c) {
  // Inference form: running statistics (training_mode=1 is an export of a model left in train mode).
  torch::Tensor y = torch::batch_norm(c.in(0), c.in(1), c.in(2), c.in(3), c.in(4), false, 0.0,
                                      c.f("epsilon", 1e-5), false);
  Tensors out = {y};
  if (c.outputs() > 1) out.push_back(c.in(3));
  if (c.outputs() > 2) out.push_back(c.in(4));
  return out;
}

// ---- shape and data movement ---------------------------------------------------------------------

Tensors reshape(const OpContext& c) {
  const torch::Tensor& x = c.in(0);
  std::vector<int64_t> shape = c.opset >= 5 ? to_ints(c.in(1)) : c.ints("shape", std::vector<int64_t>{});
  bool allow_zero = c.i("allowzero", 0) != 0;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 0 && !allow_zero) {
      if (static_cast<int64_t>(d) >= x.dim()) fail("shape {} copies dim {} of a rank-{} input", shape_text(shape), d, x.dim());
      shape[d] = x.size(static_cast<int64_t>(d));
    }
  }
  return one(x.reshape(shape));
}

Tensors flatten(const OpContext& c) {
  const torch::Tensor& x = c.in(0);
  int64_t axis = c.i("axis", 1);
  if (axis < 0) axis += x.dim();
  if (axis < 0 || axis > x.dim()) fail("axis {} is out of range for rank {}", c.i("axis", 1), x.dim());
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.size(d);
  return one(x.reshape({outer, outer == 0 ? 0 : x.numel() / outer}));
}

Tensors transpose(const OpContext& c) {
  const torch::Tensor& x = c.in(0);
  std::vector<int64_t> perm;
  for (int64_t d = x.dim() - 1; d >= 0; --d) perm.push_back(d);
  return one(x.permute(c.ints("perm", perm)));
}

Tensors concat(const OpContext& c) {
  Tensors parts;
  for (const auto& t : c.inputs) {
    if (t.defined()) parts.push_back(t);
  }
  if (parts.empty()) fail("no inputs");
  return one(torch::cat(parts, norm_axis(c.i("axis", 0), parts[0].dim())));
}

Tensors split(const OpContext& c) {
  const torch::Tensor& x = c.in(0);
  int64_t axis = norm_axis(c.i("axis", 0), x.dim());
  std::vector<int64_t> sizes;
  if (c.opset >= 13 && c.has(1)) {
    sizes = to_ints(c.inputs[1]);
  } else if (c.opset < 13) {
    sizes = c.ints("split", std::vector<int64_t>{});
  }
  if (sizes.empty()) {
    auto parts = static_cast<int64_t>(c.i("num_outputs", static_cast<int64_t>(c.outputs())));
    int64_t size = (x.size(axis) + parts - 1) / parts;  // the last part may be smaller
    for (int64_t start = 0; start < x.size(axis); start += size) sizes.push_back(std::min(size, x.size(axis) - start));
  }
  return torch::split_with_sizes(x, sizes, axis);
}

Tensors slice(const OpContext& c) {
  torch::Tensor x = c.in(0);
  std::vector<int64_t> starts, ends, axes, steps;
  if (c.opset >= 10) {
    starts = to_ints(c.in(1));
    ends = to_ints(c.in(2));
    if (c.has(3)) axes = to_ints(c.inputs[3]);
    if (c.has(4)) steps = to_ints(c.inputs[4]);
  } else {
    starts = c.ints("starts", std::vector<int64_t>{});
    ends = c.ints("ends", std::vector<int64_t>{});
    axes = c.ints("axes", std::vector<int64_t>{});
  }
  if (axes.empty()) {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size()) {
    fail("starts, ends, axes and steps differ in length");
  }
  for (size_t i = 0; i < starts.size(); ++i) {
    int64_t axis = norm_axis(axes[i], x.dim());
    int64_t dim = x.size(axis);
    int64_t step = steps[i];
    if (step == 0) fail("step 0");
    if (dim == 0) continue;
    auto clamp = [&](int64_t v, int64_t lo, int64_t hi) {
      if (v < 0) v += dim;
      return std::clamp(v, lo, hi);
    };
    // INT64_MAX / INT64_MIN ends ("to the end") stay out of range of the addition above.
    int64_t start = starts[i], end = ends[i];
    if (step > 0) {
      start = clamp(std::max(start, -dim - 1), 0, dim);
      end = clamp(std::max(end, -dim - 1), 0, dim);
      x = x.slice(axis, start, std::max(start, end), step);
    } else {
      start = clamp(std::max(start, -dim - 1), 0, dim - 1);
      end = clamp(std::max(end, -dim - 1), -1, dim - 1);
      if (start <= end) end = start;  // empty
      x = x.index_select(axis, torch::arange(start, end, step, torch::TensorOptions().dtype(torch::kLong).device(x.device())));
    }
  }
  return one(x);
}

Tensors gather(const OpContext& c) {
  const torch::Tensor& x = c.in(0);
  torch::Tensor index = c.in(1).to(torch::kLong);
  int64_t axis = norm_axis(c.i("axis", 0), x.dim());
  index = torch::where(index < 0, index + x.size(axis), index);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().begin() + axis);
  shape.insert(shape.end(), index.sizes().begin(), index.sizes().end());
  shape.insert(shape.end(), x.sizes().begin() + axis + 1, x.sizes().end());
  return one(x.index_select(axis, index.flatten()).reshape(shape));
}

Tensors squeeze(const OpContext& c) {
  torch::Tensor x = c.in(0);
  auto axes = axes_of(c, 1, 13);
  if (!axes) return one(x.squeeze());
  std::vector<int64_t> dims = norm_axes(*axes, x.dim());
  std::sort(dims.rbegin(), dims.rend());
  for (int64_t d : dims) {
    if (x.size(d) != 1) fail("cannot squeeze dim {} of size {}", d, x.size(d));
    x = x.squeeze(d);
  }
  return one(x);
}

Tensors unsqueeze(const OpContext& c) {
  torch::Tensor x = c.in(0);
  auto axes = axes_of(c, 1, 13);
  if (!axes) fail("axes are missing");
  std::vector<int64_t> dims = norm_axes(*axes, x.dim() + static_cast<int64_t>(axes->size()));
  std::sort(dims.begin(), dims.end());
  for (int64_t d : dims) x = x.unsqueeze(d);
  return one(x);
}

Tensors shape(const OpContext& c) {
  std::vector<int64_t> sizes = c.in(0).sizes().vec();
  auto rank = static_cast<int64_t>(sizes.size());
  auto bound = [&](int64_t v) { return std::clamp(v < 0 ? v + rank : v, int64_t{0}, rank); };
  int64_t start = bound(c.i("start", 0));
  int64_t end = bound(c.i("end", rank));
  std::vector<int64_t> part(sizes.begin() + start, sizes.begin() + std::max(start, end));
  return one(torch::tensor(part, torch::TensorOptions().dtype(torch::kLong)).to(c.device));
}

Tensors constant(const OpContext& c) {
  torch::Tensor t;
  if (const auto* a = c.attr("value")) {
    t = onnx_tensor::from_proto(a->t(), "Constant");
  } else if (const auto* a = c.attr("value_float")) {
    t = torch::tensor(a->f(), torch::kFloat);
  } else if (const auto* a = c.attr("value_floats")) {
    t = torch::tensor(std::vector<float>(a->floats().begin(), a->floats().end()), torch::kFloat);
  } else if (const auto* a = c.attr("value_int")) {
    t = torch::tensor(a->i(), torch::kLong);
  } else if (const auto* a = c.attr("value_ints")) {
    t = torch::tensor(std::vector<int64_t>(a->ints().begin(), a->ints().end()), torch::kLong);
  } else {
    fail("only value, value_float(s) and value_int(s) constants are supported");
  }
  return one(t.to(c.device));
}

// A filled tensor of the shape input 0 gives: the `value` attribute's element type and value (default
// float 0).
Tensors constant_of_shape(const OpContext& c) {
  std::vector<int64_t> shape = to_ints(c.in(0));
  torch::Tensor value = torch::zeros({1}, torch::kFloat);
  if (const auto* a = c.attr("value")) value = onnx_tensor::from_proto(a->t(), "ConstantOfShape");
  return one(torch::full(shape, value.reshape({-1})[0].item(), value.options()).to(c.device));
}

// Input 0 broadcast to the shape input 1 gives (numpy's rules: the two shapes broadcast together).
Tensors expand(const OpContext& c) {
  const torch::Tensor& x = c.in(0);
  std::vector<int64_t> shape = to_ints(c.in(1));
  return one(x.expand(at::infer_size(x.sizes(), shape)).contiguous());
}

Tensors where(const OpContext& c) { return one(torch::where(c.in(0).to(torch::kBool), c.in(1), c.in(2))); }

Tensors pad(const OpContext& c) {
  const torch::Tensor& x = c.in(0);
  std::vector<int64_t> pads;
  double value = 0;
  std::string mode = c.s("mode", "constant");
  if (c.opset >= 11) {
    pads = to_ints(c.in(1));
    if (c.has(2)) value = c.inputs[2].item<double>();
  } else {
    pads = c.ints("pads", std::vector<int64_t>{});
    value = c.f("value", 0.0);
  }
  std::vector<int64_t> axes;
  if (c.has(3)) {
    axes = norm_axes(to_ints(c.inputs[3]), x.dim());
  } else {
    for (int64_t d = 0; d < x.dim(); ++d) axes.push_back(d);
  }
  if (pads.size() != 2 * axes.size()) fail("pads has {} values for {} axes", pads.size(), axes.size());
  std::vector<int64_t> begin(x.dim(), 0), end(x.dim(), 0);
  for (size_t i = 0; i < axes.size(); ++i) {
    begin[axes[i]] = pads[i];
    end[axes[i]] = pads[i + axes.size()];
  }
  std::vector<int64_t> list;  // torch's order: last dim first
  for (int64_t d = x.dim(); d-- > 0;) {
    list.push_back(begin[d]);
    list.push_back(end[d]);
  }
  if (mode == "constant") return one(torch::constant_pad_nd(x, list, value));
  if (mode != "reflect" && mode != "edge") fail("mode {} is not constant, reflect or edge", quote(mode));
  // torch pads the trailing 1-3 dims of [N, C, ...] inputs in these modes.
  if (x.dim() < 3 || x.dim() > 5 || begin[0] || end[0] || begin[1] || end[1]) {
    fail("mode {} is supported on the spatial dims of 3-d to 5-d inputs only", mode);
  }
  list.resize(static_cast<size_t>(2 * (x.dim() - 2)));
  namespace F = torch::nn::functional;
  auto options = F::PadFuncOptions(list);
  if (mode == "reflect") {
    options.mode(torch::kReflect);
  } else {
    options.mode(torch::kReplicate);
  }
  // torch pads floats only in these modes; double holds every int32 exactly.
  if (integral(x)) return one(F::pad(x.to(torch::kDouble), options).to(x.scalar_type()));
  return one(F::pad(x, options));
}

Tensors clip(const OpContext& c) {
  const torch::Tensor& x = c.in(0);
  c10::optional<at::Scalar> low, high;  // a bound's own type, so that integer inputs stay integers
  if (c.opset >= 11) {
    if (c.has(1)) low = c.inputs[1].item();
    if (c.has(2)) high = c.inputs[2].item();
  } else {
    if (c.attr("min")) low = c.f("min", 0);
    if (c.attr("max")) high = c.f("max", 0);
  }
  return one(low || high ? torch::clamp(x, low, high) : x);
}

Tensors cast(const OpContext& c) {
  auto type = onnx_tensor::to_torch(static_cast<int32_t>(c.i("to", onnx::TensorProto::FLOAT)), "Cast");
  return one(c.in(0).to(type));
}

// ReduceSum (axes an input since opset 13): integer sums stay integers.
Tensors reduce_sum(const OpContext& c) {
  const torch::Tensor& x = c.in(0);
  bool keep = c.i("keepdims", 1) != 0;
  auto axes = axes_of(c, 1, 13);
  if (!axes || axes->empty()) {
    if (c.i("noop_with_empty_axes", 0) != 0) return one(x);
    std::vector<int64_t> all;
    for (int64_t d = 0; d < x.dim(); ++d) all.push_back(d);
    return one(x.sum(all, keep).to(x.scalar_type()));
  }
  return one(x.sum(norm_axes(*axes, x.dim()), keep).to(x.scalar_type()));
}

// ReduceMean and ReduceMax (axes an input since opset 18); integers go through float for the mean.
OpFn reduce_over(bool max) {
  return [max](const OpContext& c) {
    const torch::Tensor& x = c.in(0);
    bool keep = c.i("keepdims", 1) != 0;
    auto axes = axes_of(c, 1, 18);
    std::vector<int64_t> dims;
    if (!axes || axes->empty()) {
      if (c.i("noop_with_empty_axes", 0) != 0) return one(x);
      for (int64_t d = 0; d < x.dim(); ++d) dims.push_back(d);
    } else {
      dims = norm_axes(*axes, x.dim());
    }
    if (max) return one(x.amax(dims, keep));
    torch::Tensor xf = integral(x) ? x.to(torch::kFloat) : x;
    return one(xf.mean(dims, keep).to(x.scalar_type()));
  };
}

// ---- arithmetic and activations ------------------------------------------------------------------

OpFn unary(torch::Tensor (*fn)(const torch::Tensor&)) {
  return [fn](const OpContext& c) { return one(fn(c.in(0))); };
}

OpFn binary(torch::Tensor (*fn)(const torch::Tensor&, const torch::Tensor&)) {
  return [fn](const OpContext& c) { return one(fn(c.in(0), c.in(1))); };
}

torch::Tensor add(const torch::Tensor& a, const torch::Tensor& b) { return a + b; }
torch::Tensor sub(const torch::Tensor& a, const torch::Tensor& b) { return a - b; }
torch::Tensor mul(const torch::Tensor& a, const torch::Tensor& b) { return a * b; }
torch::Tensor eq(const torch::Tensor& a, const torch::Tensor& b) { return a.eq(b); }
torch::Tensor div(const torch::Tensor& a, const torch::Tensor& b) {
  // ONNX divides integers with truncation; torch's `/` would give floats.
  return integral(a) && integral(b) ? torch::div(a, b, "trunc") : a / b;
}
torch::Tensor pow(const torch::Tensor& a, const torch::Tensor& b) { return torch::pow(a, b).to(a.scalar_type()); }

torch::Tensor relu(const torch::Tensor& x) { return torch::relu(x); }
torch::Tensor sigmoid(const torch::Tensor& x) { return torch::sigmoid(x); }
torch::Tensor tanh(const torch::Tensor& x) { return torch::tanh(x); }
torch::Tensor erf(const torch::Tensor& x) { return torch::erf(x); }
torch::Tensor sqrt(const torch::Tensor& x) { return torch::sqrt(x); }
torch::Tensor neg(const torch::Tensor& x) { return torch::neg(x); }
torch::Tensor exp(const torch::Tensor& x) { return torch::exp(x); }
torch::Tensor log(const torch::Tensor& x) { return torch::log(x); }
torch::Tensor abs(const torch::Tensor& x) { return torch::abs(x); }
torch::Tensor reciprocal(const torch::Tensor& x) { return torch::reciprocal(x); }
torch::Tensor identity(const torch::Tensor& x) { return x; }
torch::Tensor matmul(const torch::Tensor& a, const torch::Tensor& b) { return torch::matmul(a, b); }

Tensors gemm(const OpContext& c) {
  torch::Tensor a = c.in(0), b = c.in(1);
  if (c.i("transA", 0)) a = a.t();
  if (c.i("transB", 0)) b = b.t();
  torch::Tensor y = torch::mm(a, b);
  double alpha = c.f("alpha", 1.0), beta = c.f("beta", 1.0);
  if (alpha != 1.0) y = y * alpha;
  if (c.has(2)) y = beta == 1.0 ? y + c.inputs[2] : y + c.inputs[2] * beta;
  return one(y);
}

Tensors leaky_relu(const OpContext& c) { return one(torch::leaky_relu(c.in(0), c.f("alpha", 0.01))); }

Tensors gelu(const OpContext& c) { return one(torch::gelu(c.in(0), c.s("approximate", "none"))); }

// Softmax and LogSoftmax: before opset 13 the input is viewed as 2-d [outer, inner] around `axis`.
OpFn softmax_like(bool log) {
  return [log](const OpContext& c) {
    const torch::Tensor& x = c.in(0);
    auto apply = [&](const torch::Tensor& t, int64_t dim) {
      return log ? torch::log_softmax(t, dim) : torch::softmax(t, dim);
    };
    if (c.opset >= 13) return one(apply(x, norm_axis(c.i("axis", -1), x.dim())));
    int64_t axis = c.i("axis", 1);
    if (axis < 0) axis += x.dim();
    int64_t outer = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= x.size(d);
    return one(apply(x.reshape({outer, -1}), 1).reshape(x.sizes()));
  };
}

Tensors dropout(const OpContext& c) {
  // Inference: the identity (and an all-true mask).
  const torch::Tensor& x = c.in(0);
  Tensors out = {x};
  if (c.outputs() > 1) out.push_back(torch::ones_like(x, torch::kBool));
  return out;
}

Tensors layer_normalization(const OpContext& c) {
  const torch::Tensor& x = c.in(0);
  int64_t axis = norm_axis(c.i("axis", -1), x.dim());
  std::vector<int64_t> dims;
  for (int64_t d = axis; d < x.dim(); ++d) dims.push_back(d);
  torch::Tensor xf = x.to(torch::kFloat);
  torch::Tensor mean = xf.mean(dims, true);
  torch::Tensor inv_std = torch::rsqrt((xf - mean).pow(2).mean(dims, true) + c.f("epsilon", 1e-5));
  torch::Tensor y = ((xf - mean) * inv_std).to(x.scalar_type()) * c.in(1);
  if (c.has(2)) y = y + c.inputs[2];
  return {y, mean, inv_std};
}

// GRU (opset 7-14), step by step: X [L, N, in] (layout 1: [N, L, in]), W [dirs, 3h, in], R [dirs, 3h, h],
// B [dirs, 6h] (gates z, r, h), sequence_lens [N] (a text's steps; the reverse direction starts at its
// last one), initial_h [dirs, N, h]. Y [L, dirs, N, h] (zero past a text's end), Y_h [dirs, N, h]. The
// default activations (Sigmoid, Tanh), no clip; linear_before_reset 0 (ONNX's default) or 1 (torch's).
Tensors gru(const OpContext& c) {
  if (c.attr("activations") || c.attr("clip")) fail("GRU with activations or clip is not supported (the defaults are)");
  const bool batch_first = c.i("layout", 0) != 0;
  torch::Tensor x = batch_first ? c.in(0).transpose(0, 1) : c.in(0);
  const torch::Tensor& w = c.in(1);
  const torch::Tensor& r = c.in(2);
  const int64_t steps = x.size(0), n = x.size(1), dirs = w.size(0), h = r.size(2);
  const std::string direction = c.s("direction", "forward");
  if (direction != "forward" && direction != "reverse" && direction != "bidirectional") {
    fail("GRU direction {} is not forward, reverse or bidirectional", quote(direction));
  }
  if (dirs != (direction == "bidirectional" ? 2 : 1)) fail("GRU: W has {} directions for direction {}", dirs, direction);
  torch::Tensor b = c.has(3) ? c.inputs[3] : torch::zeros({dirs, 6 * h}, x.options());
  torch::Tensor lengths = c.has(4) ? c.inputs[4].to(torch::kLong) : torch::full({n}, steps, torch::kLong);
  torch::Tensor h_init = c.has(5) ? c.inputs[5] : torch::zeros({dirs, n, h}, x.options());
  const bool reset_first = c.i("linear_before_reset", 0) == 0;
  std::vector<torch::Tensor> ys, finals;
  for (int64_t d = 0; d < dirs; ++d) {
    bool backward = direction == "reverse" || d == 1;
    auto rd = r[d].chunk(3, 0), wb = b[d].chunk(6, 0);
    torch::Tensor xw = torch::matmul(x, w[d].t()) + torch::cat({wb[0], wb[1], wb[2]});  // [L, N, 3h]
    torch::Tensor state = h_init[d];
    std::vector<torch::Tensor> outputs(steps);
    for (int64_t step = 0; step < steps; ++step) {
      int64_t t = backward ? steps - 1 - step : step;
      auto gates = xw[t].chunk(3, 1);
      torch::Tensor z = torch::sigmoid(gates[0] + torch::matmul(state, rd[0].t()) + wb[3]);
      torch::Tensor reset = torch::sigmoid(gates[1] + torch::matmul(state, rd[1].t()) + wb[4]);
      torch::Tensor candidate =
          reset_first ? torch::tanh(gates[2] + torch::matmul(reset * state, rd[2].t()) + wb[5])
                      : torch::tanh(gates[2] + reset * (torch::matmul(state, rd[2].t()) + wb[5]));
      torch::Tensor inside = (lengths > t).unsqueeze(1);  // rows whose text reaches step t
      state = torch::where(inside, (1 - z) * candidate + z * state, state);
      outputs[t] = torch::where(inside, state, torch::zeros_like(state));
    }
    ys.push_back(torch::stack(outputs, 0));  // [L, N, h]
    finals.push_back(state);
  }
  torch::Tensor y = torch::stack(ys, 1), y_h = torch::stack(finals, 0);  // [L, dirs, N, h], [dirs, N, h]
  if (batch_first) return {y.permute({2, 0, 1, 3}), y_h.transpose(0, 1)};
  return {y, y_h};
}

// The one table of operators.
const std::map<std::string, OpFn>& operators() {
  static const std::map<std::string, OpFn> table = {
      {"Abs", unary(abs)},
      {"Add", binary(add)},
      {"AveragePool", average_pool},
      {"BatchNormalization", batch_normalization},
      {"Cast", cast},
      {"Clip", clip},
      {"Concat", concat},
      {"Constant", constant},
      {"ConstantOfShape", constant_of_shape},
      {"Conv", conv},
      {"Div", binary(div)},
      {"Dropout", dropout},
      {"Equal", binary(eq)},
      {"Erf", unary(erf)},
      {"Exp", unary(exp)},
      {"Expand", expand},
      {"Flatten", flatten},
      {"Gather", gather},
      {"Gelu", gelu},
      {"Gemm", gemm},
      {"GRU", gru},
      {"GlobalAveragePool", global_average_pool},
      {"Identity", unary(identity)},
      {"LayerNormalization", layer_normalization},
      {"LeakyRelu", leaky_relu},
      {"Log", unary(log)},
      {"LogSoftmax", softmax_like(true)},
      {"MatMul", binary(matmul)},
      {"MaxPool", max_pool},
      {"Mul", binary(mul)},
      {"Neg", unary(neg)},
      {"Pad", pad},
      {"Pow", binary(pow)},
      {"Reciprocal", unary(reciprocal)},
      {"ReduceMax", reduce_over(true)},
      {"ReduceMean", reduce_over(false)},
      {"ReduceSum", reduce_sum},
      {"Relu", unary(relu)},
      {"Reshape", reshape},
      {"Shape", shape},
      {"Sigmoid", unary(sigmoid)},
      {"Slice", slice},
      {"Softmax", softmax_like(false)},
      {"Split", split},
      {"Sqrt", unary(sqrt)},
      {"Squeeze", squeeze},
      {"Sub", binary(sub)},
      {"Tanh", unary(tanh)},
      {"Transpose", transpose},
      {"Unsqueeze", unsqueeze},
      {"Where", where},
  };
  return table;
}

// ---- the graph -----------------------------------------------------------------------------------

struct Node {
  const onnx::NodeProto* proto;
  std::string label;  // the node's name, or "#index" when it has none
  const OpFn* fn;
  std::vector<std::string> release;  // values no later node reads
};

}  // namespace

std::vector<std::string> onnx_operators() {
  std::vector<std::string> names;
  for (const auto& item : operators()) names.push_back(item.first);
  return names;
}

struct OnnxModel::Impl {
  std::string path;
  onnx::ModelProto model;
  int64_t opset = 0;
  std::vector<std::pair<std::string, torch::Tensor>> initializers;
  std::map<std::string, size_t> initializer_index;
  std::vector<std::string> inputs;  // the graph inputs that are not initializers
  // The first input's declared dims (-1 where unknown) and type: what forward adapts to.
  std::vector<int64_t> input_dims;
  torch::ScalarType input_type = torch::kFloat;
  std::vector<std::string> outputs;
  size_t output_index = 0;
  std::vector<Node> nodes;
  std::vector<std::pair<std::string, std::string>> metadata;
  torch::Device device = torch::kCPU;

  using Observer = std::function<void(const Node&, const Tensors& inputs, const Tensors& outputs)>;

  void parse(const std::string& output);
  void order_nodes();
  std::string node_text(const Node& node) const {
    return fmt::format("{}: node {} ({})", path, quote(node.label), node.proto->op_type());
  }
  torch::Tensor adapt(const torch::Tensor& input) const;
  Tensors run(const Tensors& feeds, const Observer& observer = nullptr) const;
  void require_one_input() const;
  // Whether the graph takes token ids by name (input_ids, with attention_mask and token_type_ids).
  bool takes_token_ids() const { return std::find(inputs.begin(), inputs.end(), "input_ids") != inputs.end(); }
  // The feeds for kdistill's one input: adapted to the graph's input, or the ids, mask and types by name.
  Tensors feeds_for(const torch::Tensor& input) const;
  int64_t pad_id = 0;
};

Tensors OnnxModel::Impl::feeds_for(const torch::Tensor& input) const {
  if (!takes_token_ids()) {
    require_one_input();
    return {adapt(input)};
  }
  return models::token_id_inputs(input, inputs, pad_id, path + ": the graph");
}

void OnnxModel::Impl::parse(const std::string& output) {
  require_file(path, "ONNX model");
  // Protobuf reads at most 2 GiB: larger ONNX files keep their weights in external files (refused).
  if (const auto size = std::filesystem::file_size(path); size >= (uint64_t{1} << 31)) {
    fail("{}: {} bytes, more than a protobuf file can hold (2 GiB); such models keep their weights in external "
         "files, which kdistill does not read", path, size);
  }
  std::string bytes = read_file(path);
  if (!model.ParseFromString(bytes)) {
    fail("{}: not an ONNX model (it does not parse as an ONNX ModelProto: truncated or of another format)", path);
  }
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    fail("{}: not a valid ONNX model: {}", path, first_line(e));
  }
  for (const auto& entry : model.opset_import()) {
    if (entry.domain().empty() || entry.domain() == "ai.onnx") opset = entry.version();
  }
  for (const auto& prop : model.metadata_props()) metadata.emplace_back(prop.key(), prop.value());

  const onnx::GraphProto& graph = model.graph();
  for (const auto& proto : graph.initializer()) {
    initializer_index[proto.name()] = initializers.size();
    initializers.emplace_back(proto.name(), onnx_tensor::from_proto(proto, path));
  }
  const onnx::ValueInfoProto* first = nullptr;
  for (const auto& value : graph.input()) {
    if (initializer_index.count(value.name())) continue;
    inputs.push_back(value.name());
    if (!first) first = &value;
  }
  for (const auto* values : {&graph.input(), &graph.output()}) {
    for (const auto& value : *values) {
      if (!value.type().has_tensor_type()) {
        fail("{}: {} has a sequence, map or optional type, which is not supported (tensors only)", path,
             quote(value.name()));
      }
    }
  }
  const auto& type = first ? first->type() : onnx::TypeProto();
  if (type.has_tensor_type()) {
    input_type = onnx_tensor::to_torch(type.tensor_type().elem_type(), path + ": input " + quote(inputs[0]));
    if (type.tensor_type().has_shape()) {
      for (const auto& dim : type.tensor_type().shape().dim()) {
        input_dims.push_back(dim.has_dim_value() && dim.dim_value() > 0 ? dim.dim_value() : -1);
      }
    }
  }
  for (const auto& value : graph.output()) outputs.push_back(value.name());
  if (outputs.empty()) fail("{}: the graph has no outputs; a teacher needs its logits as one", path);

  const auto& table = operators();
  for (int i = 0; i < graph.node_size(); ++i) {
    const onnx::NodeProto& proto = graph.node(i);
    Node node{&proto, proto.name().empty() ? "#" + std::to_string(i) : proto.name(), nullptr, {}};
    bool standard = proto.domain().empty() || proto.domain() == "ai.onnx";
    auto it = table.find(proto.op_type());
    if (!standard || it == table.end()) {
      fail("{}: node {}: operator {}{} is not supported (supported: {})", path, quote(node.label),
           standard ? "" : proto.domain() + ".", proto.op_type(), join(onnx_operators(), ", "));
    }
    node.fn = &it->second;
    nodes.push_back(node);
  }
  if (outputs.size() > 1 || !output.empty()) {
    auto index = parse_int(output);
    auto named = std::find(outputs.begin(), outputs.end(), output);
    if (named != outputs.end()) {
      output_index = static_cast<size_t>(named - outputs.begin());
    } else if (index && *index >= 0 && *index < static_cast<long long>(outputs.size())) {
      output_index = static_cast<size_t>(*index);
    } else {
      fail("{}: the graph has {} output{} ({}); {}set teacher.output to the index or name of the logits", path,
           outputs.size(), outputs.size() == 1 ? "" : "s", join(outputs, ", "),
           output.empty() ? "" : "there is no output " + quote(output) + "; ");
    }
  }
  order_nodes();
}

// Sorts the nodes so that each runs after the values it reads exist, and notes after which node each
// intermediate value can be freed. A value nothing provides is a kd::Error naming the node.
void OnnxModel::Impl::order_nodes() {
  std::set<std::string> known(inputs.begin(), inputs.end());
  known.insert("");
  for (const auto& item : initializers) known.insert(item.first);
  std::vector<Node> ordered;
  std::vector<bool> done(nodes.size(), false);
  while (ordered.size() < nodes.size()) {
    bool progress = false;
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (done[i]) continue;
      const auto& in = nodes[i].proto->input();
      if (!std::all_of(in.begin(), in.end(), [&](const std::string& name) { return known.count(name) > 0; })) continue;
      for (const auto& name : nodes[i].proto->output()) known.insert(name);
      ordered.push_back(nodes[i]);
      done[i] = true;
      progress = true;
    }
    if (!progress) {
      for (size_t i = 0; i < nodes.size(); ++i) {
        if (done[i]) continue;
        for (const auto& name : nodes[i].proto->input()) {
          if (known.count(name)) continue;
          bool produced = false;
          for (const auto& other : nodes) {
            const auto& out = other.proto->output();
            produced = produced || std::find(out.begin(), out.end(), name) != out.end();
          }
          if (!produced) {
            fail("{}: reads {}, which no node, graph input or initializer provides", node_text(nodes[i]), quote(name));
          }
        }
      }
      fail("{}: the graph has a cycle through node {}", path, quote(nodes[std::find(done.begin(), done.end(), false) - done.begin()].label));
    }
  }
  nodes = std::move(ordered);
  for (const auto& name : outputs) {
    if (!known.count(name)) fail("{}: graph output {} is not computed by any node", path, quote(name));
  }
  std::map<std::string, size_t> last_use;
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (const auto& name : nodes[i].proto->input()) last_use[name] = i;
  }
  std::set<std::string> keep(outputs.begin(), outputs.end());
  keep.insert(inputs.begin(), inputs.end());
  for (const auto& [name, index] : last_use) {
    if (!keep.count(name) && !initializer_index.count(name)) nodes[index].release.push_back(name);
  }
}

torch::Tensor OnnxModel::Impl::adapt(const torch::Tensor& input) const {
  torch::Tensor x = input.scalar_type() == input_type ? input : input.to(input_type);
  auto rank = static_cast<int64_t>(input_dims.size());
  if (rank == 0 || x.dim() < 1) return x;
  auto fits = [&](c10::IntArrayRef shape) {
    if (static_cast<int64_t>(shape.size()) != rank) return false;
    for (int64_t d = 1; d < rank; ++d) {
      if (input_dims[d] != -1 && input_dims[d] != shape[d]) return false;
    }
    return true;
  };
  if (fits(x.sizes())) return x;
  if (x.dim() == 4 && rank == 4) {
    torch::Tensor channels_last = x.permute({0, 2, 3, 1});
    if (fits(channels_last.sizes())) return channels_last;
  }
  if (x.dim() > 2 && rank == 2) return x.flatten(1);
  if (x.dim() == 2 && rank > 2) {
    std::vector<int64_t> shape = {x.size(0)};
    int64_t known = 1, unknown = 0;
    for (int64_t d = 1; d < rank; ++d) {
      shape.push_back(input_dims[d]);
      if (input_dims[d] == -1) {
        ++unknown;
      } else {
        known *= input_dims[d];
      }
    }
    if (unknown <= 1 && x.size(1) % known == 0) return x.reshape(shape);
  }
  std::vector<std::string> declared;
  for (int64_t d : input_dims) declared.push_back(d == -1 ? "?" : std::to_string(d));
  fail("{}: input {} is declared [{}]; kdistill's input {} does not fit it, even transposed to channels last, "
       "flattened or reshaped",
       path, quote(inputs[0]), join(declared, ", "), shape_text(input.sizes()));
}

void OnnxModel::Impl::require_one_input() const {
  if (inputs.size() != 1) fail("{}: the graph has {} inputs ({}); kdistill feeds one", path, inputs.size(), join(inputs, ", "));
}

Tensors OnnxModel::Impl::run(const Tensors& feeds, const Observer& observer) const {
  torch::NoGradGuard no_grad;
  if (feeds.size() != inputs.size()) fail("{}: the graph has {} inputs, got {}", path, inputs.size(), feeds.size());
  std::map<std::string, torch::Tensor> values;
  for (size_t i = 0; i < feeds.size(); ++i) values[inputs[i]] = feeds[i];
  torch::Device device = feeds.empty() ? torch::Device(torch::kCPU) : feeds[0].device();
  for (const auto& [name, tensor] : initializers) values.emplace(name, tensor);
  for (const Node& node : nodes) {
    OpContext context{*node.proto, {}, opset, device};
    for (const auto& name : node.proto->input()) context.inputs.push_back(name.empty() ? torch::Tensor() : values.at(name));
    Tensors results;
    try {
      results = (*node.fn)(context);
    } catch (const Error& e) {
      fail("{}: {}", node_text(node), e.what());
    } catch (const std::exception& e) {
      std::vector<std::string> shapes;
      for (const auto& t : context.inputs) shapes.push_back(t.defined() ? shape_text(t.sizes()) : "none");
      fail("{} on inputs {}: {}", node_text(node), join(shapes, ", "), first_line(e));
    }
    if (observer) observer(node, context.inputs, results);
    for (int i = 0; i < node.proto->output_size(); ++i) {
      const std::string& name = node.proto->output(i);
      if (name.empty()) continue;
      if (static_cast<size_t>(i) >= results.size()) fail("{}: output {} is not computed", node_text(node), i);
      values[name] = results[static_cast<size_t>(i)];
    }
    for (const auto& name : node.release) values.erase(name);
  }
  Tensors result;
  for (const auto& name : outputs) result.push_back(values.at(name));
  return result;
}

OnnxModel::OnnxModel(const std::string& path, const std::string& output) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  impl_->parse(output);
  // A graph whose shapes do not work out fails here, once, rather than in the first batch.
  if (impl_->inputs.size() == 1 && !impl_->input_dims.empty() &&
      std::all_of(impl_->input_dims.begin() + 1, impl_->input_dims.end(), [](int64_t d) { return d > 0; })) {
    std::vector<int64_t> shape = impl_->input_dims;
    if (shape[0] < 1) shape[0] = 1;  // the batch
    try {
      impl_->run({torch::zeros(shape, impl_->input_type)});
    } catch (const Error& e) {
      fail("{} (a trial run on the declared input {})", e.what(), shape_text(shape));
    }
  }
}

OnnxModel::~OnnxModel() = default;

torch::Tensor OnnxModel::forward(const torch::Tensor& input) {
  return impl_->run(impl_->feeds_for(input))[impl_->output_index];
}

std::vector<torch::Tensor> OnnxModel::run(const std::vector<torch::Tensor>& inputs) { return impl_->run(inputs); }

std::vector<std::string> OnnxModel::tap_names() {
  std::vector<std::string> names;
  for (const Node& node : impl_->nodes) {
    for (const auto& name : node.proto->output()) {
      if (!name.empty()) names.push_back(name);
    }
  }
  return names;
}

models::TappedForward OnnxModel::forward_taps(const torch::Tensor& input, const std::vector<std::string>& taps) {
  if (taps.empty()) return {forward(input), {}};
  models::check_taps(*this, taps);
  std::map<std::string, torch::Tensor> kept;
  for (const auto& tap : taps) kept.emplace(tap, torch::Tensor());
  models::TappedForward result;
  result.output = impl_->run(impl_->feeds_for(input), [&](const Node& node, const Tensors&, const Tensors& outputs) {
    for (int i = 0; i < node.proto->output_size() && static_cast<size_t>(i) < outputs.size(); ++i) {
      auto it = kept.find(node.proto->output(i));
      if (it != kept.end()) it->second = outputs[static_cast<size_t>(i)];
    }
  })[impl_->output_index];
  for (const auto& tap : taps) result.taps.push_back(tap == models::kOutputTap ? result.output : kept.at(tap));
  return result;
}

std::vector<std::string> OnnxModel::input_names() const { return impl_->inputs; }

void OnnxModel::require_one_input() const {
  if (!impl_->takes_token_ids()) impl_->require_one_input();
}

bool OnnxModel::takes_token_ids() const { return impl_->takes_token_ids(); }

void OnnxModel::set_pad_id(int64_t pad_id) { impl_->pad_id = pad_id; }

models::NamedTensors OnnxModel::state() { return impl_->initializers; }

void OnnxModel::load_state(const models::NamedTensors& state) {
  for (const auto& [name, tensor] : state) {
    auto it = impl_->initializer_index.find(name);
    if (it == impl_->initializer_index.end()) fail("{}: load_state: the graph has no initializer {}", impl_->path, quote(name));
    const torch::Tensor& own = impl_->initializers[it->second].second;
    if (own.sizes() != tensor.sizes()) {
      fail("{}: load_state: {} has shape {} in the graph, {} in the state", impl_->path, quote(name),
           shape_text(own.sizes()), shape_text(tensor.sizes()));
    }
  }
  for (const auto& [name, tensor] : state) {
    auto& own = impl_->initializers[impl_->initializer_index.at(name)].second;
    own = tensor.detach().to(own.device(), own.scalar_type()).clone();
  }
}

void OnnxModel::to(torch::Device device) {
  for (auto& item : impl_->initializers) item.second = item.second.to(device);
  impl_->device = device;
}

std::vector<int64_t> OnnxModel::declared_input_shape() {
  const auto& dims = impl_->input_dims;
  // A graph of token ids: input_dims are the first input's, input_ids in torch.onnx.export's order.
  if ((impl_->inputs.size() != 1 && !impl_->takes_token_ids()) || dims.size() < 2 ||
      std::any_of(dims.begin() + 1, dims.end(), [](int64_t d) { return d <= 0; })) {
    return {};
  }
  return {dims.begin() + 1, dims.end()};
}

models::ModelSummary OnnxModel::summary(const std::vector<int64_t>& input_shape) {
  models::ModelSummary summary;
  std::set<std::string> read;
  for (const Node& node : impl_->nodes) {
    for (const auto& name : node.proto->input()) read.insert(name);
  }
  for (const auto& [name, tensor] : impl_->initializers) {
    if (read.count(name) && tensor.is_floating_point()) summary.params += tensor.numel();
  }
  std::vector<int64_t> shape = {1};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  // Ones: a valid token id, not padding, for graphs that take token ids.
  impl_->run(impl_->feeds_for(torch::ones(shape).to(impl_->device)), [&](const Node& node, const Tensors& inputs,
                                                                           const Tensors& outputs) {
    const std::string& op = node.proto->op_type();
    int64_t macs = 0;
    if (!outputs.empty() && outputs[0].defined()) {
      const torch::Tensor& y = outputs[0];
      if (op == "Gemm" || op == "MatMul") {
        const torch::Tensor& a = inputs[0];
        bool trans_a = op == "Gemm" && std::any_of(node.proto->attribute().begin(), node.proto->attribute().end(),
                                                   [](const auto& at) { return at.name() == "transA" && at.i(); });
        macs = y.numel() * (trans_a ? a.size(0) : a.size(-1));
      } else if (op == "Conv") {
        macs = y.numel() * element_count(inputs[1].sizes().slice(1));
      }
    }
    summary.macs += macs;
    std::string out_shape = outputs.empty() || !outputs[0].defined()
                                ? "-"
                                : shape_text(outputs[0].dim() > 0 ? outputs[0].sizes().slice(1) : outputs[0].sizes());
    summary.layers.push_back(fmt::format("{:<22} {:<18} {:<16} {:>12}", node.label, op, out_shape, macs));
  });
  return summary;
}

const std::vector<std::pair<std::string, std::string>>& OnnxModel::metadata() const { return impl_->metadata; }

torch::Tensor read_onnx_tensor(const std::string& path) {
  onnx::TensorProto proto;
  if (!proto.ParseFromString(read_file(path))) fail("{}: not an ONNX TensorProto (truncated or of another format)", path);
  return onnx_tensor::from_proto(proto, path);
}

std::vector<std::string> OnnxModel::output_names() const { return impl_->outputs; }

}  // namespace kd::io
