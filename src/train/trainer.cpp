#include "kd/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <zlib.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include "gradient_buckets.h"
#include "kd/data/batcher.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/process.h"
#include "kd/util/progress.h"
#include "kd/util/shape.h"
#include "kd/util/strings.h"

namespace kd::train {

namespace {

// Gradient bucket size of a data-parallel step (GradientBuckets): PyTorch DDP's default, 25 MB. Smaller
// buckets overlap more of backward but each all-reduce has its cost: on 2 cores, where Gloo's thread
// competes with the ranks' own, a 2.4M-parameter teacher's epoch on 2 ranks took 8.2 s in one bucket,
// 9.0 s in 4 MB buckets and 9.6 s in 1 MB ones.
constexpr int64_t kBucketBytes = int64_t{25} << 20;

// bfloat16 autocast for the forward passes, restored on scope exit.
class AutocastScope {
 public:
  explicit AutocastScope(bool enabled) : previous_(at::autocast::is_cpu_enabled()) {
    if (enabled) {
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(true);
    }
  }
  ~AutocastScope() {
    at::autocast::set_cpu_enabled(previous_);
    at::autocast::clear_cache();
  }

 private:
  bool previous_;
};

models::NamedTensors clone_state(models::Model& model) {
  models::NamedTensors copy;
  for (auto& [name, tensor] : model.state()) copy.emplace_back(name, tensor.detach().clone());
  return copy;
}

// The learning rate's factor after each divergence (TrainOptions::divergence_retries).
constexpr double kDivergenceLrFactor = 0.1;

bool parameters_finite(models::Model& model) {
  torch::NoGradGuard no_grad;
  auto parameters = model.parameters();
  if (parameters.empty()) return true;
  std::vector<torch::Tensor> sums;
  for (const auto& p : parameters) sums.push_back(p.sum().to(torch::kDouble));
  return std::isfinite(torch::stack(sums).sum().item<double>());
}

nlohmann::json record_to_json(const EpochRecord& r) {
  return {{"epoch", r.epoch}, {"train_loss", r.train_loss}, {"terms", r.terms},
          {"lr", r.lr},       {"val", r.val},               {"seconds", r.seconds}};
}

EpochRecord record_from_json(const nlohmann::json& j) {
  EpochRecord r;
  r.epoch = j.at("epoch");
  r.train_loss = j.at("train_loss");
  r.terms = j.at("terms").get<std::vector<double>>();
  r.lr = j.at("lr");
  r.val = j.at("val").get<report::Metrics>();
  r.seconds = j.at("seconds");
  return r;
}

// Everything needed to continue after epoch `epoch` as if never stopped.
struct LoopState {
  int64_t epoch = 0;  // epochs finished
  int64_t step = 0;
  int64_t stale_epochs = 0;
  TrainResult result;
  models::NamedTensors best_state;
  // Stopped within an epoch (a stop signal): the batches of the next epoch done, and its running sums.
  int64_t batch = 0;
  double loss_sum = 0.0;
  std::vector<double> term_sums;
};

// The last good state, to go back to when training diverges: before the first epoch, and after each
// epoch that bettered the validation metric. The model, the loss's own parameters, the random state
// and the loop's state (epochs, history, best so far). The optimizer's state (momentum, Adam's
// moments) is not kept: it starts afresh, since the moments that led to the divergence are often
// already large at the last good epoch (measured: iris, SGD at lr 100, restarting from its momentum
// diverged again at every lower rate down to 0.1).
class GoodState {
 public:
  GoodState(models::Model& model, const models::NamedTensors& loss_parameters, const LoopState& loop)
      : model_(clone_state(model)), rng_(at::detail::getDefaultCPUGenerator().get_state()), loop_(loop),
        epochs_(loop.result.history.size()) {
    for (const auto& [name, tensor] : loss_parameters) loss_.emplace_back(name, tensor.detach().clone());
    loop_.result.history.clear();  // the history only grows until a restore: its first epochs_ records are kept
  }
  // Puts it all back, keeping the divergences recorded since, and clears the optimizer's state.
  void restore(models::Model& model, models::NamedTensors& loss_parameters, torch::optim::Optimizer& optimizer,
               LoopState& loop) const {
    model.load_state(model_);
    torch::NoGradGuard no_grad;
    for (size_t k = 0; k < loss_parameters.size(); ++k) loss_parameters[k].second.copy_(loss_[k].second);
    optimizer.state().clear();
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(rng_);
    auto divergences = std::move(loop.result.divergences);
    auto history = std::move(loop.result.history);
    history.resize(epochs_);
    loop = loop_;
    loop.result.divergences = std::move(divergences);
    loop.result.history = std::move(history);
  }

 private:
  models::NamedTensors model_, loss_;
  torch::Tensor rng_;
  LoopState loop_;  // without its history
  size_t epochs_;   // the history's length
};

// A checkpoint file: libtorch's archive, then a trailer of kCheckpointMagic, the archive's length (8
// bytes) and its CRC-32 (4 bytes), little-endian. The one before it is kept as PATH.prev.
constexpr char kCheckpointMagic[8] = {'K', 'D', 'C', 'K', 'P', 'T', '0', '1'};
constexpr size_t kTrailerBytes = sizeof(kCheckpointMagic) + 8 + 4;

std::string previous_checkpoint(const std::string& path) { return path + ".prev"; }

std::string with_checksum(std::string payload) {
  uint64_t length = payload.size();
  auto crc = static_cast<uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(payload.data()), payload.size()));
  payload.append(kCheckpointMagic, sizeof(kCheckpointMagic));
  for (int i = 0; i < 8; ++i) payload.push_back(static_cast<char>((length >> (8 * i)) & 0xff));
  for (int i = 0; i < 4; ++i) payload.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  return payload;
}

// The archive of a checkpoint file whose trailer checks out; nothing, with `why`, when the file is
// missing, truncated or corrupt.
std::optional<std::string> checked_checkpoint(const std::string& path, std::string& why) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    why = "it does not exist";
    return std::nullopt;
  }
  std::string bytes = read_file(path);
  if (bytes.size() < kTrailerBytes ||
      bytes.compare(bytes.size() - kTrailerBytes, sizeof(kCheckpointMagic), kCheckpointMagic, sizeof(kCheckpointMagic)) != 0) {
    why = "it is truncated or not a kdistill checkpoint (no trailer)";
    return std::nullopt;
  }
  const auto* trailer = reinterpret_cast<const unsigned char*>(bytes.data() + bytes.size() - 12);
  uint64_t length = 0;
  uint32_t crc = 0;
  for (int i = 0; i < 8; ++i) length |= static_cast<uint64_t>(trailer[i]) << (8 * i);
  for (int i = 0; i < 4; ++i) crc |= static_cast<uint32_t>(trailer[8 + i]) << (8 * i);
  if (length != bytes.size() - kTrailerBytes) {
    why = fmt::format("it is truncated ({} bytes of the {} its trailer gives)", bytes.size() - kTrailerBytes, length);
    return std::nullopt;
  }
  bytes.resize(length);
  if (static_cast<uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size())) != crc) {
    why = "its checksum does not match (the file is corrupt)";
    return std::nullopt;
  }
  return bytes;
}

void save_checkpoint(const std::string& path, models::Model& model, const models::NamedTensors& loss_parameters,
                     torch::optim::Optimizer& optimizer, const LoopState& state) {
  torch::serialize::OutputArchive archive;
  for (auto& [name, tensor] : model.state()) archive.write("model/" + name, tensor);
  for (const auto& [name, tensor] : loss_parameters) archive.write("loss/" + name, tensor);
  for (auto& [name, tensor] : state.best_state) archive.write("best/" + name, tensor);
  torch::serialize::OutputArchive optimizer_archive;
  optimizer.save(optimizer_archive);
  archive.write("optimizer", optimizer_archive);
  nlohmann::json history = nlohmann::json::array();
  for (const auto& r : state.result.history) history.push_back(record_to_json(r));
  nlohmann::json meta = {{"epoch", state.epoch},
                         {"step", state.step},
                         {"stale_epochs", state.stale_epochs},
                         {"best_epoch", state.result.best_epoch},
                         {"best_value", state.result.best_value},
                         {"stop_reason", state.result.stop_reason},
                         {"target_reached", state.result.target_reached},
                         {"history", history},
                         {"divergences", state.result.divergences},
                         {"batch", state.batch},
                         {"loss_sum", state.loss_sum},
                         {"term_sums", state.term_sums}};
  archive.write("meta", c10::IValue(meta.dump()));
  archive.write("rng", at::detail::getDefaultCPUGenerator().get_state());
  std::ostringstream bytes;
  archive.save_to(bytes);
  write_file_durable(path, with_checksum(bytes.str()), previous_checkpoint(path));
}

models::NamedTensors read_named(torch::serialize::InputArchive& archive, const std::string& prefix,
                                models::Model& model) {
  models::NamedTensors out;
  for (auto& [name, tensor] : model.state()) {
    torch::Tensor value;
    archive.read(prefix + name, value);
    out.emplace_back(name, value);
  }
  return out;
}

// The loop's state from a checkpoint's "meta" (not the tensors).
void read_meta(torch::serialize::InputArchive& archive, LoopState& state) {
  c10::IValue meta_value;
  archive.read("meta", meta_value);
  auto meta = nlohmann::json::parse(meta_value.toStringRef());
  state.epoch = meta.at("epoch");
  state.step = meta.at("step");
  state.stale_epochs = meta.at("stale_epochs");
  state.result.best_epoch = meta.at("best_epoch");
  state.result.best_value = meta.at("best_value");
  state.result.stop_reason = meta.at("stop_reason");
  state.result.target_reached = meta.at("target_reached");
  for (const auto& r : meta.at("history")) state.result.history.push_back(record_from_json(r));
  state.result.divergences = meta.value("divergences", std::vector<Divergence>{});
  state.batch = meta.value("batch", int64_t{0});
  state.loss_sum = meta.value("loss_sum", 0.0);
  state.term_sums = meta.value("term_sums", std::vector<double>{});
}

LoopState load_checkpoint(const std::string& path, models::Model& model, models::NamedTensors& loss_parameters,
                          torch::optim::Optimizer& optimizer) {
  LoopState state;
  std::string why;
  std::optional<std::string> bytes = checked_checkpoint(path, why);
  std::string used = path;
  if (!bytes) {  // the one before it, with a warning
    std::string previous = previous_checkpoint(path), why_previous;
    bytes = checked_checkpoint(previous, why_previous);
    if (!bytes) {
      fail("{}: cannot resume from it: {}; nor from {}: {}; run without --resume to start again", path, why, previous,
           why_previous);
    }
    spdlog::warn("{}: {}; resuming from the checkpoint before it, {}", path, why, previous);
    used = previous;
  }
  check_zip_bytes(*bytes, used);
  try {
    torch::serialize::InputArchive archive;
    std::istringstream stream(*bytes);
    archive.load_from(stream);
    model.load_state(read_named(archive, "model/", model));
    for (auto& [name, tensor] : loss_parameters) {
      torch::Tensor value;
      archive.read("loss/" + name, value);
      check_within_storage(value, used + ": loss/" + name);
      torch::NoGradGuard no_grad;
      tensor.copy_(value);
    }
    state.best_state = read_named(archive, "best/", model);
    torch::serialize::InputArchive optimizer_archive;
    archive.read("optimizer", optimizer_archive);
    optimizer.load(optimizer_archive);
    read_meta(archive, state);
    torch::Tensor rng;
    archive.read("rng", rng);
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(rng);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail("{}: not a usable checkpoint of this model ({}); remove it or run without --resume", used, first_line(e));
  }
  return state;
}

// Fault injection for the resume tests: KD_KILL_AFTER_EPOCH="student:3" ends the process
// abruptly (no clean-up, like a kill) right after that trainer's epoch-3 checkpoint.
void simulate_kill_if_asked(const std::string& name, int64_t epoch) {
  const char* request = std::getenv("KD_KILL_AFTER_EPOCH");
  if (request == nullptr) return;
  if (std::string(request) == name + ":" + std::to_string(epoch)) std::_Exit(137);
}

// The loss of a mixed batch: lambda * loss(labels) + (1 - lambda) * loss(partners' labels). Terms
// that read only the teacher come out unchanged; ce gives mixup's objective; mse the same gradient
// as mse to the mixed targets.
losses::LossValues mixed_loss(const losses::Distiller& distiller, const losses::LossInputs& inputs,
                              const data::Augmenter::Mixed& mixed) {
  auto own = distiller.compute(inputs);
  if (!distiller.needs_labels()) return own;
  losses::LossInputs partner = inputs;
  partner.labels = inputs.labels.index_select(0, mixed.partner);
  if (inputs.has_label.defined()) partner.has_label = inputs.has_label.index_select(0, mixed.partner);
  auto other = distiller.compute(partner);
  losses::LossValues out;
  out.total = own.total * mixed.lambda + other.total * (1.0 - mixed.lambda);
  for (size_t t = 0; t < own.terms.size(); ++t) out.terms.push_back(own.terms[t] * mixed.lambda + other.terms[t] * (1.0 - mixed.lambda));
  return out;
}

// The feature terms' own parameters for the shapes of the taps on two rows (eval mode, no grad), or of
// the cached teacher taps.
models::NamedTensors make_loss_parameters(const losses::Distiller& distiller, models::Model& model,
                                          models::Model* live_teacher, const TrainData& data,
                                          const std::vector<torch::Tensor>& cached_taps, uint64_t seed) {
  torch::NoGradGuard no_grad;
  torch::Tensor probe = data.x.slice(0, 0, std::min<int64_t>(2, data.x.size(0)));
  auto shapes_of = [&](models::Model& m, const std::vector<std::string>& taps) {
    m.set_training(false);
    auto tapped = m.forward_taps(probe, taps);
    std::vector<std::vector<int64_t>> shapes;
    for (const auto& tap : tapped.taps) shapes.emplace_back(tap.sizes().begin() + 1, tap.sizes().end());
    shapes.emplace_back(tapped.output.sizes().begin() + 1, tapped.output.sizes().end());
    return shapes;
  };
  auto student = shapes_of(model, distiller.student_taps());
  // A cached teacher's outputs have the student's shape (the terms check it).
  std::vector<std::vector<int64_t>> teacher;
  if (!cached_taps.empty() || !live_teacher) {
    for (const auto& tap : cached_taps) teacher.emplace_back(tap.sizes().begin() + 1, tap.sizes().end());
    teacher.push_back(student.back());
  } else {
    teacher = shapes_of(*live_teacher, distiller.teacher_taps());
  }
  return distiller.make_parameters(student, teacher, seed);
}

bool parallel_group(const TrainOptions& options) { return options.group() && options.group()->distributed(); }

// The model's floating-point buffers (batch norm's running mean and variance) averaged over the ranks.
void average_buffers(dist::Group& group, models::Model& model) {
  std::set<const void*> parameters;
  for (const auto& p : model.parameters()) parameters.insert(p.unsafeGetTensorImpl());
  std::vector<torch::Tensor> buffers;
  for (auto& [name, tensor] : model.state()) {
    if (tensor.is_floating_point() && !parameters.count(tensor.unsafeGetTensorImpl())) buffers.push_back(tensor);
  }
  if (buffers.empty()) return;
  std::vector<torch::Tensor> flat;
  for (const auto& b : buffers) flat.push_back(b.reshape(-1).to(torch::kFloat));
  std::vector<torch::Tensor> joined = {torch::cat(flat)};
  group.all_reduce_sum(joined);
  joined[0].div_(static_cast<double>(group.size()));
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (auto& b : buffers) {
    b.copy_(joined[0].slice(0, offset, offset + b.numel()).view_as(b));
    offset += b.numel();
  }
}

}  // namespace

std::optional<TrainResult> finished_training(const std::string& checkpoint) {
  std::string why;
  std::optional<std::string> bytes = checked_checkpoint(checkpoint, why);
  if (!bytes) return std::nullopt;
  LoopState state;
  try {
    check_zip_bytes(*bytes, checkpoint);
    torch::serialize::InputArchive archive;
    std::istringstream stream(*bytes);
    archive.load_from(stream);
    read_meta(archive, state);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (state.batch > 0 || state.result.history.empty()) return std::nullopt;  // stopped within an epoch: not finished
  if (state.result.stop_reason.empty()) state.result.stop_reason = "epochs";
  state.result.steps = state.step;
  return state.result;
}

torch::Tensor shard_rows(int64_t rows, int64_t rank, int64_t count) {
  return torch::arange(rank, rows, count, torch::kLong);
}

void validate(const TrainOptions& options, const std::string& field) {
  if (options.epochs() < 0) fail("{}.epochs: {} is negative", field, options.epochs());
  if (options.steps() < 0) fail("{}.steps: {} is negative", field, options.steps());
  if (options.batch_size() < 0) fail("{}.batch_size: {} is negative", field, options.batch_size());
  if (options.grad_clip() < 0) fail("{}.grad_clip: {} is negative", field, options.grad_clip());
  if (options.precision() != "fp32" && options.precision() != "bf16") {
    fail("{}.precision: {} is not fp32 or bf16", field, quote(options.precision()));
  }
  data::validate(options.augment(), {}, field + ".augment");
  if (options.patience() < 0) fail("{}.patience: {} is negative", field, options.patience());
  if (options.divergence_retries() < 0) {
    fail("{}.divergence_retries: {} is negative", field, options.divergence_retries());
  }
  train::validate(options.optimizer(), field + ".optimizer");
  train::validate(options.schedule(), field + ".schedule");
}

torch::Tensor predict(models::Model& model, const torch::Tensor& x, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  model.set_training(false);
  const torch::Device device = models::device_of(model);  // rows go where the model is; outputs come back
  // One output tensor filled batch by batch: small per-batch results kept between the large
  // activations would fragment the heap (measured: +170 MB RSS over Fashion-MNIST).
  torch::Tensor outputs;
  for (int64_t start = 0; start < x.size(0); start += batch_size) {
    if (int signal = stop_signal()) {
      throw Interrupted(signal, fmt::format("stopped by {} while computing outputs; what is done is kept for --resume",
                                            stop_signal_name(signal)));
    }
    int64_t end = std::min(x.size(0), start + batch_size);
    torch::Tensor y = model.forward(x.slice(0, start, end).to(device));
    if (!outputs.defined()) {
      std::vector<int64_t> shape = y.sizes().vec();
      shape[0] = x.size(0);
      outputs = torch::empty(shape, torch::TensorOptions().dtype(torch::kFloat));
    }
    outputs.slice(0, start, end).copy_(y);
  }
  return outputs.defined() ? outputs : torch::empty({0});
}

std::vector<torch::Tensor> predict_taps(models::Model& model, const torch::Tensor& x, const std::vector<std::string>& taps,
                                        int64_t batch_size, const BankStorage& storage, bool* mapped) {
  torch::NoGradGuard no_grad;
  model.set_training(false);
  std::vector<torch::Tensor> out(taps.size());
  const torch::Device device = models::device_of(model);
  for (int64_t start = 0; start < x.size(0); start += batch_size) {
    int64_t end = std::min(x.size(0), start + batch_size);
    auto tapped = model.forward_taps(x.slice(0, start, end).to(device), taps);
    if (start == 0) {
      // The shapes are known now: all the taps in memory, or all in mapped files.
      std::vector<std::vector<int64_t>> shapes;
      int64_t bytes = 0;
      for (const auto& tap : tapped.taps) {
        shapes.push_back(tap.sizes().vec());
        shapes.back()[0] = x.size(0);
        bytes += element_count(shapes.back()) * 2;
      }
      bool spill = bytes > storage.memory_limit();
      if (mapped) *mapped = spill;
      for (size_t i = 0; i < taps.size(); ++i) {
        out[i] = spill ? mapped_empty(shapes[i], torch::kHalf, storage, "the teacher's taps")
                       : torch::empty(shapes[i], torch::kHalf);
      }
    }
    for (size_t i = 0; i < taps.size(); ++i) out[i].slice(0, start, end).copy_(tapped.taps[i]);
  }
  return out;
}

int64_t inference_batch_size(models::Model& model, const std::vector<int64_t>& input_shape) {
  auto summary = model.summary(input_shape);
  bool dense = summary.params > 0 && summary.macs <= 4 * summary.params;
  return dense ? 1024 : 256;
}

TrainOptions sized_for_rows(TrainOptions options, int64_t rows) {
  if (options.batch_size() == 0) {
    int64_t batch = 8;
    while (batch * 2 <= std::min<int64_t>(128, rows / 8)) batch *= 2;
    options.batch_size(batch);
  }
  if (options.optimizer().lr() == 0.0) {
    auto optimizer = options.optimizer();
    double scaled = 1e-3 * std::sqrt(10000.0 / static_cast<double>(std::max<int64_t>(1, rows)));
    optimizer.lr(optimizer.name() == "sgd" ? 0.05 : std::clamp(scaled, 1e-3, 1e-2));
    options.optimizer(optimizer);
  }
  if (options.epochs() == 0 && options.steps() == 0) {
    constexpr int64_t kSteps = 1500;
    int64_t batches = std::max<int64_t>(1, (rows + options.batch_size() - 1) / options.batch_size());
    options.epochs(std::clamp<int64_t>((kSteps + batches - 1) / batches, 10, 1000));
  }
  return options;
}

data::Augmenter augmenter_for(const TrainOptions& options, const TrainData& data) {
  return data::Augmenter(options.augment(), data.x, options.seed(), data.categorical);
}

Trainer::Trainer(TrainOptions options, const losses::Distiller& distiller, std::string name)
    : options_(std::move(options)), distiller_(distiller), name_(std::move(name)) {}

TrainResult Trainer::fit(models::Model& model, const TrainData& data, const ValidateFn& validate_model,
                         models::Model* live_teacher) {
  validate(options_, name_);
  const TrainOptions options = sized_for_rows(options_, data.x.size(0));
  std::vector<torch::Tensor> columns = {data.x, data.y};
  bool masked = data.has_label.defined();
  bool cached_teacher = data.teacher.defined();
  if (masked) columns.push_back(data.has_label);
  if (cached_teacher) columns.push_back(data.teacher);
  // The cached teacher taps this objective reads, in Distiller::teacher_taps() order; all or none.
  size_t tap_column = columns.size();
  std::vector<torch::Tensor> cached;
  for (const auto& tap : distiller_.teacher_taps()) {
    auto at = std::find(data.teacher_tap_names.begin(), data.teacher_tap_names.end(), tap);
    if (at != data.teacher_tap_names.end()) cached.push_back(data.teacher_taps[static_cast<size_t>(at - data.teacher_tap_names.begin())]);
  }
  if (cached.size() == distiller_.teacher_taps().size()) {
    for (const auto& tap : cached) columns.push_back(tap);
  } else {
    cached.clear();
  }
  const SoftLabelBank* bank = data.bank.get();
  if (distiller_.needs_teacher() && !cached_teacher && !bank && live_teacher == nullptr) {
    fail("{}: the loss terms need a teacher, but there is none", name_);
  }
  const data::AugmentOptions& augment = options.augment();
  data::validate(augment, std::vector<int64_t>(data.x.sizes().begin() + 1, data.x.sizes().end()), name_ + ".augment");
  KD_CHECK(data.bank_shards == 1 || (parallel_group(options) && data.bank_shards == options.group()->size()),
           "{}: a bank of {} shards for a group of {}", name_, data.bank_shards,
           options.group() ? options.group()->size() : 1);
  const int64_t bank_rows = (data.x.size(0) + data.bank_shards - 1 -
                             (data.bank_shards > 1 ? options.group()->rank() : 0)) / data.bank_shards;
  KD_CHECK(!bank || (!cached_teacher && bank->rows() == bank_rows), "{}: a bank of {} rows for {} rows", name_,
           bank ? bank->rows() : 0, bank_rows);
  // Outputs of the rows as they are cannot teach their augmented views; a bank cannot hold mixtures.
  if (cached_teacher && augment.per_row()) {
    fail("{}: per-row augmentation with teacher outputs of unaugmented rows: give a bank of views or a live teacher", name_);
  }
  if ((cached_teacher || bank) && augment.mixes()) fail("{}: mixup or cutmix needs a live teacher, not cached outputs", name_);
  data::Augmenter augmenter = augmenter_for(options, data);
  dist::Group* group = options.group().get();
  const bool parallel = group && group->distributed();
  if (parallel && augment.mixes()) {
    fail("{}: mixup and cutmix pair rows across a whole batch; they do not run data-parallel (WORLD_SIZE {})", name_,
         group->size());
  }
  KD_CHECK(data.teacher_shards == 1 || (parallel && data.teacher_shards == group->size()),
           "{}: teacher outputs of {} shards for a group of {}", name_, data.teacher_shards, parallel ? group->size() : 1);
  std::vector<bool> sharded(columns.size(), false);
  if (data.teacher_shards > 1) {
    for (size_t c = cached_teacher ? tap_column - 1 : tap_column; c < columns.size(); ++c) sharded[c] = true;
  }
  data::Batcher batcher(columns, data::BatcherOptions()
                                     .batch_size(options.batch_size())
                                     .seed(options.seed())
                                     .shard_rank(parallel ? group->rank() : 0)
                                     .shard_count(parallel ? group->size() : 1)
                                     .sharded(sharded));
  int64_t batches = batcher.batches();
  int64_t total_steps = options.steps() > 0 ? options.steps() : options.epochs() * batches;
  int64_t epochs = (total_steps + batches - 1) / batches;

  // Feature terms: the taps' shapes, from two rows, make the terms' own parameters (a hint's
  // projection), which train with the model.
  const bool features = distiller_.reads_features();
  const bool cached_taps = !cached.empty();
  KD_CHECK(!cached_taps || cached_teacher, "{}: cached teacher taps without cached outputs", name_);
  const bool teacher_taps = !distiller_.teacher_taps().empty() && !cached_taps;
  if (teacher_taps && live_teacher == nullptr) {
    fail("{}: the feature terms read the teacher's taps ({}); they need the teacher itself, not its cached outputs",
         name_, join(distiller_.teacher_taps(), ", "));
  }
  models::NamedTensors loss_parameters;
  if (features) loss_parameters = make_loss_parameters(distiller_, model, live_teacher, data, cached, options.seed());
  const torch::Device device = options.device();
  models::DeviceScope student_on_device(&model, device), teacher_on_device(live_teacher, device);
  for (auto& item : loss_parameters) {
    if (!device.is_cpu()) item.second = item.second.detach().to(device).requires_grad_(true);
  }
  std::vector<torch::Tensor> optimizer_parameters = model.parameters();
  for (const auto& item : loss_parameters) optimizer_parameters.push_back(item.second);
  auto optimizer = make_optimizer(optimizer_parameters, options.optimizer());
  // In a group the gradients, the loss, its terms and the stop flag are summed over the ranks in
  // buckets that start during backward.
  std::optional<GradientBuckets> buckets;
  if (parallel) buckets.emplace(optimizer_parameters, distiller_.term_names().size() + 2, *group, kBucketBytes);
  std::string metric = options.selection_metric();
  if (metric.empty()) metric = options.target() ? options.target()->metric()
                               : distiller_.task() == Task::classification ? "accuracy" : "rmse";
  bool higher = higher_is_better(metric);

  LoopState state;
  if (options.resume() && !options.checkpoint().empty() &&
      (std::filesystem::exists(options.checkpoint()) || std::filesystem::exists(previous_checkpoint(options.checkpoint())))) {
    state = load_checkpoint(options.checkpoint(), model, loss_parameters, *optimizer);
    if (state.batch > 0) {
      spdlog::info("{}: resuming at epoch {} step {}", name_, state.epoch + 1, state.batch + 1);
    } else {
      spdlog::info("{}: resuming after epoch {}", name_, state.epoch);
    }
  }
  // The learning rate, a tenth of it for each divergence so far.
  auto base_lr = [&] {
    return options.optimizer().lr() * std::pow(kDivergenceLrFactor, static_cast<double>(state.result.divergences.size()));
  };
  LrSchedule schedule(options.schedule(), base_lr(), total_steps, batches);
  bool done = !state.result.stop_reason.empty();
  // A checkpoint written after the last epoch finished: nothing left but restoring the best state.
  if (state.epoch >= epochs) done = true;
  bool bf16 = options.precision() == "bf16";
  Progress progress(name_, total_steps, "steps");
  // Where a divergence goes back to: the last good state, or the start when that one diverged again
  // before a single step (its weights, though they validated well, already overflow on some rows).
  std::optional<GoodState> good, start_state;
  bool stepped = true;  // a step succeeded since the last going back
  if (options.divergence_retries() > 0) {
    good.emplace(model, loss_parameters, state);
    start_state.emplace(model, loss_parameters, state);
  }

  for (int64_t epoch = state.epoch; epoch < epochs && !done; ++epoch) {
    std::string diverged;  // what stopped being finite, at step `diverged_step` of the epoch
    int64_t diverged_step = 0;
    auto start = Clock::now();
    model.set_training(true);
    if (live_teacher) live_teacher->set_training(false);
    // Epoch e trains on view e of each row; with a bank of V views, on view e mod V and its outputs.
    int64_t view = bank ? epoch % bank->views() : epoch;
    // From the first batch, or where a stop signal left the epoch.
    const int64_t first_batch = std::exchange(state.batch, 0);
    double loss_sum = first_batch > 0 ? state.loss_sum : 0.0;
    std::vector<double> term_sums = first_batch > 0 ? state.term_sums : std::vector<double>(distiller_.term_names().size(), 0.0);
    int64_t steps_this_epoch = first_batch;
    // A stop signal: after batch b's step, a checkpoint of where the epoch is (rank 0 writes it), then
    // kd::Interrupted.
    auto stop_after_step = [&](int64_t epoch, int64_t b) {
      progress.clear();
      LoopState paused = state;
      paused.step = state.step + 1;
      paused.batch = b + 1;
      paused.loss_sum = loss_sum;
      paused.term_sums = term_sums;
      const bool saved = !options.checkpoint().empty();
      if (saved && (!group || group->is_root())) save_checkpoint(options.checkpoint(), model, loss_parameters, *optimizer, paused);
      const int signal = stop_signal() != 0 ? stop_signal() : SIGINT;  // another rank's signal: as Ctrl-C
      throw Interrupted(signal, fmt::format("{}{}: stopped by {} after epoch {} step {}{}",
                                            parallel ? fmt::format("rank {}/{}: ", group->rank(), group->size()) : "", name_,
                                            stop_signal_name(signal), epoch + 1, b + 1,
                                            saved ? "; checkpoint written: the same command with --resume goes on" : ""));
    };
    for (int64_t b = first_batch; b < batches && state.step < total_steps; ++b, ++state.step, ++steps_this_epoch) {
      auto batch = batcher.batch(epoch, b);
      // This rank's part of the global batch's mean loss (all of it in one process).
      const int64_t local_rows = batch[0].size(0);
      const double share = parallel ? static_cast<double>(local_rows) / static_cast<double>(batcher.global_batch_rows(b)) : 1.0;
      // After the gradients: their sum over the ranks, then the step. `values` is {loss, terms..., stop},
      // this rank's shares and whether it was asked to stop, summed with the gradients into the batch's
      // (every rank sees the same). False, and no step, when the loss or the gradient norm is not finite;
      // kd::Interrupted after the step when a rank was asked to stop.
      auto finish_step = [&](std::vector<double> values) {
        if (parallel) buckets->finish(values);
        const bool stop = values.back() > 0;
        values.pop_back();
        const double loss = values[0];
        const std::vector<double> terms(values.begin() + 1, values.end());
        if (!std::isfinite(loss)) diverged = fmt::format("the loss became {}", loss);
        if (diverged.empty() && options.grad_clip() > 0) {
          double norm = torch::nn::utils::clip_grad_norm_(model.parameters(), options.grad_clip());
          if (!std::isfinite(norm)) diverged = fmt::format("the gradient norm became {}", norm);
        }
        if (!diverged.empty()) {
          diverged_step = b + 1;
          return false;
        }
        optimizer->step();
        stepped = true;
        loss_sum += loss;
        for (size_t t = 0; t < terms.size(); ++t) term_sums[t] += terms[t];
        progress.update(state.step + 1);
        if (stop) stop_after_step(epoch, b);
        return true;
      };
      if (local_rows == 0) {  // a short last batch may leave a rank nothing: it adds zeros to the sums
        for (auto& parameter : optimizer_parameters) parameter.mutable_grad().reset();
        std::vector<double> zeros(term_sums.size() + 1, 0.0);
        zeros.push_back(stop_signal() != 0 ? 1.0 : 0.0);
        buckets->begin(zeros);
        schedule.apply(*optimizer, state.step);
        if (!finish_step(zeros)) break;
        continue;
      }
      losses::LossInputs inputs;
      torch::Tensor x = batch[0];
      if (augment.per_row()) x = augmenter.view(x, batcher.batch_rows(epoch, b), view);
      auto mixed = augmenter.mix(x, epoch, b);
      x = mixed.x.to(device);
      if (mixed.partner.defined()) mixed.partner = mixed.partner.to(device);
      for (size_t c = 1; c < batch.size(); ++c) batch[c] = batch[c].to(device);
      inputs.labels = batch[1];
      size_t next = 2;
      if (masked) inputs.has_label = batch[next++];
      inputs.named_parameters = loss_parameters;
      {
        AutocastScope autocast(bf16);
        if (teacher_taps) {
          torch::NoGradGuard no_grad;
          auto tapped = live_teacher->forward_taps(x, distiller_.teacher_taps());
          inputs.teacher = tapped.output.to(torch::kFloat);
          for (auto& tap : tapped.taps) inputs.teacher_taps.push_back(tap.to(torch::kFloat));
        } else if (cached_teacher) {
          inputs.teacher = batch[next++];
          for (size_t t = tap_column; t < batch.size(); ++t) inputs.teacher_taps.push_back(batch[t].to(torch::kFloat));
        } else if (bank) {
          // Only this view's rows are read: a bank of many views (or a mapped one) costs no more per step.
          torch::Tensor rows = batcher.batch_rows(epoch, b);
          inputs.teacher = bank->gather(data.bank_shards > 1 ? rows.div(data.bank_shards, "floor") : rows, view).to(device);
        } else if (live_teacher && distiller_.needs_teacher()) {
          torch::NoGradGuard no_grad;
          inputs.teacher = live_teacher->forward(x).to(torch::kFloat);
        }
        if (features) {
          auto tapped = model.forward_taps(x, distiller_.student_taps());
          inputs.student = tapped.output;
          for (auto& tap : tapped.taps) inputs.student_taps.push_back(tap.to(torch::kFloat));
        } else {
          inputs.student = model.forward(x);
        }
      }
      inputs.student = inputs.student.to(torch::kFloat);
      schedule.apply(*optimizer, state.step);
      // Gradients set to none rather than zeroed: backward then hands each parameter its fresh
      // gradient tensor instead of adding it into a zeroed one (two passes fewer per parameter).
      for (auto& parameter : optimizer_parameters) parameter.mutable_grad().reset();
      auto values = mixed.lambda < 1.0 ? mixed_loss(distiller_, inputs, mixed) : distiller_.compute(inputs);
      // One host sync per step for the running mean; the loss must be read anyway to catch divergence.
      std::vector<double> step_values = {values.total.item<double>() * share};
      for (const auto& term : values.terms) step_values.push_back(term.item<double>() * share);
      step_values.push_back(stop_signal() != 0 ? 1.0 : 0.0);
      if (parallel) buckets->begin(step_values);
      (parallel ? values.total * share : values.total).backward();
      if (!finish_step(std::move(step_values))) break;
    }
    progress.clear();
    // A step on an infinite gradient leaves parameters that are not finite (without grad_clip the
    // gradient is not read).
    if (diverged.empty() && !parameters_finite(model)) {
      diverged = "the parameters stopped being finite";
      diverged_step = steps_this_epoch;
    }
    if (!diverged.empty()) {
      const double lr = base_lr();
      const auto retries = static_cast<size_t>(options.divergence_retries());
      if (state.result.divergences.size() >= retries) {
        fail("{}: {} at epoch {} step {} (learning rate {:g}{}); lower the learning rate or set grad_clip", name_, diverged,
             epoch + 1, diverged_step, lr,
             retries == 0 ? "" : fmt::format(", after {} restart{} with a tenth of it", retries, retries == 1 ? "" : "s"));
      }
      state.result.divergences.push_back({epoch + 1, diverged_step, diverged, lr, lr * kDivergenceLrFactor});
      if (!stepped) good = start_state;
      good->restore(model, loss_parameters, *optimizer, state);
      stepped = false;
      schedule = LrSchedule(options.schedule(), base_lr(), total_steps, batches);
      spdlog::warn("{}: {} at epoch {} step {}; back to {} with the learning rate {:g} (was {:g})", name_, diverged,
                   epoch + 1, diverged_step, state.epoch == 0 ? "the start" : fmt::format("the state after epoch {}", state.epoch),
                   base_lr(), lr);
      epoch = state.epoch - 1;  // the loop's ++ makes it the epoch after the good state
      continue;
    }
    EpochRecord record;
    record.epoch = epoch + 1;
    record.seconds = seconds_since(start);
    record.train_loss = loss_sum / std::max<int64_t>(1, steps_this_epoch);
    for (double s : term_sums) record.terms.push_back(s / std::max<int64_t>(1, steps_this_epoch));
    record.lr = schedule.lr_at(std::max<int64_t>(0, state.step - 1));
    if (parallel) average_buffers(*group, model);  // batch norm's running statistics: every rank's the same
    record.val = validate_model(model);
    double value = metric_value(record.val, metric);
    // A tie of the selection metric goes to the lower validation NLL, where there is one: on a
    // few validation rows accuracy is coarse (14 rows of wine: 100 % from an early epoch on, whose
    // undertrained model then scored 78 % on the test rows).
    bool first = state.result.history.empty();
    bool tie_with_lower_nll = false;
    if (!first && value == state.result.best_value) {
      const auto& best = state.result.history[static_cast<size_t>(state.result.best_epoch - 1)].val;
      auto now = std::as_const(record.val).find("nll"), then = best.find("nll");
      tie_with_lower_nll = now != record.val.end() && then != best.end() && now->second < then->second;
    }
    bool improved = first || tie_with_lower_nll || (higher ? value > state.result.best_value : value < state.result.best_value);
    state.result.history.push_back(record);
    state.epoch = epoch + 1;
    if (improved) {
      state.result.best_epoch = record.epoch;
      state.result.best_value = value;
      state.best_state = clone_state(model);
      state.stale_epochs = 0;
      // A good state validates to finite numbers (huge logits can be accurate and still overflow).
      bool finite = std::all_of(record.val.begin(), record.val.end(), [](const auto& kv) { return std::isfinite(kv.second); });
      if (good && finite) good.emplace(model, loss_parameters, state);
    } else {
      ++state.stale_epochs;
    }
    bool worth_a_line = record.seconds >= 1.0 || record.epoch == epochs || record.epoch % std::max<int64_t>(1, epochs / 10) == 0;
    spdlog::log(worth_a_line ? spdlog::level::info : spdlog::level::debug, "{} epoch {}/{}: loss {:.4f}, val {} {:.4g}{}, {:.1f}s", name_, record.epoch, epochs,
                 record.train_loss, metric, value, improved ? " *" : "", record.seconds);
    if (options.target() && options.target()->reached(value, options.teacher_target_value())) {
      state.result.target_reached = true;
      state.result.stop_reason = "target";
      // The first epoch that meets the target is the result, even if not the best so far.
      state.result.best_epoch = record.epoch;
      state.result.best_value = value;
      state.best_state = clone_state(model);
      done = true;
    } else if (options.patience() > 0 && state.stale_epochs >= options.patience()) {
      state.result.stop_reason = "patience";
      done = true;
    }
    if (!done && stop_when_ && epoch + 1 < epochs) {
      std::string reason = stop_when_(record);
      if (!reason.empty()) {
        state.result.stop_reason = reason;
        done = true;
      }
    }
    if (!options.checkpoint().empty() && (!group || group->is_root())) {
      save_checkpoint(options.checkpoint(), model, loss_parameters, *optimizer, state);
    }
    simulate_kill_if_asked(name_, state.epoch);
  }
  if (state.result.stop_reason.empty()) state.result.stop_reason = "epochs";
  if (!options.keep_best() && !state.result.history.empty()) {
    state.result.best_epoch = state.result.history.back().epoch;  // the state the model holds now
    state.result.best_value = metric_value(state.result.history.back().val, metric);
  } else if (!state.best_state.empty()) {
    model.load_state(state.best_state);
  }
  model.set_training(false);
  state.result.steps = state.step;
  for (const auto& item : loss_parameters) state.result.loss_params += item.second.numel();
  return state.result;
}

}  // namespace kd::train
