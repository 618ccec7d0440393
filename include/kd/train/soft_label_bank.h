// A soft-label bank: the teacher's outputs on V augmented views of every training row, computed
// once and replayed (FKD, Shen & Xing 2022). Stored whole in float16, or as each view's k largest
// logits with what the others hold together (FKD also keeps only top-k soft labels), in memory
// up to a limit and in a memory-mapped file beyond it.
//
//   SoftLabelBank bank(rows, views, outputs, BankStorage().top_k(5).memory_limit(1 << 30));
//   bank.store(rows_0_to_127, view, logits);            // the teacher's float32 logits
//   torch::Tensor teacher = bank.gather(batch_rows, 3);  // float32 [batch, outputs]
#pragma once

#include <torch/arg.h>
#include <torch/torch.h>

#include <string>

namespace kd::train {

struct BankStorage {
  TORCH_ARG(int64_t, top_k) = 0;                     // 0: every output; k: the k largest logits and the rest's mass
  TORCH_ARG(int64_t, memory_limit) = int64_t{4} << 30;  // bytes; a larger bank lives in a memory-mapped file
  TORCH_ARG(std::string, spill_dir) = "";            // the file's folder ("" = the system's temporary folder)
};

// An uninitialised tensor in a memory-mapped file in `storage`'s spill_dir (the kernel pages it in and
// out), unlinked at once so that nothing is left behind; `what` names it in errors.
torch::Tensor mapped_empty(const std::vector<int64_t>& shape, torch::ScalarType dtype, const BankStorage& storage,
                           const std::string& what);

// kd::Error naming distill.bank.top_k when `storage` keeps no fewer logits than the teacher's
// `outputs` (the bank's constructor checks it; a run checks it as soon as the data says `outputs`).
void check_storage(const BankStorage& storage, int64_t outputs);

class SoftLabelBank {
 public:
  // Room for `views` views of `rows` rows of `outputs` outputs (check_storage: top_k below
  // `outputs`, 0 stores them all). The mapped file, when the bank outgrows memory_limit, is unlinked as soon
  // as it is mapped: it is gone with the bank, or with the process however that ends.
  SoftLabelBank(int64_t rows, int64_t views, int64_t outputs, const BankStorage& storage);

  // Stores the teacher's float32 logits [rows.size(0), outputs] of view `view` of `rows`.
  void store(const torch::Tensor& rows, int64_t view, const torch::Tensor& logits);
  // The stored logits of view `view` of `rows`, float32 [rows.size(0), outputs]; with top-k, every
  // output outside the top k gets the logit that gives all of them their stored probability at T = 1.
  torch::Tensor gather(const torch::Tensor& rows, int64_t view) const;

  int64_t rows() const { return values_.size(0); }
  int64_t views() const { return values_.size(1); }
  int64_t outputs() const { return outputs_; }
  int64_t top_k() const { return top_k_; }
  int64_t bytes() const;
  bool mapped() const { return mapped_; }
  // Largest storage error seen by store(): |logit - stored logit| for a whole bank; for top-k, the
  // largest |p - stored p| of any output at T = 1.
  double max_error() const { return max_error_; }
  // top-k: the mean probability (T = 1) that falls outside the kept k.
  double mean_rest_mass() const { return stored_rows_ > 0 ? rest_mass_sum_ / static_cast<double>(stored_rows_) : 0.0; }

 private:
  int64_t outputs_ = 0, top_k_ = 0;
  torch::Tensor values_;   // float16 [N, V, outputs] or [N, V, k]
  torch::Tensor indices_;  // top-k: int16 or int32 [N, V, k]
  torch::Tensor rest_;     // top-k: float16 [N, V], the logit of every output outside the top k
  bool mapped_ = false;
  double max_error_ = 0.0, rest_mass_sum_ = 0.0;
  int64_t stored_rows_ = 0;
};

}  // namespace kd::train
