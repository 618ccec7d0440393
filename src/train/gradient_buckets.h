// The gradients of a data-parallel step summed over the group's ranks while the backward pass still
// runs, in buckets, as PyTorch's DistributedDataParallel does: the parameters in reverse order (about
// the order backward finishes them) are cut into buckets of about `bucket_bytes`; a hook on each
// parameter copies its gradient into its bucket as backward hands it over, and a bucket whose
// gradients are all in starts its all-reduce at once (after every bucket before it), on the group's
// communication thread.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <vector>

#include "kd/dist/group.h"

namespace kd::train {

class GradientBuckets {
 public:
  // `values`: how many numbers (the loss and its terms) are summed with the gradients each step.
  GradientBuckets(std::vector<torch::Tensor> parameters, size_t values, dist::Group& group, int64_t bucket_bytes);
  ~GradientBuckets();
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  // Before a step's backward pass: this rank's `values`, which ride in the last bucket.
  void begin(const std::vector<double>& values);
  // After it (or a step without one): a parameter backward gave nothing counts zeros (its .grad when
  // set otherwise); waits for every bucket. Each parameter's gradient becomes the sum over the ranks (a
  // view into its bucket) and `values` the summed values.
  void finish(std::vector<double>& values);
  int64_t buckets() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Bucket {
    std::vector<size_t> members;  // indices into parameters_
    torch::Tensor flat;           // float32: the members' gradients, then (the last bucket) the values
    size_t waiting = 0;           // members not in yet this step
    std::function<void()> wait;   // set once started
  };
  void arrived(size_t parameter, const torch::Tensor& gradient);
  // Starts the all-reduce of the next buckets whose gradients are all in (`all`: of every bucket left).
  void start_ready(bool all = false);

  std::vector<torch::Tensor> parameters_;
  std::vector<unsigned> hooks_;
  std::vector<size_t> bucket_of_;
  std::vector<int64_t> offset_of_;  // in its bucket's flat tensor
  std::vector<bool> in_;            // this step
  std::vector<Bucket> buckets_;
  size_t values_;
  int64_t values_offset_ = 0;  // in the last bucket
  dist::Group& group_;
  size_t next_ = 0;      // the first bucket not started this step
  bool active_ = false;  // between begin and finish
};

}  // namespace kd::train
