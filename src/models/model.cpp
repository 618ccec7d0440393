#include "kd/models/model.h"

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/record_function.h>
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>

#include <algorithm>

#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::models {

int64_t count_params(Model& model) {
  int64_t total = 0;
  for (const auto& parameter : model.parameters()) total += parameter.numel();
  return total;
}

torch::Device device_of(Model& model) {
  auto parameters = model.parameters();
  return parameters.empty() ? torch::Device(torch::kCPU) : parameters.front().device();
}

DeviceScope::DeviceScope(Model* model, torch::Device device) {
  if (model == nullptr || device.is_cpu()) return;
  model->to(device);
  model_ = model;
}

DeviceScope::~DeviceScope() {
  if (model_) model_->to(torch::kCPU);
}

void check_taps(Model& model, const std::vector<std::string>& taps) {
  std::vector<std::string> names;
  for (const auto& tap : taps) {
    if (tap == kOutputTap) continue;
    if (names.empty()) names = model.tap_names();
    if (std::find(names.begin(), names.end(), tap) != names.end()) continue;
    if (names.empty()) fail("tap {}: {} models have no feature taps, only {}", quote(tap), model.kind(), quote(kOutputTap));
    auto suggestion = nearest(tap, names);
    fail("tap {}: the {} model has no such tap{}; the nearest of its {}: {}; `kdistill inspect` lists them", quote(tap),
         model.kind(), suggestion ? " (did you mean " + quote(*suggestion) + "?)" : std::string(), names.size(),
         join(nearest_few(tap, names, 4), ", "));
  }
}

std::vector<torch::Tensor> token_id_inputs(const torch::Tensor& input, const std::vector<std::string>& names,
                                           int64_t pad_id, const std::string& what) {
  torch::Tensor ids = input.to(torch::kLong);
  std::vector<torch::Tensor> values;
  for (const auto& name : names) {
    if (name == "input_ids") {
      values.push_back(ids);
    } else if (name == "attention_mask") {
      values.push_back(ids.ne(pad_id).to(torch::kLong));
    } else if (name == "token_type_ids") {
      values.push_back(torch::zeros_like(ids));
    } else {
      fail("{} takes input_ids and {}, which kdistill cannot fill (it fills input_ids, attention_mask and "
           "token_type_ids)", what, quote(name));
    }
  }
  return values;
}

TappedForward Model::forward_taps(const torch::Tensor& input, const std::vector<std::string>& taps) {
  check_taps(*this, taps);
  TappedForward result{forward(input), {}};
  for (size_t i = 0; i < taps.size(); ++i) result.taps.push_back(result.output);
  return result;
}

namespace {

// Below this many multiply-adds a product runs on the calling thread alone: oneDNN starts an OpenMP team
// for every call, and waking and joining the other thread cost more than it saves on a small student's
// products (a tabular student's 128x16x40 and 128x4x16: 1.3 and 3.6 us with the team).
constexpr int64_t kSerialGemmMacs = int64_t{1} << 18;

}  // namespace

void sgemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, const float* a, const float* b,
           float* c, bool accumulate) {
  // oneDNN sizes its OpenMP team from this thread's setting: ATen's first call on a thread applies
  // the --threads count to it (once per thread; init_num_threads on every call would also rebuild
  // libtorch's thread pool each time).
  int threads = at::get_num_threads();
  bool serial = threads > 1 && m * n * k < kSerialGemmMacs;
  if (serial) omp_set_num_threads(1);
  dnnl_status_t status = dnnl_sgemm(transpose_a ? 'T' : 'N', transpose_b ? 'T' : 'N', m, n, k, 1.0f, a,
                                    transpose_a ? m : k, b, transpose_b ? k : n, accumulate ? 1.0f : 0.0f, c, n);
  if (serial) omp_set_num_threads(threads);
  KD_CHECK(status == dnnl_success, "oneDNN sgemm {}x{}x{} failed with status {}", m, n, k, static_cast<int>(status));
}

namespace {

// oneDNN's sgemm ran the three products of a 784x1200 or 1200x1200 layer at batch 128 (forward,
// input gradient, weight gradient) at 280-380 GFLOP/s on 2 AVX-512 cores, against 167-274 for
// OpenBLAS (Haswell or Cooperlake kernels) and 160-350 for libtorch's mkldnn inner product, whose
// forward reorders the weight on every call; a 784x32 layer ran 2-4x faster than OpenBLAS. Below
// about 64K multiply-adds (a 32x10 head at batch 128) a call costs more than OpenBLAS's.
constexpr int64_t kOneDnnGemmMacs = int64_t{1} << 16;

// x [rows, in] W^T [in, out] + b through sgemm, forward and backward. Under create_graph the
// backward is written in torch ops, so that it is differentiable itself.
torch::Tensor onednn_linear_forward(torch::autograd::AutogradContext* context, const torch::Tensor& x,
                                    const torch::Tensor& weight, const torch::Tensor& bias) {
  RECORD_FUNCTION("kd::linear", std::vector<c10::IValue>({x, weight}));
  int64_t rows = x.size(0), in = weight.size(1), out = weight.size(0);
  // The bias copied into every row of a new tensor: with one row, bias.expand(...).contiguous() would be
  // the bias itself, and the product below would accumulate into the parameter.
  torch::Tensor y = torch::empty({rows, out}, x.options());
  if (bias.defined()) y.copy_(bias.expand({rows, out}));
  sgemm(false, true, rows, out, in, x.data_ptr<float>(), weight.data_ptr<float>(), y.data_ptr<float>(),
        bias.defined());
  context->save_for_backward({x, weight});
  return y;
}

// Gradients of x, weight and (with `bias`) the bias.
torch::autograd::tensor_list onednn_linear_backward(torch::autograd::AutogradContext* context,
                                                    const torch::Tensor& upstream, bool bias) {
  auto saved = context->get_saved_variables();
  const torch::Tensor& x = saved[0];
  const torch::Tensor& weight = saved[1];
  torch::Tensor grad = upstream.contiguous();
  torch::autograd::tensor_list grads(bias ? 3 : 2);
  int64_t rows = x.size(0), in = weight.size(1), out = weight.size(0);
  bool differentiable = torch::GradMode::is_enabled();
  if (context->needs_input_grad(0)) {
    if (differentiable) {
      grads[0] = grad.mm(weight);
    } else {
      grads[0] = torch::empty({rows, in}, x.options());
      sgemm(false, false, rows, in, out, grad.data_ptr<float>(), weight.data_ptr<float>(), grads[0].data_ptr<float>(),
            false);
    }
  }
  if (context->needs_input_grad(1)) {
    if (differentiable) {
      grads[1] = grad.t().mm(x);
    } else {
      grads[1] = torch::empty({out, in}, weight.options());
      sgemm(true, false, out, in, rows, grad.data_ptr<float>(), x.data_ptr<float>(), grads[1].data_ptr<float>(),
            false);
    }
  }
  if (bias && context->needs_input_grad(2)) grads[2] = grad.sum(0);
  return grads;
}

// Two functions, as a custom autograd function's tensor inputs must all be defined.
struct OneDnnLinear : torch::autograd::Function<OneDnnLinear> {
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias) {
    return onednn_linear_forward(context, x, weight, bias);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* context,
                                               torch::autograd::tensor_list grads) {
    return onednn_linear_backward(context, grads[0], true);
  }
};

struct OneDnnLinearNoBias : torch::autograd::Function<OneDnnLinearNoBias> {
  static torch::Tensor forward(torch::autograd::AutogradContext* context, const torch::Tensor& x,
                               const torch::Tensor& weight) {
    return onednn_linear_forward(context, x, weight, torch::Tensor());
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* context,
                                               torch::autograd::tensor_list grads) {
    return onednn_linear_backward(context, grads[0], false);
  }
};

bool fits_onednn_gemm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  auto is_cpu_float = [](const torch::Tensor& t) {
    return t.is_cpu() && t.layout() == torch::kStrided && t.scalar_type() == torch::kFloat;
  };
  return x.dim() == 2 && weight.dim() == 2 && is_cpu_float(x) && is_cpu_float(weight) &&
         (!bias.defined() || (bias.dim() == 1 && is_cpu_float(bias) && bias.size(0) == weight.size(0))) &&
         x.size(1) == weight.size(1) && !at::autocast::is_cpu_enabled() &&
         x.size(0) * weight.size(0) * weight.size(1) >= kOneDnnGemmMacs;
}

}  // namespace

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (!fits_onednn_gemm(x, weight, bias)) return torch::linear(x, weight, bias);
  if (!bias.defined()) return OneDnnLinearNoBias::apply(x.contiguous(), weight.contiguous());
  return OneDnnLinear::apply(x.contiguous(), weight.contiguous(), bias);
}

}  // namespace kd::models
