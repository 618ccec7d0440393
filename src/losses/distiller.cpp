#include "kd/losses/distiller.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>

#include "kd/losses/registry.h"
#include "kd/util/error.h"
#include "kd/util/simd.h"
#include "kd/util/strings.h"

namespace kd::losses {
namespace {

// ---- the fused objective -------------------------------------------------------------------------
// kl and ce terms (Hinton et al.'s objective and its variants) on CPU logits: every term's value and
// the total's gradient with respect to the student in one pass over the rows, as one autograd node.
// The terms' own compute() runs about 25 tensor ops a step for these two (softmaxes, masks, label
// checks, the weighted sum) and as many again backward: most of a small student's step.
//
// Per row r of N, logits s and teacher outputs t over C classes:
//   kl at T:      value_r = sum_c p_c (log p_c - log q_c),  p = softmax(t / T), q = softmax(s / T)
//                 term = T^2 / N * sum_r value_r;           d term / d s = T / N * (q - p)
//   ce with eps:  value_r = (1 - eps) (log Z - s_y) + eps / C * sum_c (log Z - s_c),  Z = sum_c e^s_c
//                 term = sum over the M labelled rows / M;  d term / d s = (softmax(s) - (1 - eps) [c = y] - eps / C) / M

struct FusedTerm {
  bool kl = false;
  double weight = 0, temperature = 1, smoothing = 0;
};

// The kl / ce terms, or none when any other kind is in the list.
std::vector<FusedTerm> fusable_terms(const std::vector<LossTermOptions>& options) {
  std::vector<FusedTerm> out;
  for (const auto& o : options) {
    if (o.kind() != "kl" && o.kind() != "ce") return {};
    out.push_back({o.kind() == "kl", o.weight(), o.temperature(), o.label_smoothing()});
  }
  return out;
}

bool cpu_of(const torch::Tensor& t, torch::ScalarType type) {
  return t.defined() && t.is_cpu() && t.layout() == torch::kStrided && t.scalar_type() == type;
}

// Whether the inputs are of the kinds the fused loop reads; anything else (and every malformed input)
// goes to the terms themselves, which name what is wrong.
bool fits_fused(const LossInputs& in, bool teacher, bool labels) {
  const torch::Tensor& s = in.student;
  if (!s.defined() || (s.scalar_type() != torch::kFloat && s.scalar_type() != torch::kDouble) ||
      !cpu_of(s, s.scalar_type()) || s.dim() != 2 || s.size(0) == 0 || s.size(1) == 0) {
    return false;
  }
  if (teacher && !(cpu_of(in.teacher, s.scalar_type()) && in.teacher.sizes() == s.sizes())) return false;
  if (labels) {
    if (!cpu_of(in.labels, torch::kLong) || in.labels.dim() != 1 || in.labels.size(0) != s.size(0)) return false;
    if (in.has_label.defined() &&
        !(cpu_of(in.has_label, torch::kBool) && in.has_label.dim() == 1 && in.has_label.size(0) == s.size(0))) {
      return false;
    }
  }
  return true;
}

// exp and log for the softmaxes below, float32: Cephes' single-precision polynomials, branch-free so
// that GCC vectorises them (in the AVX-512, AVX2 and baseline builds of the loops). glibc's expf and
// logf are a call an element: with 128 rows of 4 classes (the tabular benchmark's student) the kl + ce
// objective makes 1,536 exp and 384 log calls a step, about half of its time. Within 1.5 ulp of
// glibc's. exp's argument here is a logit less its row's maximum (<= 0), 0 below log(FLT_MIN) (where
// expf goes subnormal: a difference under 1.2e-38); log's is a sum of such exponentials (>= 1). NaN
// stays NaN. Why not SLEEF (libsleef-dev): its scalar Sleef_expf_u10 is a call an element like glibc's,
// and its vector functions take ISA-specific types (Sleef_expf8_u10avx2 on __m256, ...) with a dispatch
// of their own, which the target_clones loops below cannot use; these two polynomials vectorise in
// every clone.
inline uint32_t bits_of(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}

inline float float_of(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// Branch-free, and the selects pick between integers or constants only: under trapping math (GCC's
// default) a select between computed floats stays a branch, and the loop a scalar one.
inline float cephes_exp(float x) {
  // The clamp on the bits: a negative float's bits grow with its magnitude, a positive one's too.
  const uint32_t bits = bits_of(x);
  const uint32_t limit = (bits >> 31) != 0 ? 0xC2AEAC50u /* log(FLT_MIN) */ : 0x42B00000u /* 88 */;
  const float clamped = float_of(std::min(bits, limit));
  // x = n ln 2 + r, |r| <= ln 2 / 2: adding 1.5 * 2^23 rounds x / ln 2 to the integer n, which the low
  // bits of the sum then hold.
  const float shifted = clamped * 1.44269504088896341f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  const float r = clamped - n * 0.693359375f + n * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  // 2^n: the biased exponent n + 127, from the sum's bits (n = bits - 0x4B400000).
  const float result = y * float_of((bits_of(shifted) + (127u - 0x4B400000u)) << 23);
  // Below log(FLT_MIN) it is 0 (a probability of 0 drops out of the KL sum, as the terms' own softmax
  // has it), NaN stays NaN.
  const bool underflow = bits > 0xC2AEAC50u && bits <= 0xFF800000u;
  const bool nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
  return float_of((bits_of(result) & (underflow ? 0u : ~0u)) | (nan ? 0x7FC00000u : 0u));
}

inline float cephes_log(float x) {
  // x = m 2^e with 1 + m in [sqrt(1/2), sqrt(2)); log x = log(1 + m) + e log 2.
  const uint32_t bits = bits_of(x);
  const uint32_t fraction = bits & 0x007FFFFFu;
  const uint32_t low = fraction < 0x003504F3u ? 1u : 0u;  // below sqrt(2) / 2 as a number in [0.5, 1)
  const float e = static_cast<float>(static_cast<int32_t>((bits >> 23) - 126u - low));
  const float m = float_of(fraction | (0x3F000000u + (low << 23))) - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  // + (x - x): 0 for a finite x, NaN for NaN, which the exponent bits alone would turn into a number.
  return (m + y + 0.693359375f * e) + (x - x);
}

// As one loop each, so that the vector builds take 16 or 8 values at a time.
KD_VECTOR_CLONES
void exp_in_place(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = cephes_exp(x[i]);
}

KD_VECTOR_CLONES
void log_in_place(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = cephes_log(x[i]);
}

void exp_in_place(double* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i]);
}

void log_in_place(double* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::log(x[i]);
}

// The softmaxes of `rows` rows of c values times `scale`: e[r * c + j] = exp(x * scale - log_z[r]), with
// log_z[r] = log sum_j exp(x[r, j] * scale), computed as top + log sum_j exp(x * scale - top) (top: the
// row's largest). In passes over the block, so that the exponentials run vectorised; `sums` holds
// `rows` values.
template <typename T>
void softmax_block(const T* x, T scale, int64_t rows, int64_t c, T* e, T* log_z, T* sums) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * c;
    T top = xr[0] * scale;
    for (int64_t j = 1; j < c; ++j) top = std::max(top, xr[j] * scale);
    log_z[r] = top;
    for (int64_t j = 0; j < c; ++j) e[r * c + j] = xr[j] * scale - top;
  }
  exp_in_place(e, rows * c);
  for (int64_t r = 0; r < rows; ++r) {
    T sum = 0;
    for (int64_t j = 0; j < c; ++j) sum += e[r * c + j];
    sums[r] = sum;
    const T inverse = 1 / sum;
    for (int64_t j = 0; j < c; ++j) e[r * c + j] *= inverse;
  }
  log_in_place(sums, rows);
  for (int64_t r = 0; r < rows; ++r) log_z[r] += sums[r];
}

// Per-row values (values[i * n + r]) and the gradient of the weighted total; false where a label is
// out of range (the ce term then says so). `in` holds contiguous tensors (the undefined ones unread).
// Rows go in blocks of a fixed size, whichever thread takes them: a row's numbers do not depend on the
// thread count.
template <typename T>
bool fused_rows(const std::vector<FusedTerm>& terms, const LossInputs& in, int64_t labelled, std::vector<double>& values,
                torch::Tensor& gradient) {
  const torch::Tensor& s = in.student;
  const int64_t n = s.size(0), c = s.size(1);
  const T* sp = s.data_ptr<T>();
  const T* tp = in.teacher.defined() ? in.teacher.data_ptr<T>() : nullptr;
  const int64_t* yp = in.labels.defined() ? in.labels.data_ptr<int64_t>() : nullptr;
  const bool* mp = in.has_label.defined() ? in.has_label.data_ptr<bool>() : nullptr;
  gradient = torch::zeros_like(s);
  T* gp = gradient.data_ptr<T>();
  values.assign(terms.size() * n, 0.0);
  std::atomic<bool> labels_ok{true};
  const int64_t block_rows = std::max<int64_t>(1, 2048 / c);
  const int64_t blocks = (n + block_rows - 1) / block_rows;
  const auto work = block_rows * c * static_cast<int64_t>(terms.size());
  at::parallel_for(0, blocks, std::max<int64_t>(1, 8192 / work), [&](int64_t first_block, int64_t end_block) {
    std::vector<T> q(block_rows * c), p(block_rows * c), log_zs(block_rows), log_zt(block_rows), sums(block_rows);
    for (int64_t block = first_block; block < end_block; ++block) {
      const int64_t begin = block * block_rows, rows = std::min(n, begin + block_rows) - begin;
      for (size_t i = 0; i < terms.size(); ++i) {
        const FusedTerm& term = terms[i];
        if (term.kl) {
          const T inverse_t = static_cast<T>(1 / term.temperature);
          softmax_block(sp + begin * c, inverse_t, rows, c, q.data(), log_zs.data(), sums.data());
          softmax_block(tp + begin * c, inverse_t, rows, c, p.data(), log_zt.data(), sums.data());
          const T coefficient = static_cast<T>(term.weight * term.temperature / static_cast<double>(n));
          for (int64_t k = 0; k < rows; ++k) {
            const int64_t r = begin + k;
            const T* sr = sp + r * c;
            const T* tr = tp + r * c;
            const T* qr = q.data() + k * c;
            const T* pr = p.data() + k * c;
            T* gr = gp + r * c;
            double row = 0;
            for (int64_t j = 0; j < c; ++j) {
              if (pr[j] > 0) row += pr[j] * ((tr[j] * inverse_t - log_zt[k]) - (sr[j] * inverse_t - log_zs[k]));
            }
            values[i * n + r] = row;
            for (int64_t j = 0; j < c; ++j) gr[j] += coefficient * (qr[j] - pr[j]);
          }
        } else {
          softmax_block(sp + begin * c, T(1), rows, c, q.data(), log_zs.data(), sums.data());
          const T eps = static_cast<T>(term.smoothing);
          const T coefficient = static_cast<T>(term.weight / static_cast<double>(labelled));
          const T floor = eps / static_cast<T>(c);
          for (int64_t k = 0; k < rows; ++k) {
            const int64_t r = begin + k;
            if (mp != nullptr && !mp[r]) continue;
            int64_t y = yp[r];
            if (y < 0 || y >= c) {
              labels_ok = false;
              continue;
            }
            const T* sr = sp + r * c;
            const T* qr = q.data() + k * c;
            T* gr = gp + r * c;
            const T log_z = log_zs[k];
            double value = (1 - eps) * (log_z - sr[y]);
            if (eps > 0) {  // (only then: a -inf logit makes the sum infinite, and 0 * inf is NaN)
              double smooth = 0;
              for (int64_t j = 0; j < c; ++j) smooth += log_z - sr[j];
              value += eps * smooth / static_cast<double>(c);
            }
            values[i * n + r] = value;
            for (int64_t j = 0; j < c; ++j) gr[j] += coefficient * (qr[j] - floor);
            gr[y] -= coefficient * (1 - eps);
          }
        }
      }
    }
  });
  return labels_ok;
}

// The total as one autograd node whose backward is the gradient computed with it.
struct FusedObjective : public torch::autograd::Function<FusedObjective> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& gradient, double total) {
    ctx->save_for_backward({gradient});
    return torch::scalar_tensor(total, student.options());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    return {ctx->get_saved_variables()[0] * grad_outputs[0], torch::Tensor(), torch::Tensor()};
  }
};

// The fused path's values, or nothing when the terms or the inputs are not of its kinds.
std::optional<LossValues> compute_fused(const std::vector<FusedTerm>& terms, const LossInputs& inputs, bool teacher,
                                        bool labels) {
  if (terms.empty() || !fits_fused(inputs, teacher, labels)) return std::nullopt;
  const torch::Tensor& student = inputs.student;
  auto dense = [](const torch::Tensor& t) { return t.defined() ? t.detach().contiguous() : torch::Tensor(); };
  const LossInputs read{dense(student), dense(inputs.teacher), dense(inputs.labels), dense(inputs.has_label)};
  const int64_t n = student.size(0);
  int64_t labelled = n;
  if (labels && read.has_label.defined()) {
    labelled = std::count(read.has_label.data_ptr<bool>(), read.has_label.data_ptr<bool>() + n, true);
  }
  std::vector<double> rows;
  torch::Tensor gradient;
  bool ok = student.scalar_type() == torch::kFloat ? fused_rows<float>(terms, read, labelled, rows, gradient)
                                                   : fused_rows<double>(terms, read, labelled, rows, gradient);
  if (!ok) return std::nullopt;
  LossValues values;
  double total = 0;
  for (size_t i = 0; i < terms.size(); ++i) {
    double sum = 0;
    for (int64_t r = 0; r < n; ++r) sum += rows[i * n + r];  // in order: the same on any thread count
    double value = terms[i].kl ? sum * terms[i].temperature * terms[i].temperature / static_cast<double>(n)
                               : labelled > 0 ? sum / static_cast<double>(labelled) : 0.0;
    values.terms.push_back(torch::scalar_tensor(value, student.options()));
    total += terms[i].weight * value;
  }
  values.total = FusedObjective::apply(student, gradient, total);
  return values;
}

void add_tap(std::vector<std::string>& taps, const std::string& tap) {
  if (tap.empty() || tap == models::kOutputTap) return;
  if (std::find(taps.begin(), taps.end(), tap) == taps.end()) taps.push_back(tap);
}

// Where `tap`'s shape is in make_parameters' list: its place among `taps`, the outputs last.
size_t tap_index(const std::vector<std::string>& taps, const std::string& tap) {
  return static_cast<size_t>(std::find(taps.begin(), taps.end(), tap) - taps.begin());
}

torch::Tensor tap_value(const std::vector<std::string>& taps, const std::vector<torch::Tensor>& values,
                        const std::string& tap, const torch::Tensor& output, const char* side) {
  if (tap == models::kOutputTap) return output;
  size_t index = tap_index(taps, tap);
  if (index >= values.size()) fail("the {}'s tap {} was not computed", side, quote(tap));
  return values[index];
}

}  // namespace

Distiller::Distiller(std::vector<LossTermOptions> terms, Task task)
    : options_(std::move(terms)), task_(task) {
  if (options_.empty()) fail("losses: empty, expected at least one term such as {{kind: kl}}");
  std::map<std::string, int> kind_count;
  double weight_sum = 0;
  for (size_t i = 0; i < options_.size(); ++i) {
    const LossTermOptions& options = options_[i];
    std::unique_ptr<LossTerm> term;
    try {
      term = make_loss_term(options);
    } catch (const Error& e) {
      // Every option message starts with its key: "losses[1].temperature: ...".
      throw Error(fmt::format("losses[{}].{}", i, e.what()));
    }
    if (!term->supports(task)) {
      if (task == Task::regression) {
        fail("losses[{}].kind: {} is for classification (logits over classes), the task is regression", i,
             quote(options.kind()));
      }
      fail(
          "losses[{}].target: {} with target \"labels\" needs real-valued labels (regression); for class "
          "labels use kind \"ce\"",
          i, quote(options.kind()));
    }
    weight_sum += options.weight();
    ++kind_count[term->name()];
    terms_.push_back(std::move(term));
  }
  if (weight_sum <= 0) fail("losses: all weights are 0, expected at least one weight > 0");
  std::map<std::string, int> seen;
  for (const auto& term : terms_) {
    std::string name = term->name();
    names_.push_back(kind_count[name] > 1 ? fmt::format("{}_{}", name, seen[name]++) : name);
    add_tap(student_taps_, term->student_tap());
    add_tap(teacher_taps_, term->teacher_tap());
  }
}

models::NamedTensors Distiller::make_parameters(const std::vector<std::vector<int64_t>>& student_shapes,
                                                const std::vector<std::vector<int64_t>>& teacher_shapes,
                                                uint64_t seed) const {
  KD_CHECK(student_shapes.size() == student_taps_.size() + 1 && teacher_shapes.size() == teacher_taps_.size() + 1,
           "make_parameters: {} and {} shapes for {} and {} taps and the outputs", student_shapes.size(),
           teacher_shapes.size(), student_taps_.size(), teacher_taps_.size());
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  models::NamedTensors parameters;
  for (size_t i = 0; i < terms_.size(); ++i) {
    const LossTerm& term = *terms_[i];
    if (term.student_tap().empty()) continue;
    models::NamedTensors own;
    try {
      own = term.make_parameters(student_shapes[tap_index(student_taps_, term.student_tap())],
                                 teacher_shapes[tap_index(teacher_taps_, term.teacher_tap())], generator);
    } catch (const Error& e) {
      throw Error(fmt::format("losses[{}]: {}", i, e.what()));
    }
    for (auto& [name, tensor] : own) parameters.emplace_back(fmt::format("losses[{}].{}", i, name), tensor);
  }
  return parameters;
}

LossValues Distiller::compute(const LossInputs& inputs) const {
  if (auto fused = compute_fused(fusable_terms(options_), inputs, needs_teacher(), needs_labels())) return *fused;
  LossValues values;
  for (size_t i = 0; i < terms_.size(); ++i) {
    torch::Tensor value;
    try {
      const LossTerm& term = *terms_[i];
      if (term.student_tap().empty()) {
        value = term.compute(inputs);
      } else {
        LossInputs own = inputs;
        own.student_feature = tap_value(student_taps_, inputs.student_taps, term.student_tap(), inputs.student, "student");
        own.teacher_feature = tap_value(teacher_taps_, inputs.teacher_taps, term.teacher_tap(), inputs.teacher, "teacher");
        own.parameters.clear();
        std::string prefix = fmt::format("losses[{}].", i);
        for (const auto& [name, tensor] : inputs.named_parameters) {
          if (starts_with(name, prefix)) own.parameters.push_back(tensor);
        }
        value = term.compute(own);
      }
    } catch (const Error& e) {
      throw Error(fmt::format("losses[{}]: {}", i, e.what()));
    }
    torch::Tensor weighted = value * options_[i].weight();
    values.total = values.total.defined() ? values.total + weighted : weighted;
    values.terms.push_back(value.detach());
  }
  return values;
}

bool Distiller::needs_teacher() const {
  for (const auto& term : terms_) {
    if (term->uses_teacher()) return true;
  }
  return false;
}

bool Distiller::reads_features() const {
  for (const auto& term : terms_) {
    if (!term->student_tap().empty()) return true;
  }
  return false;
}

bool Distiller::needs_labels() const {
  for (const auto& term : terms_) {
    if (term->uses_labels()) return true;
  }
  return false;
}

}  // namespace kd::losses
