#include "kd/models/macs.h"

#include <ATen/record_function.h>

#include <cstring>
#include <memory>

#include "kd/util/error.h"

namespace kd::models {
namespace {

enum class MacKind { none, linear, matmul, convolution, transposed_convolution };

MacKind mac_kind(const char* name) {
  // kd::linear: models::linear's oneDNN product, and the TorchScript op that calls models::linear.
  if (std::strcmp(name, "kd::linear") == 0) return MacKind::linear;
  static const char* const matmuls[] = {"aten::linear", "aten::addmm", "aten::mm",     "aten::bmm",
                                        "aten::matmul", "aten::baddbmm"};
  static const char* const convolutions[] = {"aten::conv1d",      "aten::conv2d",       "aten::conv3d",
                                             "aten::convolution", "aten::_convolution", "aten::mkldnn_convolution"};
  static const char* const transposed[] = {"aten::conv_transpose1d", "aten::conv_transpose2d",
                                           "aten::conv_transpose3d"};
  for (const char* n : matmuls) if (std::strcmp(name, n) == 0) return MacKind::matmul;
  for (const char* n : convolutions) if (std::strcmp(name, n) == 0) return MacKind::convolution;
  for (const char* n : transposed) if (std::strcmp(name, n) == 0) return MacKind::transposed_convolution;
  return MacKind::none;
}

// The observer's state. RecordFunction callbacks are plain function pointers, so it is
// thread-local; measure_macs registers a thread-local callback, so only its own thread counts.
thread_local int64_t counted_macs = 0;
thread_local int counted_depth = 0;

struct MacContext : at::ObserverContext {
  bool outermost = false;
  int64_t per_output = 0;  // MACs per output element; 0 when counted at the start
};

const at::Tensor* tensor_input(const at::RecordFunction& fn, size_t index) {
  auto inputs = fn.inputs();
  if (index >= inputs.size() || !inputs[index].isTensor()) return nullptr;
  return &inputs[index].toTensor();
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  MacKind kind = mac_kind(fn.name());
  if (kind == MacKind::none) return nullptr;
  auto context = std::make_unique<MacContext>();
  context->outermost = counted_depth++ == 0;
  if (!context->outermost) return context;
  std::string name = fn.name();
  if (kind == MacKind::linear) {
    // kd::linear(x [..., in], weight [out, in], ...): counted at the start (its outputs are not recorded).
    const at::Tensor* x = tensor_input(fn, 0);
    const at::Tensor* weight = tensor_input(fn, 1);
    if (x && weight && x->dim() > 0 && x->size(-1) > 0 && weight->dim() == 2) {
      counted_macs += x->numel() / x->size(-1) * weight->numel();
    }
  } else if (kind == MacKind::matmul) {
    // The reduction length: linear's weight is [out, in]; addmm/baddbmm(self, a, b); mm/bmm/matmul(a, b).
    bool with_self = name == "aten::addmm" || name == "aten::baddbmm";
    const at::Tensor* a = tensor_input(fn, name == "aten::linear" ? 1 : with_self ? 1 : 0);
    if (a && a->dim() > 0) context->per_output = a->size(-1);
  } else {
    const at::Tensor* input = tensor_input(fn, 0);
    const at::Tensor* weight = tensor_input(fn, 1);
    if (weight && weight->dim() > 0 && weight->size(0) > 0) {
      int64_t per_weight_row = weight->numel() / weight->size(0);
      if (kind == MacKind::convolution) {
        context->per_output = per_weight_row;
      } else if (input) {
        counted_macs += input->numel() * per_weight_row;
      }
    }
  }
  return context;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext* base) {
  auto* context = static_cast<MacContext*>(base);
  if (context == nullptr) return;
  --counted_depth;
  if (!context->outermost || context->per_output == 0) return;
  const auto& outputs = fn.outputs();
  if (!outputs.empty() && outputs[0].isTensor()) counted_macs += outputs[0].toTensor().numel() * context->per_output;
}

}  // namespace

int64_t measure_macs(Model& model, const std::vector<int64_t>& input_shape) {
  std::vector<int64_t> shape = {1};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  auto handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(on_start, on_end).needsInputs(true).needsOutputs(true).scopes({at::RecordScope::FUNCTION}));
  counted_macs = 0;
  counted_depth = 0;
  try {
    torch::NoGradGuard no_grad;
    model.set_training(false);
    model.forward(torch::zeros(shape));
  } catch (...) {
    at::removeCallback(handle);
    throw;
  }
  at::removeCallback(handle);
  return counted_macs;
}

}  // namespace kd::models
