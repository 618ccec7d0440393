#include "kd/losses/distiller.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <atomic>
#include <cmath>
#include <map>
#include <optional>

#include "kd/losses/registry.h"
#include "kd/util/error.h"
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

// log sum_c exp(x_c * scale), and e_c = exp(x_c * scale - that): the softmax.
template <typename T>
T log_softmax_row(const T* x, T scale, T* e, int64_t c) {
  T top = x[0] * scale;
  for (int64_t j = 1; j < c; ++j) top = std::max(top, x[j] * scale);
  T sum = 0;
  for (int64_t j = 0; j < c; ++j) sum += (e[j] = std::exp(x[j] * scale - top));
  T log_sum = std::log(sum);
  T inverse = 1 / sum;
  for (int64_t j = 0; j < c; ++j) e[j] *= inverse;
  return top + log_sum;
}

// Per-row values (values[i * n + r]) and the gradient of the weighted total; false where a label is
// out of range (the ce term then says so). `in` holds contiguous tensors (the undefined ones unread).
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
  at::parallel_for(0, n, std::max<int64_t>(1, 8192 / (c * static_cast<int64_t>(terms.size()))), [&](int64_t begin, int64_t end) {
    std::vector<T> q(c), p(c);
    for (int64_t r = begin; r < end; ++r) {
      const T* sr = sp + r * c;
      T* gr = gp + r * c;
      for (size_t i = 0; i < terms.size(); ++i) {
        const FusedTerm& term = terms[i];
        if (term.kl) {
          const T inverse_t = static_cast<T>(1 / term.temperature);
          const T* tr = tp + r * c;
          T log_zs = log_softmax_row(sr, inverse_t, q.data(), c);
          T log_zt = log_softmax_row(tr, inverse_t, p.data(), c);
          double row = 0;
          for (int64_t j = 0; j < c; ++j) {
            if (p[j] > 0) row += p[j] * ((tr[j] * inverse_t - log_zt) - (sr[j] * inverse_t - log_zs));
          }
          values[i * n + r] = row;
          const T coefficient = static_cast<T>(term.weight * term.temperature / static_cast<double>(n));
          for (int64_t j = 0; j < c; ++j) gr[j] += coefficient * (q[j] - p[j]);
        } else {
          if (mp != nullptr && !mp[r]) continue;
          int64_t y = yp[r];
          if (y < 0 || y >= c) {
            labels_ok = false;
            continue;
          }
          T log_z = log_softmax_row(sr, T(1), q.data(), c);
          const T eps = static_cast<T>(term.smoothing);
          double smooth = 0;
          for (int64_t j = 0; j < c; ++j) smooth += log_z - sr[j];
          values[i * n + r] = (1 - eps) * (log_z - sr[y]) + eps * smooth / static_cast<double>(c);
          const T coefficient = static_cast<T>(term.weight / static_cast<double>(labelled));
          const T floor = eps / static_cast<T>(c);
          for (int64_t j = 0; j < c; ++j) gr[j] += coefficient * (q[j] - floor);
          gr[y] -= coefficient * (1 - eps);
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
  }
}

LossValues Distiller::compute(const LossInputs& inputs) const {
  if (auto fused = compute_fused(fusable_terms(options_), inputs, needs_teacher(), needs_labels())) return *fused;
  LossValues values;
  for (size_t i = 0; i < terms_.size(); ++i) {
    torch::Tensor value;
    try {
      value = terms_[i]->compute(inputs);
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

bool Distiller::needs_labels() const {
  for (const auto& term : terms_) {
    if (term->uses_labels()) return true;
  }
  return false;
}

}  // namespace kd::losses
