#include "kd/models/model.h"

namespace kd::models {

int64_t count_params(Model& model) {
  int64_t total = 0;
  for (const auto& parameter : model.parameters()) total += parameter.numel();
  return total;
}

}  // namespace kd::models
