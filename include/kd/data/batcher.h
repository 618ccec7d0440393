// Mini-batches from in-memory tensors by batched index_select: one gather per
// tensor per batch instead of libtorch's DataLoader, which stacks examples one by one.
//
//   Batcher batcher({x, y, teacher_logits}, BatcherOptions().batch_size(128).seed(3));
//   for (int64_t b = 0; b < batcher.batches(); ++b) auto [xb, yb, tb] = batcher.batch(epoch, b);
//
// The order of epoch e depends only on (seed, e), so a resumed run sees the same batches.
// Data-parallel ranks share that order: with shard(r, W), batch b holds the rows of the global batch b
// that rank r owns (row % W == r), so W ranks together see exactly one process's batches.
#pragma once

#include <torch/arg.h>
#include <torch/torch.h>

#include <vector>

namespace kd::data {

struct BatcherOptions {
  TORCH_ARG(int64_t, batch_size) = 128;
  TORCH_ARG(bool, shuffle) = true;
  TORCH_ARG(bool, drop_last) = false;
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(int64_t, shard_rank) = 0;   // this rank ...
  TORCH_ARG(int64_t, shard_count) = 1;  // ... of this many: it owns the rows with row % count == rank
  // Per tensor: true when it holds only this rank's rows (row r of the data at r / count).
  TORCH_ARG(std::vector<bool>, sharded) = {};
};

class Batcher {
 public:
  // Every tensor has the same first dimension (rows).
  Batcher(std::vector<torch::Tensor> tensors, const BatcherOptions& options);
  int64_t rows() const { return rows_; }
  int64_t batches() const;
  // Batch `index` of epoch `epoch`: one tensor per input tensor, rows in that epoch's order.
  std::vector<torch::Tensor> batch(int64_t epoch, int64_t index);
  // The row indices of that batch (int64), e.g. to look up cached teacher outputs.
  torch::Tensor batch_rows(int64_t epoch, int64_t index);
  // Rows in global batch `index`, over all shards (the last batch may be short).
  int64_t global_batch_rows(int64_t index) const;

 private:
  void prepare_epoch(int64_t epoch);
  bool is_sharded(size_t tensor) const { return tensor < options_.sharded().size() && options_.sharded()[tensor]; }

  std::vector<torch::Tensor> tensors_;
  BatcherOptions options_;
  int64_t rows_ = 0;
  int64_t order_epoch_ = -1;
  torch::Tensor order_;
};

}  // namespace kd::data
