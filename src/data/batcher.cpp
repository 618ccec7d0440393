#include "kd/data/batcher.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include "kd/util/error.h"

namespace kd::data {

Batcher::Batcher(std::vector<torch::Tensor> tensors, const BatcherOptions& options)
    : tensors_(std::move(tensors)), options_(options) {
  if (options_.batch_size() < 1) fail("batch_size: {} is not a positive number", options_.batch_size());
  KD_CHECK(options_.shard_count() >= 1 && options_.shard_rank() >= 0 && options_.shard_rank() < options_.shard_count(),
           "Batcher shard {} of {}", options_.shard_rank(), options_.shard_count());
  KD_CHECK(!tensors_.empty(), "Batcher needs at least one tensor");
  rows_ = tensors_[0].size(0);
  KD_CHECK(options_.sharded().empty() || options_.sharded().size() == tensors_.size(), "Batcher: {} sharded flags for {} tensors",
           options_.sharded().size(), tensors_.size());
  int64_t owned = (rows_ - options_.shard_rank() + options_.shard_count() - 1) / options_.shard_count();
  for (size_t i = 0; i < tensors_.size(); ++i) {
    auto& t = tensors_[i];
    int64_t expected = is_sharded(i) ? owned : rows_;
    KD_CHECK(t.size(0) == expected, "Batcher tensor {} has {} rows, expected {}", i, t.size(0), expected);
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

int64_t Batcher::global_batch_rows(int64_t index) const {
  KD_CHECK(index >= 0 && index < batches(), "batch {} of {}", index, batches());
  int64_t start = index * options_.batch_size();
  return std::min(rows_, start + options_.batch_size()) - start;
}

torch::Tensor Batcher::batch_rows(int64_t epoch, int64_t index) {
  int64_t count = global_batch_rows(index);
  prepare_epoch(epoch);
  int64_t start = index * options_.batch_size();
  torch::Tensor rows = order_.slice(0, start, start + count);
  if (options_.shard_count() == 1) return rows;
  return rows.masked_select(rows.remainder(options_.shard_count()).eq(options_.shard_rank()));
}

namespace {

// Rows `rows` of a contiguous CPU tensor, copied whole: index_select's general kernel took ~4 us a call on
// a tabular student's batch of 128 (three tensors: a sixth of its training step).
torch::Tensor gather_rows(const torch::Tensor& t, const int64_t* rows, int64_t count) {
  auto sizes = t.sizes().vec();
  sizes[0] = count;
  torch::Tensor out = torch::empty(sizes, t.options());
  auto row_bytes = static_cast<size_t>(t.numel() / t.size(0)) * t.element_size();
  const auto* from = static_cast<const char*>(t.data_ptr());
  auto* to = static_cast<char*>(out.data_ptr());
  // Threads from 256 KB of copying on (a batch of 128 Fashion-MNIST images is 400 KB).
  auto grain = static_cast<int64_t>(std::max<size_t>(1, (size_t{1} << 18) / std::max<size_t>(1, row_bytes)));
  // Rows are random in a table larger than the caches: the row a few ahead (up to 256 bytes of it: a
  // tabular row, the head of a longer one) is fetched while this one is copied.
  constexpr int64_t kAhead = 4;
  size_t fetched = std::min<size_t>(row_bytes, 256);
  at::parallel_for(0, count, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (i + kAhead < end) {
        const char* ahead = from + rows[i + kAhead] * row_bytes;
        for (size_t b = 0; b < fetched; b += 64) __builtin_prefetch(ahead + b);
      }
      std::memcpy(to + i * row_bytes, from + rows[i] * row_bytes, row_bytes);
    }
  });
  return out;
}

}  // namespace

std::vector<torch::Tensor> Batcher::batch(int64_t epoch, int64_t index) {
  auto rows = batch_rows(epoch, index);
  torch::Tensor local;  // the rows' places in tensors that hold this shard's rows only
  std::vector<torch::Tensor> out;
  out.reserve(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const auto& t = tensors_[i];
    const torch::Tensor* at = &rows;
    if (is_sharded(i)) {
      if (!local.defined()) local = rows.div(options_.shard_count(), "floor");
      at = &local;
    }
    bool plain = t.is_cpu() && t.layout() == torch::kStrided && !t.is_quantized() && t.numel() > 0;
    out.push_back(plain ? gather_rows(t, at->data_ptr<int64_t>(), at->size(0)) : t.index_select(0, *at));
  }
  return out;
}

}  // namespace kd::data
