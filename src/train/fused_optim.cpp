#include "kd/train/fused_optim.h"

#include <ATen/Parallel.h>

#include <cmath>

#include "kd/util/simd.h"

namespace kd::train {
namespace {

// One Adam step's constants, in the order of libtorch's ops (adam.cpp / adamw.cpp, 1.13):
//   p *= decay (AdamW);  g += l2 * p (Adam);  m = m * beta1 + (1 - beta1) * g;
//   v = v * beta2 + (1 - beta2) * g * g;  p += -step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// with the division by sqrt(1 - beta2^t) done as a product with its inverse.
struct AdamStep {
  float decay = 1.0f, l2 = 0.0f, beta1, one_minus_beta1, beta2, one_minus_beta2, inverse_sqrt_correction2,
        eps, minus_step_size;
};

// The loop is bound by its square root and division: built for AVX-512 and AVX2 as well, picked at load
// time (GCC's function multi-versioning), it runs 16 or 8 elements an instruction instead of SSE's 4.
KD_VECTOR_CLONES
void adam_range(float* p, const float* g, float* m, float* v, int64_t begin, int64_t end, const AdamStep& s) {
  for (int64_t i = begin; i < end; ++i) {
    float param = p[i] * s.decay;
    float grad = g[i] + s.l2 * param;
    float mean = m[i] * s.beta1 + s.one_minus_beta1 * grad;
    float square = v[i] * s.beta2 + s.one_minus_beta2 * grad * grad;
    m[i] = mean;
    v[i] = square;
    p[i] = param + s.minus_step_size * (mean / (std::sqrt(square) * s.inverse_sqrt_correction2 + s.eps));
  }
}

void adam_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamStep& s) {
  // 16K floats a chunk: enough work per thread to pay for the OpenMP hand-off.
  at::parallel_for(0, n, 16384, [&](int64_t begin, int64_t end) { adam_range(p, g, m, v, begin, end, s); });
}

bool fits_fused_step(const std::vector<torch::optim::OptimizerParamGroup>& groups) {
  for (const auto& group : groups) {
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const auto& g = p.grad();
      if (!p.is_cpu() || p.layout() != torch::kStrided || p.scalar_type() != torch::kFloat ||
          !p.is_contiguous() || g.layout() != torch::kStrided || g.scalar_type() != torch::kFloat ||
          g.device() != p.device()) {
        return false;
      }
    }
  }
  return true;
}

// The state libtorch's Adam/AdamW would keep for `p`, created as they create it.
torch::optim::AdamParamState& state_of(
    ska::flat_hash_map<std::string, std::unique_ptr<torch::optim::OptimizerParamState>>& states,
    const torch::Tensor& p) {
  auto key = c10::guts::to_string(p.unsafeGetTensorImpl());
  auto found = states.find(key);
  if (found == states.end()) {
    auto state = std::make_unique<torch::optim::AdamParamState>();
    state->step(0);
    state->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    state->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    found = states.emplace(key, std::move(state)).first;
  }
  return static_cast<torch::optim::AdamParamState&>(*found->second);
}

template <class Options>
void fused_adam_step(
    std::vector<torch::optim::OptimizerParamGroup>& groups,
    ska::flat_hash_map<std::string, std::unique_ptr<torch::optim::OptimizerParamState>>& states,
    bool decoupled) {
  torch::NoGradGuard no_grad;
  for (auto& group : groups) {
    const auto& options = static_cast<const Options&>(group.options());
    double beta1 = std::get<0>(options.betas()), beta2 = std::get<1>(options.betas());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& state = state_of(states, p);
      state.step(state.step() + 1);
      // exp_avg/exp_avg_sq come back from a checkpoint contiguous and of p's type (they were saved so).
      torch::Tensor grad = p.grad().contiguous();
      torch::Tensor m = state.exp_avg().contiguous(), v = state.exp_avg_sq().contiguous();
      double correction1 = 1 - std::pow(beta1, static_cast<double>(state.step()));
      double correction2 = 1 - std::pow(beta2, static_cast<double>(state.step()));
      AdamStep s;
      if (decoupled) {
        s.decay = static_cast<float>(1 - options.lr() * options.weight_decay());
      } else {
        s.l2 = static_cast<float>(options.weight_decay());
      }
      s.beta1 = static_cast<float>(beta1);
      s.one_minus_beta1 = static_cast<float>(1 - beta1);
      s.beta2 = static_cast<float>(beta2);
      s.one_minus_beta2 = static_cast<float>(1 - beta2);
      s.inverse_sqrt_correction2 = static_cast<float>(1 / std::sqrt(correction2));
      s.eps = static_cast<float>(options.eps());
      s.minus_step_size = static_cast<float>(-options.lr() / correction1);
      adam_update(p.data_ptr<float>(), grad.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(),
                  p.numel(), s);
      state.exp_avg(m);
      state.exp_avg_sq(v);
    }
  }
}

// The closure's loss, after the fused step, or after `fallback` (libtorch's step) where the fused one
// does not apply: amsgrad, or a parameter that is not contiguous float32 on the CPU.
template <class Options, class Fallback>
torch::Tensor adam_step(
    std::vector<torch::optim::OptimizerParamGroup>& groups,
    ska::flat_hash_map<std::string, std::unique_ptr<torch::optim::OptimizerParamState>>& states,
    const torch::optim::Optimizer::LossClosure& closure, bool decoupled, Fallback fallback) {
  torch::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  bool amsgrad = std::any_of(groups.begin(), groups.end(), [](const auto& group) {
    return static_cast<const Options&>(group.options()).amsgrad();
  });
  if (amsgrad || !fits_fused_step(groups)) {
    fallback();
  } else {
    fused_adam_step<Options>(groups, states, decoupled);
  }
  return loss;
}

}  // namespace

torch::Tensor FusedAdam::step(LossClosure closure) {
  return adam_step<torch::optim::AdamOptions>(param_groups_, state_, closure, false,
                                              [this] { torch::optim::Adam::step(); });
}

torch::Tensor FusedAdamW::step(LossClosure closure) {
  return adam_step<torch::optim::AdamWOptions>(param_groups_, state_, closure, true,
                                               [this] { torch::optim::AdamW::step(); });
}

}  // namespace kd::train
