#include "gradient_buckets.h"

namespace kd::train {

GradientBuckets::GradientBuckets(std::vector<torch::Tensor> parameters, size_t values, dist::Group& group,
                                 int64_t bucket_bytes)
    : parameters_(std::move(parameters)), values_(values), group_(group) {
  const size_t n = parameters_.size();
  bucket_of_.assign(n, 0);
  offset_of_.assign(n, 0);
  in_.assign(n, false);
  // Reverse order: the last layers' gradients come first in backward.
  std::vector<std::vector<size_t>> members(1);
  int64_t bytes = 0;
  for (size_t k = n; k-- > 0;) {
    int64_t size = parameters_[k].numel() * 4;
    if (!members.back().empty() && bytes + size > bucket_bytes) {
      members.emplace_back();
      bytes = 0;
    }
    members.back().push_back(k);
    bytes += size;
  }
  torch::TensorOptions options = torch::TensorOptions().dtype(torch::kFloat);
  if (n > 0) options = options.device(parameters_.front().device());
  for (size_t b = 0; b < members.size(); ++b) {
    Bucket bucket;
    bucket.members = members[b];
    int64_t offset = 0;
    for (size_t k : bucket.members) {
      bucket_of_[k] = b;
      offset_of_[k] = offset;
      offset += parameters_[k].numel();
    }
    if (b + 1 == members.size()) {
      values_offset_ = offset;
      offset += static_cast<int64_t>(values_);
    }
    bucket.flat = torch::zeros({offset}, options);
    buckets_.push_back(std::move(bucket));
  }
  for (size_t k = 0; k < n; ++k) {
    hooks_.push_back(parameters_[k].register_hook([this, k](const torch::Tensor& gradient) { arrived(k, gradient); }));
  }
}

GradientBuckets::~GradientBuckets() {
  for (size_t k = 0; k < hooks_.size(); ++k) parameters_[k].remove_hook(hooks_[k]);
}

void GradientBuckets::begin(const std::vector<double>& values) {
  TORCH_CHECK(values.size() == values_, "GradientBuckets: ", values.size(), " values for ", values_);
  std::fill(in_.begin(), in_.end(), false);
  for (auto& bucket : buckets_) {
    bucket.waiting = bucket.members.size();
    bucket.wait = nullptr;
  }
  next_ = 0;
  if (!buckets_.empty() && values_ > 0) buckets_.back().flat.slice(0, values_offset_).copy_(torch::tensor(values, torch::kDouble));
  active_ = true;
}

void GradientBuckets::arrived(size_t parameter, const torch::Tensor& gradient) {
  if (!active_) return;
  // Autograd sums a parameter's gradient from all its uses before the hook: one arrival a backward.
  TORCH_CHECK(!in_[parameter], "GradientBuckets: a second gradient of parameter ", parameter, " in one step");
  in_[parameter] = true;
  Bucket& bucket = buckets_[bucket_of_[parameter]];
  const auto& p = parameters_[parameter];
  bucket.flat.slice(0, offset_of_[parameter], offset_of_[parameter] + p.numel()).copy_(gradient.reshape(-1));
  --bucket.waiting;
  start_ready();
}

void GradientBuckets::start_ready(bool all) {
  // In bucket order, whatever order the gradients came in: the ranks' collectives must pair up.
  while (next_ < buckets_.size() && (all || buckets_[next_].waiting == 0)) {
    std::vector<torch::Tensor> tensors = {buckets_[next_].flat};
    buckets_[next_++].wait = group_.start_all_reduce_sum(tensors);
  }
}

void GradientBuckets::finish(std::vector<double>& values) {
  TORCH_CHECK(active_, "GradientBuckets: finish without begin");
  active_ = false;
  for (size_t k = 0; k < parameters_.size(); ++k) {
    if (in_[k]) continue;
    const auto& p = parameters_[k];
    auto slice = buckets_[bucket_of_[k]].flat.slice(0, offset_of_[k], offset_of_[k] + p.numel());
    if (p.grad().defined()) {
      slice.copy_(p.grad().reshape(-1));
    } else {
      slice.zero_();
    }
  }
  start_ready(true);
  for (auto& bucket : buckets_) bucket.wait();
  for (size_t k = 0; k < parameters_.size(); ++k) {
    auto& p = parameters_[k];
    auto sum = buckets_[bucket_of_[k]].flat.slice(0, offset_of_[k], offset_of_[k] + p.numel()).view_as(p);
    p.mutable_grad() = p.scalar_type() == torch::kFloat ? sum : sum.to(p.scalar_type());
  }
  if (!buckets_.empty() && values_ > 0) {
    auto tail = buckets_.back().flat.slice(0, values_offset_).to(torch::kCPU, torch::kDouble).contiguous();
    values.assign(tail.data_ptr<double>(), tail.data_ptr<double>() + values_);
  }
}

}  // namespace kd::train
