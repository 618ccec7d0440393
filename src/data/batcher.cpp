#include "kd/data/batcher.h"

#include <ATen/CPUGeneratorImpl.h>

#include "kd/util/error.h"

namespace kd::data {

Batcher::Batcher(std::vector<torch::Tensor> tensors, const BatcherOptions& options)
    : tensors_(std::move(tensors)), options_(options) {
  if (options_.batch_size() < 1) fail("batch_size: {} is not a positive number", options_.batch_size());
  KD_CHECK(!tensors_.empty(), "Batcher needs at least one tensor");
  rows_ = tensors_[0].size(0);
  for (auto& t : tensors_) {
    KD_CHECK(t.size(0) == rows_, "Batcher tensors have {} and {} rows", rows_, t.size(0));
    t = t.contiguous();
  }
}

int64_t Batcher::batches() const {
  int64_t size = options_.batch_size();
  return options_.drop_last() && rows_ >= size ? rows_ / size : (rows_ + size - 1) / size;
}

void Batcher::prepare_epoch(int64_t epoch) {
  if (order_epoch_ == epoch) return;
  if (options_.shuffle()) {
    // One generator per epoch, seeded from (seed, epoch): any epoch can be replayed alone.
    auto generator = at::make_generator<at::CPUGeneratorImpl>(options_.seed() * 1000003ULL + static_cast<uint64_t>(epoch));
    order_ = torch::randperm(rows_, generator, torch::TensorOptions().dtype(torch::kLong));
  } else {
    order_ = torch::arange(rows_, torch::kLong);
  }
  order_epoch_ = epoch;
}

torch::Tensor Batcher::batch_rows(int64_t epoch, int64_t index) {
  KD_CHECK(index >= 0 && index < batches(), "batch {} of {}", index, batches());
  prepare_epoch(epoch);
  int64_t start = index * options_.batch_size();
  int64_t end = std::min(rows_, start + options_.batch_size());
  return order_.slice(0, start, end);
}

std::vector<torch::Tensor> Batcher::batch(int64_t epoch, int64_t index) {
  auto rows = batch_rows(epoch, index);
  std::vector<torch::Tensor> out;
  out.reserve(tensors_.size());
  for (const auto& t : tensors_) out.push_back(t.index_select(0, rows));
  return out;
}

}  // namespace kd::data
