#include "kd/train/soft_label_bank.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "kd/util/error.h"

namespace kd::train {

namespace {

torch::Tensor empty_in(const std::vector<int64_t>& shape, torch::ScalarType dtype, bool mapped, const std::string& dir) {
  return mapped ? mapped_empty(shape, dtype, BankStorage().spill_dir(dir), "the soft-label bank") : torch::empty(shape, dtype);
}

}  // namespace

torch::Tensor mapped_empty(const std::vector<int64_t>& shape, torch::ScalarType dtype, const BankStorage& storage,
                           const std::string& what) {
  const std::string& dir = storage.spill_dir();
  std::string folder = dir.empty() ? std::filesystem::temp_directory_path().string() : dir;
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);  // a fold's folder may not exist yet; mkstemp says if it cannot
  std::string pattern = (std::filesystem::path(folder) / "kdistill-bank-XXXXXX").string();
  int fd = mkstemp(pattern.data());
  if (fd < 0) fail("{}: cannot create the file of {}: {}", folder, what, std::strerror(errno));
  unlink(pattern.c_str());
  int64_t bytes = static_cast<int64_t>(c10::elementSize(dtype));
  for (int64_t d : shape) bytes *= d;
  bytes = std::max<int64_t>(bytes, 1);
  if (ftruncate(fd, bytes) != 0) {
    int error = errno;
    close(fd);
    fail("{}: cannot make the file of {} {} bytes long: {}", folder, what, bytes, std::strerror(error));
  }
  void* memory = mmap(nullptr, static_cast<size_t>(bytes), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int error = errno;
  close(fd);  // the mapping keeps the file
  if (memory == MAP_FAILED) fail("{}: cannot map the file of {}: {}", folder, what, std::strerror(error));
  auto unmap = [bytes](void* p) { munmap(p, static_cast<size_t>(bytes)); };
  return torch::from_blob(memory, shape, unmap, torch::TensorOptions().dtype(dtype));
}

void check_storage(const BankStorage& storage, int64_t outputs) {
  if (storage.top_k() >= outputs) {
    fail("distill.bank.top_k: {} is not below the teacher's {} outputs", storage.top_k(), outputs);
  }
}

SoftLabelBank::SoftLabelBank(int64_t rows, int64_t views, int64_t outputs, const BankStorage& storage)
    : outputs_(outputs), top_k_(storage.top_k()) {
  KD_CHECK(rows >= 0 && views > 0 && outputs > 0, "a soft-label bank of {} rows, {} views, {} outputs", rows, views,
           outputs);
  KD_CHECK(top_k_ >= 0, "a top-{} bank", top_k_);
  check_storage(storage, outputs);
  int64_t kept = top_k_ > 0 ? top_k_ : outputs;
  auto index_type = outputs <= 32767 ? torch::kShort : torch::kInt;
  int64_t bytes = rows * views * kept * 2;
  if (top_k_ > 0) bytes += rows * views * (kept * static_cast<int64_t>(c10::elementSize(index_type)) + 2);
  mapped_ = bytes > storage.memory_limit();
  values_ = empty_in({rows, views, kept}, torch::kHalf, mapped_, storage.spill_dir());
  if (top_k_ > 0) {
    indices_ = empty_in({rows, views, kept}, index_type, mapped_, storage.spill_dir());
    rest_ = empty_in({rows, views}, torch::kHalf, mapped_, storage.spill_dir());
  }
}

int64_t SoftLabelBank::bytes() const {
  int64_t total = static_cast<int64_t>(values_.nbytes());
  if (indices_.defined()) total += static_cast<int64_t>(indices_.nbytes() + rest_.nbytes());
  return total;
}

void SoftLabelBank::store(const torch::Tensor& rows, int64_t view, const torch::Tensor& logits) {
  auto z = logits.to(torch::kFloat).reshape({logits.size(0), -1});
  KD_CHECK(z.size(1) == outputs_, "bank rows of {} outputs, got {}", outputs_, z.size(1));
  if (top_k_ == 0) {
    auto stored = z.to(torch::kHalf);
    max_error_ = std::max(max_error_, (stored.to(torch::kFloat) - z).abs().max().item<double>());
    values_.select(1, view).index_copy_(0, rows, stored);
  } else {
    auto [top, index] = z.topk(top_k_, 1);
    // The others' logit r: (outputs - k) e^r = the sum of e^z over them, so that softmax gives the
    // kept outputs their probabilities exactly and the others their total mass, spread evenly.
    auto others = z.scatter(1, index, -std::numeric_limits<float>::infinity());
    auto rest = others.logsumexp(1) - std::log(static_cast<double>(outputs_ - top_k_));
    values_.select(1, view).index_copy_(0, rows, top.to(torch::kHalf));
    indices_.select(1, view).index_copy_(0, rows, index.to(indices_.scalar_type()));
    rest_.select(1, view).index_copy_(0, rows, rest.to(torch::kHalf));
    auto p = torch::softmax(z, 1);
    auto q = torch::softmax(gather(rows, view), 1);
    max_error_ = std::max(max_error_, (p - q).abs().max().item<double>());
    rest_mass_sum_ += (1.0 - p.gather(1, index).sum(1)).sum().item<double>();
  }
  stored_rows_ += rows.size(0);
}

torch::Tensor SoftLabelBank::gather(const torch::Tensor& rows, int64_t view) const {
  auto values = values_.select(1, view).index_select(0, rows).to(torch::kFloat);
  if (top_k_ == 0) return values;
  auto full = rest_.select(1, view).index_select(0, rows).to(torch::kFloat).unsqueeze(1).repeat({1, outputs_});
  return full.scatter_(1, indices_.select(1, view).index_select(0, rows).to(torch::kLong), values);
}

}  // namespace kd::train
