// Adam and AdamW with the whole update of a float32 CPU parameter in one pass over memory, where
// libtorch's versions run about ten tensor ops per parameter (each a pass over parameter-sized
// buffers, plus temporaries). Same options, same per-parameter state (AdamParamState, under the same
// keys), so save/load and checkpoints are those of torch::optim::Adam / AdamW; parameters of any
// other type or device take libtorch's own step. Compiled with -fopenmp (CMakeLists.txt).
//
// Example:
//   FusedAdam optimizer(model.parameters(), torch::optim::AdamOptions(1e-3));
//   optimizer.zero_grad(); loss.backward(); optimizer.step();
#pragma once

#include <torch/torch.h>

namespace kd::train {

class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace kd::train
