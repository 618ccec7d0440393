#include "kd/models/dense_chain.h"

#include <ATen/autocast_mode.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "kd/models/model.h"
#include "kd/util/error.h"
#include "kd/util/simd.h"

namespace kd::models {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

enum class Activation : int64_t { relu, leaky_relu, tanh, gelu, silu };

std::optional<Activation> parse_activation(const std::string& name) {
  if (name == "relu") return Activation::relu;
  if (name == "leaky_relu") return Activation::leaky_relu;
  if (name == "tanh") return Activation::tanh;
  if (name == "gelu") return Activation::gelu;
  if (name == "silu") return Activation::silu;
  return std::nullopt;
}

// gelu and silu have no cheap derivative in terms of their output: the backward needs the input.
bool needs_input(Activation activation) { return activation == Activation::gelu || activation == Activation::silu; }

torch::Tensor activate(Activation activation, const torch::Tensor& x, double slope) {
  switch (activation) {
    case Activation::relu:
      return torch::relu(x);
    case Activation::leaky_relu:
      return torch::leaky_relu(x, slope);
    case Activation::tanh:
      return torch::tanh(x);
    case Activation::gelu:
      return torch::gelu(x);
    case Activation::silu:
      return torch::silu(x);
  }
  KD_CHECK(false, "activation {}", static_cast<int64_t>(activation));
}

}  // namespace

torch::Tensor activate(const std::string& name, const torch::Tensor& x, double slope) {
  auto parsed = parse_activation(name);
  KD_CHECK(parsed.has_value(), "unknown activation {}", name);
  return activate(*parsed, x, slope);
}

namespace {

// The chain in libtorch ops: the reference, and the path for whatever the kernels do not take.
torch::Tensor chain_ops(const torch::Tensor& x, const std::vector<DenseLayer>& layers, Activation activation,
                        double slope) {
  torch::Tensor h = x;
  for (size_t l = 0; l < layers.size(); ++l) {
    h = linear(h, layers[l].weight, layers[l].bias);
    if (l + 1 < layers.size()) h = activate(activation, h, slope);
  }
  return h;
}

// relu (slope 0) and leaky relu in place, and their derivatives from the output (positive exactly where
// the input is), with libtorch's selects: a NaN input stays NaN, -inf goes to 0 under relu.
KD_VECTOR_CLONES void relu_in_place(float* z, int64_t n, float slope) {
  if (slope == 0.0f) {
    for (int64_t i = 0; i < n; ++i) z[i] = z[i] < 0.0f ? 0.0f : z[i];
  } else {
    for (int64_t i = 0; i < n; ++i) z[i] = z[i] < 0.0f ? z[i] * slope : z[i];
  }
}

KD_VECTOR_CLONES void relu_backward_in_place(float* grad, const float* out, int64_t n, float slope) {
  if (slope == 0.0f) {
    for (int64_t i = 0; i < n; ++i) grad[i] = out[i] <= 0.0f ? 0.0f : grad[i];
  } else {
    for (int64_t i = 0; i < n; ++i) grad[i] = out[i] > 0.0f ? grad[i] : grad[i] * slope;
  }
}

// Column sums of g [rows, cols] (the bias gradient), row by row: the same order on any thread count.
KD_VECTOR_CLONES void column_sums(const float* g, int64_t rows, int64_t cols, float* sums) {
  for (int64_t c = 0; c < cols; ++c) sums[c] = 0.0f;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = g + r * cols;
    for (int64_t c = 0; c < cols; ++c) sums[c] += row[c];
  }
}

// z = h W^T + b, one product onto the bias copied into each row. Recorded as kd::linear, as
// models::linear's product is, for the multiply-add count (models/macs.h).
torch::Tensor affine(const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& bias) {
  RECORD_FUNCTION("kd::linear", std::vector<c10::IValue>({h, weight}));
  int64_t rows = h.size(0), in = weight.size(1), out = weight.size(0);
  torch::Tensor z = torch::empty({rows, out}, h.options());
  float* zp = z.data_ptr<float>();
  if (bias.defined()) {
    const float* b = bias.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r) std::memcpy(zp + r * out, b, static_cast<size_t>(out) * sizeof(float));
  }
  sgemm(false, true, rows, out, in, h.data_ptr<float>(), weight.data_ptr<float>(), zp, bias.defined());
  return z;
}

// The chain's forward on its kernels; with `outputs` and `inputs`, what the backward needs: each hidden
// layer's output and, for gelu and silu, its input.
torch::Tensor chain_forward(const torch::Tensor& x, at::TensorList parameters, const std::vector<int64_t>& has_bias,
                            Activation activation, double slope, std::vector<torch::Tensor>* outputs,
                            std::vector<torch::Tensor>* inputs) {
  torch::Tensor h = x;
  size_t p = 0;
  for (size_t l = 0; l < has_bias.size(); ++l) {
    const torch::Tensor& weight = parameters[p++];
    torch::Tensor bias = has_bias[l] ? parameters[p++] : torch::Tensor();
    torch::Tensor z = affine(h, weight, bias);
    if (l + 1 == has_bias.size()) return z;
    switch (activation) {
      case Activation::relu:
      case Activation::leaky_relu:
        relu_in_place(z.data_ptr<float>(), z.numel(), activation == Activation::relu ? 0.0f : static_cast<float>(slope));
        h = z;
        break;
      case Activation::tanh:
        h = z.tanh_();
        break;
      case Activation::gelu:
        h = at::gelu(z);
        break;
      case Activation::silu:
        h = at::silu(z);
        break;
    }
    if (inputs != nullptr && needs_input(activation)) inputs->push_back(z);
    if (outputs != nullptr) outputs->push_back(h);
  }
  return h;
}

// Saved: x and the parameters (save_for_backward, which checks they are not changed in place before
// the backward), each hidden layer's output and, for gelu and silu, its input.
struct DenseChain : torch::autograd::Function<DenseChain> {
  static torch::Tensor forward(AutogradContext* context, const torch::Tensor& x, at::TensorList parameters,
                               std::vector<int64_t> has_bias, int64_t activation_code, double slope) {
    std::vector<torch::Tensor> outputs, inputs;
    torch::Tensor y = chain_forward(x, parameters, has_bias, static_cast<Activation>(activation_code), slope,
                                    &outputs, &inputs);
    variable_list saved = {x};
    saved.insert(saved.end(), parameters.begin(), parameters.end());
    context->save_for_backward(saved);
    context->saved_data["has_bias"] = has_bias;
    context->saved_data["activation"] = activation_code;
    context->saved_data["slope"] = slope;
    context->saved_data["outputs"] = outputs;
    context->saved_data["inputs"] = inputs;
    return y;
  }

  static variable_list backward(AutogradContext* context, variable_list grads) {
    variable_list saved = context->get_saved_variables();
    auto has_bias = context->saved_data["has_bias"].toIntVector();
    auto activation = static_cast<Activation>(context->saved_data["activation"].toInt());
    double slope = context->saved_data["slope"].toDouble();
    if (torch::GradMode::is_enabled()) return differentiable_backward(saved, has_bias, activation, slope, grads[0], context);
    // The three trailing non-tensor arguments (has_bias, activation, slope) get no gradient.
    variable_list result(saved.size() + 3);
    if (!grads[0].defined()) return result;

    auto outputs = context->saved_data["outputs"].toTensorVector();
    auto inputs = context->saved_data["inputs"].toTensorVector();
    const torch::Tensor& x = saved[0];
    int64_t rows = x.size(0);
    // Index in `saved` (and in the gradients) of each layer's weight; its bias follows when it has one.
    std::vector<size_t> first(has_bias.size());
    for (size_t l = 0, p = 1; l < has_bias.size(); ++l) {
      first[l] = p;
      p += has_bias[l] ? 2 : 1;
    }
    torch::Tensor g = grads[0].contiguous();
    for (size_t l = has_bias.size(); l-- > 0;) {
      const torch::Tensor& weight = saved[first[l]];
      int64_t in = weight.size(1), out = weight.size(0);
      const torch::Tensor& h = l == 0 ? x : outputs[l - 1];
      if (context->needs_input_grad(first[l])) {
        result[first[l]] = torch::empty({out, in}, weight.options());
        sgemm(true, false, out, in, rows, g.data_ptr<float>(), h.data_ptr<float>(),
              result[first[l]].data_ptr<float>(), false);
      }
      if (has_bias[l] && context->needs_input_grad(first[l] + 1)) {
        result[first[l] + 1] = torch::empty({out}, weight.options());
        column_sums(g.data_ptr<float>(), rows, out, result[first[l] + 1].data_ptr<float>());
      }
      if (l == 0 && !context->needs_input_grad(0)) break;
      torch::Tensor dh = torch::empty({rows, in}, g.options());
      sgemm(false, false, rows, in, out, g.data_ptr<float>(), weight.data_ptr<float>(), dh.data_ptr<float>(), false);
      if (l == 0) {
        result[0] = dh;
        break;
      }
      switch (activation) {
        case Activation::relu:
        case Activation::leaky_relu:
          relu_backward_in_place(dh.data_ptr<float>(), h.data_ptr<float>(), dh.numel(),
                                 activation == Activation::relu ? 0.0f : static_cast<float>(slope));
          break;
        case Activation::tanh:
          dh = at::tanh_backward(dh, h);
          break;
        case Activation::gelu:
          dh = at::gelu_backward(dh, inputs[l - 1]);
          break;
        case Activation::silu:
          dh = at::silu_backward(dh, inputs[l - 1]);
          break;
      }
      g = dh;
    }
    return result;
  }

  // Under create_graph: the forward again in libtorch ops from the saved inputs, and its gradient
  // taken with a graph of its own.
  static variable_list differentiable_backward(const variable_list& saved, const std::vector<int64_t>& has_bias,
                                               Activation activation, double slope, const torch::Tensor& grad,
                                               AutogradContext* context) {
    std::vector<DenseLayer> layers;
    for (size_t l = 0, p = 1; l < has_bias.size(); ++l) {
      DenseLayer layer{saved[p++], torch::Tensor()};
      if (has_bias[l]) layer.bias = saved[p++];
      layers.push_back(layer);
    }
    variable_list wanted;
    std::vector<size_t> where;
    for (size_t i = 0; i < saved.size(); ++i) {
      if (context->needs_input_grad(i)) {
        wanted.push_back(saved[i]);
        where.push_back(i);
      }
    }
    variable_list result(saved.size() + 3);
    if (wanted.empty()) return result;
    torch::Tensor y = chain_ops(saved[0], layers, activation, slope);
    auto computed = torch::autograd::grad({y}, wanted, {grad}, /*retain_graph=*/true, /*create_graph=*/true,
                                          /*allow_unused=*/true);
    for (size_t i = 0; i < where.size(); ++i) result[where[i]] = computed[i];
    return result;
  }
};

bool is_cpu_float(const torch::Tensor& t) {
  return t.defined() && t.is_cpu() && t.layout() == torch::kStrided && t.scalar_type() == torch::kFloat;
}

}  // namespace

bool fits_dense_chain(const torch::Tensor& x, const std::vector<DenseLayer>& layers, const std::string& activation) {
  if (layers.empty() || !parse_activation(activation) || !is_cpu_float(x) || x.dim() != 2 || x.size(0) == 0 ||
      at::autocast::is_cpu_enabled()) {
    return false;
  }
  int64_t features = x.size(1);
  for (const DenseLayer& layer : layers) {
    const torch::Tensor& w = layer.weight;
    if (!is_cpu_float(w) || w.dim() != 2 || w.size(1) != features || w.size(0) == 0) return false;
    if (layer.bias.defined() && (!is_cpu_float(layer.bias) || layer.bias.dim() != 1 || layer.bias.size(0) != w.size(0))) {
      return false;
    }
    features = w.size(0);
  }
  return true;
}

torch::Tensor dense_chain(const torch::Tensor& x, const std::vector<DenseLayer>& layers, const std::string& activation,
                          double slope) {
  auto parsed = parse_activation(activation);
  KD_CHECK(parsed.has_value(), "dense_chain: unknown activation {}", activation);
  if (!fits_dense_chain(x, layers, activation)) return chain_ops(x, layers, *parsed, slope);
  std::vector<torch::Tensor> parameters;
  std::vector<int64_t> has_bias;
  for (const DenseLayer& layer : layers) {
    parameters.push_back(layer.weight.contiguous());
    if (layer.bias.defined()) parameters.push_back(layer.bias.contiguous());
    has_bias.push_back(layer.bias.defined() ? 1 : 0);
  }
  torch::Tensor input = x.contiguous();
  bool record = torch::GradMode::is_enabled() &&
                (input.requires_grad() ||
                 std::any_of(parameters.begin(), parameters.end(), [](const torch::Tensor& p) { return p.requires_grad(); }));
  // Nothing to differentiate (inference, a frozen model): the kernels without the autograd node.
  if (!record) return chain_forward(input, parameters, has_bias, *parsed, slope, nullptr, nullptr);
  return DenseChain::apply(input, at::TensorList(parameters), has_bias, static_cast<int64_t>(*parsed), slope);
}

}  // namespace kd::models
