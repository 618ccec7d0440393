#include "kd/models/fused_ops.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kd/util/simd.h"

namespace kd::models {
namespace {

// For the loops that KD_VECTOR_CLONES functions call: compiled into each clone, for its target.
#define KD_INLINE inline __attribute__((always_inline))

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// A window's choice: 0..3 = which of its elements (row-major) is the output; kNone = no gradient
// (the largest value is not positive, so relu's zero is the output).
constexpr uint8_t kNone = 255;

// relu then max over one 2x2 window (a b / c d), branch-free: with branches, mispredicted on real
// data, this and libtorch's max_pool2d took 4-5 ms on [128, 16, 28, 28]; without, 1.2 ms. Ties go to
// the first element, as max_pool2d's.
inline float pool_window(float a, float b, float c, float d, uint8_t& choice) {
  int right_top = b > a, right_bottom = d > c;
  float top = std::max(a, b), bottom = std::max(c, d);  // the first of equals
  int lower = bottom > top;
  float m = std::max(top, bottom);
  int q = lower * (2 + right_bottom) + (1 - lower) * right_top;
  int positive = m > 0;
  choice = static_cast<uint8_t>(positive * q + (1 - positive) * kNone);
  return std::max(m, 0.0f);
}

// Pools one [h, w] plane of relu(x * scale + shift) into [h/2, w/2] outputs and choices.
template <bool Affine>
void pool_plane(const float* x, int64_t h, int64_t w, float scale, float shift, float* out, uint8_t* choice) {
  int64_t ho = h / 2, wo = w / 2;
  auto at = [&](float v) { return Affine ? v * scale + shift : v; };
  for (int64_t i = 0; i < ho; ++i) {
    const float* r0 = x + 2 * i * w;
    const float* r1 = r0 + w;
    for (int64_t j = 0; j < wo; ++j) {
      out[i * wo + j] =
          pool_window(at(r0[2 * j]), at(r0[2 * j + 1]), at(r1[2 * j]), at(r1[2 * j + 1]), choice[i * wo + j]);
    }
  }
}

// Offset in the [h, w] plane of window (i, j)'s chosen element (kNone & 3 = 3: a valid element).
inline int64_t chosen_offset(uint8_t q, int64_t i, int64_t j, int64_t w) {
  int chosen = q & 3;
  return (2 * i + (chosen >> 1)) * w + 2 * j + (chosen & 1);
}

// Channels-last ([N, H, W, C] in memory): a window's four elements are four runs of C floats, and
// the loops run over channels in blocks of kLanes, all in float (choices too) so that they vectorise;
// per-channel scalar code (pool_window per channel) ran 3x slower than the contiguous layout.
constexpr int64_t kLanes = 16;

// Pools window row `i` of one [h, w, c] image into out and choice ([wo, c] each); with Affine, of
// relu(x * scale + shift), and with Chosen, also stores xhat = (x - mean) * invstd of each window's
// chosen element (0 where none). Ties and kNone as pool_window.
template <bool Affine, bool Chosen>
KD_INLINE void pool_row_nhwc(const float* x, int64_t w, int64_t c, int64_t i, const float* scale,
                             const float* shift, const float* mean, const float* invstd, float* out,
                             uint8_t* choice, float* chosen_xhat) {
  int64_t wo = w / 2;
  for (int64_t j = 0; j < wo; ++j) {
    for (int64_t c0 = 0; c0 < c; c0 += kLanes) {
      int64_t lanes = std::min(kLanes, c - c0);
      const float* a = x + (2 * i * w + 2 * j) * c + c0;
      const float* b = a + c;
      const float* d = a + w * c;
      const float* e = d + c;
      float q[kLanes];
      float* o = out + j * c + c0;
      for (int64_t l = 0; l < lanes; ++l) {
        // Every load unconditional (a load under a condition keeps the loop from vectorising).
        float ra = a[l], rb = b[l], rd = d[l], re = e[l];
        float sc = Affine ? scale[c0 + l] : 1.0f, sh = Affine ? shift[c0 + l] : 0.0f;
        float va = ra * sc + sh, vb = rb * sc + sh, vd = rd * sc + sh, ve = re * sc + sh;
        bool right_top = vb > va, right_bottom = ve > vd;
        float top = right_top ? vb : va, bottom = right_bottom ? ve : vd;
        bool lower = bottom > top;
        float m = lower ? bottom : top;
        float chosen = lower ? (right_bottom ? 3.0f : 2.0f) : (right_top ? 1.0f : 0.0f);
        bool positive = m > 0;
        o[l] = positive ? m : 0.0f;
        q[l] = positive ? chosen : static_cast<float>(kNone);
      }
      if constexpr (Chosen) {  // a loop of its own: in the one above, it kept that from vectorising
        for (int64_t l = 0; l < lanes; ++l) {
          float ra = a[l], rb = b[l], rd = d[l], re = e[l], k = q[l];
          float top = ((k == 1) | (k == 3)) ? rb : ra, bottom = k == 3 ? re : rd;
          float raw = k >= 2 ? bottom : top;
          float xhat = (raw - mean[c0 + l]) * invstd[c0 + l];
          chosen_xhat[j * c + c0 + l] = k == static_cast<float>(kNone) ? 0.0f : xhat;
        }
      }
      for (int64_t l = 0; l < lanes; ++l) choice[j * c + c0 + l] = static_cast<uint8_t>(q[l]);
    }
  }
}

// The input gradient of window row `i` of one [h, w, c] image, channels-last: each of a window's four
// elements gets base + slope * x (Affine; 0 without), plus scale * dy at the chosen one (kNone matches
// none). go and choice are the row's [wo, c] pooled gradient and choices.
template <bool Affine>
KD_INLINE void unpool_row_nhwc(const float* x, int64_t w, int64_t c, int64_t i, const float* base,
                               const float* slope, const float* scale, const float* go, const uint8_t* choice,
                               float* dx) {
  int64_t wo = w / 2;
  for (int64_t j = 0; j < wo; ++j) {
    for (int64_t c0 = 0; c0 < c; c0 += kLanes) {
      int64_t lanes = std::min(kLanes, c - c0);
      for (int element = 0; element < 4; ++element) {
        int64_t at = ((2 * i + element / 2) * w + 2 * j + element % 2) * c + c0;
        for (int64_t l = 0; l < lanes; ++l) {
          float g = go[j * c + c0 + l];
          float dy = choice[j * c + c0 + l] == element ? g : 0.0f;
          dx[at + l] = Affine ? base[c0 + l] + slope[c0 + l] * x[at + l] + scale[c0 + l] * dy : dy;
        }
      }
    }
  }
}

// The elements of one [h, w, c] image that no window covers (the last row or column of odd sizes):
// base + slope * x (Affine), else 0.
template <bool Affine>
KD_INLINE void uncovered_nhwc(const float* x, int64_t h, int64_t w, int64_t c, const float* base,
                              const float* slope, float* dx) {
  auto fill = [&](int64_t row, int64_t col) {
    int64_t at = (row * w + col) * c;
    for (int64_t ch = 0; ch < c; ++ch) dx[at + ch] = Affine ? base[ch] + slope[ch] * x[at + ch] : 0.0f;
  };
  if (w % 2) {
    for (int64_t row = 0; row < h; ++row) fill(row, w - 1);
  }
  if (h % 2) {
    for (int64_t col = 0; col < w - w % 2; ++col) fill(h - 1, col);
  }
}

// The four channels-last passes over a batch's window rows r = image * ho + i in [begin, end), built
// for AVX-512 and AVX2 as well and picked at load time (GCC's function multi-versioning): the row
// templates above inline into each, 16 or 8 channels an instruction instead of SSE's 4.
KD_VECTOR_CLONES
void relu_pool_rows_nhwc(const float* x, int64_t h, int64_t w, int64_t c, int64_t begin, int64_t end,
                         float* out, uint8_t* choice) {
  int64_t ho = h / 2, wo = w / 2;
  for (int64_t r = begin; r < end; ++r) {
    pool_row_nhwc<false, false>(x + r / ho * h * w * c, w, c, r % ho, nullptr, nullptr, nullptr, nullptr,
                                out + r * wo * c, choice + r * wo * c, nullptr);
  }
}

KD_VECTOR_CLONES
void batch_norm_relu_pool_rows_nhwc(const float* x, int64_t h, int64_t w, int64_t c, int64_t begin,
                                    int64_t end, const float* scale, const float* shift, const float* mean,
                                    const float* invstd, float* out, uint8_t* choice, float* chosen_xhat) {
  int64_t ho = h / 2, wo = w / 2;
  for (int64_t r = begin; r < end; ++r) {
    pool_row_nhwc<true, true>(x + r / ho * h * w * c, w, c, r % ho, scale, shift, mean, invstd,
                              out + r * wo * c, choice + r * wo * c, chosen_xhat + r * wo * c);
  }
}

// dx of the rows' images (the uncovered elements with an image's first row); x, base, slope and gain
// only with Affine (batch norm), as unpool_row_nhwc.
template <bool Affine>
KD_INLINE void unpool_rows_nhwc(const float* x, int64_t h, int64_t w, int64_t c, int64_t begin, int64_t end,
                                const float* base, const float* slope, const float* gain, const float* go,
                                const uint8_t* choice, float* dx) {
  int64_t ho = h / 2, wo = w / 2, image_size = h * w * c;
  for (int64_t r = begin; r < end; ++r) {
    int64_t image = r / ho, i = r % ho;
    const float* xi = Affine ? x + image * image_size : nullptr;
    unpool_row_nhwc<Affine>(xi, w, c, i, base, slope, gain, go + r * wo * c, choice + r * wo * c,
                            dx + image * image_size);
    if (i == 0) uncovered_nhwc<Affine>(xi, h, w, c, base, slope, dx + image * image_size);
  }
}

KD_VECTOR_CLONES
void relu_unpool_rows_nhwc(int64_t h, int64_t w, int64_t c, int64_t begin, int64_t end, const float* go,
                           const uint8_t* choice, float* dx) {
  unpool_rows_nhwc<false>(nullptr, h, w, c, begin, end, nullptr, nullptr, nullptr, go, choice, dx);
}

KD_VECTOR_CLONES
void batch_norm_relu_unpool_rows_nhwc(const float* x, int64_t h, int64_t w, int64_t c, int64_t begin,
                                      int64_t end, const float* base, const float* slope, const float* gain,
                                      const float* go, const uint8_t* choice, float* dx) {
  unpool_rows_nhwc<true>(x, h, w, c, begin, end, base, slope, gain, go, choice, dx);
}

// True for a [N, C, H, W] tensor laid out channels-last (and not also plain contiguous, as one
// with C = 1 is): the fused ops then work in that layout and return it.
bool is_channels_last(const torch::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(torch::MemoryFormat::ChannelsLast);
}

torch::Tensor empty_4d(const torch::TensorOptions& options, int64_t n, int64_t c, int64_t h, int64_t w,
                       bool nhwc) {
  return torch::empty({n, c, h, w}, options.memory_format(nhwc ? torch::MemoryFormat::ChannelsLast
                                                               : torch::MemoryFormat::Contiguous));
}

class ReluMaxPool2x2 : public torch::autograd::Function<ReluMaxPool2x2> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& input) {
    bool nhwc = is_channels_last(input);
    torch::Tensor x = nhwc ? input : input.contiguous();
    int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), ho = h / 2, wo = w / 2;
    auto out = empty_4d(x.options(), n, c, ho, wo, nhwc);
    auto where = empty_4d(x.options().dtype(torch::kByte), n, c, ho, wo, nhwc);
    const float* in = x.data_ptr<float>();
    float* o = out.data_ptr<float>();
    uint8_t* k = where.data_ptr<uint8_t>();
    if (nhwc) {
      at::parallel_for(0, n * ho, 1, [&](int64_t begin, int64_t end) {
        relu_pool_rows_nhwc(in, h, w, c, begin, end, o, k);
      });
    } else {
      at::parallel_for(0, n * c, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p)
          pool_plane<false>(in + p * h * w, h, w, 1, 0, o + p * ho * wo, k + p * ho * wo);
      });
    }
    ctx->save_for_backward({where});
    ctx->saved_data["h"] = h;
    ctx->saved_data["w"] = w;
    ctx->saved_data["nhwc"] = nhwc;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    torch::Tensor where = ctx->get_saved_variables()[0];
    bool nhwc = ctx->saved_data["nhwc"].toBool();
    torch::Tensor g =
        grads[0].contiguous(nhwc ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous);
    int64_t h = ctx->saved_data["h"].toInt(), w = ctx->saved_data["w"].toInt();
    int64_t n = where.size(0), c = where.size(1), ho = where.size(2), wo = where.size(3);
    auto grad = empty_4d(g.options(), n, c, h, w, nhwc);
    const float* go = g.data_ptr<float>();
    const uint8_t* k = where.data_ptr<uint8_t>();
    float* gi = grad.data_ptr<float>();
    if (nhwc) {
      at::parallel_for(0, n * ho, 1, [&](int64_t begin, int64_t end) {
        relu_unpool_rows_nhwc(h, w, c, begin, end, go, k, gi);
      });
      return {grad};
    }
    // Zeros, then one store per window: its gradient (or 0) at its chosen element. Written as
    // four selects per window (branch-free too) it ran 2.9 ms on [128, 16, 28, 28]; this 0.43 ms.
    at::parallel_for(0, n * c, 1, [&](int64_t begin, int64_t end) {
      std::fill(gi + begin * h * w, gi + end * h * w, 0.0f);
      for (int64_t p = begin; p < end; ++p) {
        for (int64_t i = 0; i < ho; ++i) {
          for (int64_t j = 0; j < wo; ++j) {
            int64_t win = (p * ho + i) * wo + j;
            gi[p * h * w + chosen_offset(k[win], i, j, w)] = go[win] * static_cast<float>(k[win] != kNone);
          }
        }
      }
    });
    return {grad};
  }
};

// Per-channel sum and sum of squares of x - pivot over an [n, c, hw] tensor's channel `ch`, in 16
// float lanes per plane (vectorised) and double across planes. The pivot (the channel's first value)
// keeps E[x^2] - E[x]^2 accurate when the mean is large against the spread.
void channel_sums(const float* x, int64_t n, int64_t c, int64_t hw, int64_t ch, float pivot, double& sum,
                  double& squares) {
  constexpr int kLanes = 16;
  sum = 0;
  squares = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* p = x + (i * c + ch) * hw;
    float s[kLanes] = {}, q[kLanes] = {};
    int64_t k = 0;
    for (; k + kLanes <= hw; k += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        float v = p[k + l] - pivot;
        s[l] += v;
        q[l] += v * v;
      }
    }
    for (; k < hw; ++k) {
      float v = p[k] - pivot;
      sum += v;
      squares += static_cast<double>(v) * v;
    }
    for (int l = 0; l < kLanes; ++l) {
      sum += s[l];
      squares += q[l];
    }
  }
}

// Sum and sum of squares of x - pivot per channel over one channels-last image ([hw, c]), in float
// over blocks of rows and double across blocks; pivot[ch] is the channel's first value in the batch.
void image_sums_nhwc(const float* x, int64_t hw, int64_t c, const float* pivot, double* sum,
                     double* squares) {
  constexpr int64_t kBlock = 64;
  std::vector<float> s(static_cast<size_t>(c)), q(static_cast<size_t>(c));
  std::fill(sum, sum + c, 0.0);
  std::fill(squares, squares + c, 0.0);
  for (int64_t r0 = 0; r0 < hw; r0 += kBlock) {
    std::fill(s.begin(), s.end(), 0.0f);
    std::fill(q.begin(), q.end(), 0.0f);
    for (int64_t r = r0; r < std::min(hw, r0 + kBlock); ++r) {
      const float* row = x + r * c;
      for (int64_t ch = 0; ch < c; ++ch) {
        float v = row[ch] - pivot[ch];
        s[static_cast<size_t>(ch)] += v;
        q[static_cast<size_t>(ch)] += v * v;
      }
    }
    for (int64_t ch = 0; ch < c; ++ch) {
      sum[ch] += s[static_cast<size_t>(ch)];
      squares[ch] += q[static_cast<size_t>(ch)];
    }
  }
}

// max_pool2d(relu(batch_norm(x))) in training mode. Forward: per-channel statistics (one pass), then
// normalise, relu and pool (one pass writing only the pooled output and a byte per window). Backward:
// the batch-norm gradient dx = w * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), where dy (the
// gradient at batch norm's output) is zero except at each window's chosen element, so both means come
// from the pooled gradient and the chosen elements' xhat (saved by the forward, a quarter of x's size),
// and dx is one linear pass over x plus one add per window. Everything runs in parallel over planes.
class BatchNormReluMaxPool2x2 : public torch::autograd::Function<BatchNormReluMaxPool2x2> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& input, const torch::Tensor& weight,
                               const torch::Tensor& bias, torch::Tensor running_mean,
                               torch::Tensor running_var, double momentum, double eps) {
    bool nhwc = is_channels_last(input);
    torch::Tensor x = nhwc ? input : input.contiguous();
    int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), ho = h / 2, wo = w / 2, hw = h * w;
    double count = static_cast<double>(n * hw);
    auto mean = torch::empty({c}, x.options()), invstd = torch::empty({c}, x.options());
    std::vector<double> variance(static_cast<size_t>(c));
    const float* in = x.data_ptr<float>();
    float* m = mean.data_ptr<float>();
    float* is = invstd.data_ptr<float>();
    auto finish_channel = [&](int64_t ch, float pivot, double sum, double squares) {
      double shifted_mean = sum / count;
      double var = std::max(0.0, squares / count - shifted_mean * shifted_mean);
      m[ch] = static_cast<float>(pivot + shifted_mean);
      is[ch] = static_cast<float>(1.0 / std::sqrt(var + eps));
      variance[static_cast<size_t>(ch)] = var;
    };
    if (nhwc) {
      // Per image (in parallel), then per channel over the images in order: the same sums on any
      // number of threads.
      std::vector<double> sums(static_cast<size_t>(n * c)), squares(static_cast<size_t>(n * c));
      at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
          image_sums_nhwc(in + i * hw * c, hw, c, in, &sums[static_cast<size_t>(i * c)],
                          &squares[static_cast<size_t>(i * c)]);
      });
      for (int64_t ch = 0; ch < c; ++ch) {
        double sum = 0, sq = 0;
        for (int64_t i = 0; i < n; ++i) {
          sum += sums[static_cast<size_t>(i * c + ch)];
          sq += squares[static_cast<size_t>(i * c + ch)];
        }
        finish_channel(ch, in[ch], sum, sq);
      }
    } else {
      at::parallel_for(0, c, 1, [&](int64_t begin, int64_t end) {
        for (int64_t ch = begin; ch < end; ++ch) {
          float pivot = in[ch * hw];
          double sum = 0, squares = 0;
          channel_sums(in, n, c, hw, ch, pivot, sum, squares);
          finish_channel(ch, pivot, sum, squares);
        }
      });
    }
    {
      torch::NoGradGuard no_grad;
      auto unbiased =
          torch::tensor(variance, torch::kDouble).mul_(count / std::max(1.0, count - 1)).to(torch::kFloat);
      running_mean.mul_(1 - momentum).add_(mean, momentum);
      running_var.mul_(1 - momentum).add_(unbiased, momentum);
    }

    auto out = empty_4d(x.options(), n, c, ho, wo, nhwc);
    auto where = empty_4d(x.options().dtype(torch::kByte), n, c, ho, wo, nhwc);
    torch::Tensor wc = weight.contiguous(), bc = bias.contiguous();
    const float* wt = wc.data_ptr<float>();
    const float* bt = bc.data_ptr<float>();
    float* o = out.data_ptr<float>();
    uint8_t* k = where.data_ptr<uint8_t>();
    // xhat at each window's chosen element (0 where none), for the backward's sums: read in order there,
    // where gathering it from x made the backward's first pass the slowest part of the step.
    auto chosen_xhat = empty_4d(x.options(), n, c, ho, wo, nhwc);
    float* cx = chosen_xhat.data_ptr<float>();
    // relu(x * scale + shift) is relu(batch_norm(x)), per channel.
    std::vector<float> scale(static_cast<size_t>(c)), shift(static_cast<size_t>(c));
    for (int64_t ch = 0; ch < c; ++ch) {
      scale[static_cast<size_t>(ch)] = wt[ch] * is[ch];
      shift[static_cast<size_t>(ch)] = bt[ch] - m[ch] * scale[static_cast<size_t>(ch)];
    }
    if (nhwc) {
      at::parallel_for(0, n * ho, 1, [&](int64_t begin, int64_t end) {
        batch_norm_relu_pool_rows_nhwc(in, h, w, c, begin, end, scale.data(), shift.data(), m, is, o, k, cx);
      });
    } else {
      at::parallel_for(0, n * c, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
          int64_t ch = p % c;
          const float* plane = in + p * hw;
          uint8_t* kp = k + p * ho * wo;
          float* cp = cx + p * ho * wo;
          pool_plane<true>(plane, h, w, scale[static_cast<size_t>(ch)], shift[static_cast<size_t>(ch)],
                           o + p * ho * wo, kp);
          for (int64_t oi = 0; oi < ho; ++oi) {
            for (int64_t oj = 0; oj < wo; ++oj) {
              uint8_t q = kp[oi * wo + oj];
              // Branch-free (kNone & 3 names a valid element, weighted 0): a branch here is mispredicted.
              cp[oi * wo + oj] =
                  static_cast<float>(q != kNone) * ((plane[chosen_offset(q, oi, oj, w)] - m[ch]) * is[ch]);
            }
          }
        }
      });
    }
    ctx->save_for_backward({x, wc, mean, invstd, where, chosen_xhat});
    ctx->saved_data["nhwc"] = nhwc;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &weight = saved[1], &mean = saved[2], &invstd = saved[3],
                        &where = saved[4], &chosen_xhat = saved[5];
    bool nhwc = ctx->saved_data["nhwc"].toBool();
    torch::Tensor g =
        grads[0].contiguous(nhwc ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous);
    int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), ho = where.size(2),
            wo = where.size(3);
    int64_t hw = h * w, pooled = ho * wo;
    double count = static_cast<double>(n * hw);
    const float* in = x.data_ptr<float>();
    const float* go = g.data_ptr<float>();
    const uint8_t* k = where.data_ptr<uint8_t>();
    const float* cx = chosen_xhat.data_ptr<float>();
    const float* wt = weight.data_ptr<float>();
    const float* m = mean.data_ptr<float>();
    const float* is = invstd.data_ptr<float>();

    // sum(dy) and sum(dy * xhat) over the chosen elements only, in the order of the pooled arrays:
    // per plane (channels-last: per image and channel) in parallel, then per channel.
    std::vector<double> part_dy(static_cast<size_t>(n * c)), part_dy_xhat(static_cast<size_t>(n * c));
    if (nhwc) {
      at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
        std::vector<float> s(static_cast<size_t>(c)), sx(static_cast<size_t>(c));
        for (int64_t i = begin; i < end; ++i) {
          std::fill(s.begin(), s.end(), 0.0f);
          std::fill(sx.begin(), sx.end(), 0.0f);
          for (int64_t e = i * pooled; e < (i + 1) * pooled; ++e) {
            for (int64_t ch = 0; ch < c; ++ch) {
              int64_t at = e * c + ch;
              float dy = go[at] * static_cast<float>(k[at] != kNone);
              s[static_cast<size_t>(ch)] += dy;
              sx[static_cast<size_t>(ch)] += dy * cx[at];
            }
          }
          std::copy(s.begin(), s.end(), &part_dy[static_cast<size_t>(i * c)]);
          std::copy(sx.begin(), sx.end(), &part_dy_xhat[static_cast<size_t>(i * c)]);
        }
      });
    } else {
      at::parallel_for(0, n * c, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
          float s = 0, sx = 0;
          for (int64_t e = p * pooled; e < (p + 1) * pooled; ++e) {
            float dy = k[e] == kNone ? 0.0f : go[e];
            s += dy;
            sx += dy * cx[e];
          }
          part_dy[static_cast<size_t>(p)] = s;
          part_dy_xhat[static_cast<size_t>(p)] = sx;
        }
      });
    }
    auto grad_weight = torch::empty({c}, x.options()), grad_bias = torch::empty({c}, x.options());
    float* gw = grad_weight.data_ptr<float>();
    float* gb = grad_bias.data_ptr<float>();
    // dx = k1 * dy + a + b * x with k1 = w * invstd, b = -k1 * invstd * mean(dy * xhat),
    // a = -k1 * mean(dy) - b * mean.
    std::vector<float> fa(static_cast<size_t>(c)), fb(static_cast<size_t>(c)), fk(static_cast<size_t>(c));
    for (int64_t ch = 0; ch < c; ++ch) {
      double sum_dy = 0, sum_dy_xhat = 0;
      for (int64_t i = 0; i < n; ++i) {
        sum_dy += part_dy[static_cast<size_t>(i * c + ch)];
        sum_dy_xhat += part_dy_xhat[static_cast<size_t>(i * c + ch)];
      }
      gb[ch] = static_cast<float>(sum_dy);
      gw[ch] = static_cast<float>(sum_dy_xhat);
      double k1 = static_cast<double>(wt[ch]) * is[ch];
      double b = -k1 * is[ch] * (gw[ch] / count);
      double a = -k1 * (gb[ch] / count) - b * m[ch];
      fa[static_cast<size_t>(ch)] = static_cast<float>(a);
      fb[static_cast<size_t>(ch)] = static_cast<float>(b);
      fk[static_cast<size_t>(ch)] = static_cast<float>(k1);
    }

    auto grad = empty_4d(x.options(), n, c, h, w, nhwc);
    float* gi = grad.data_ptr<float>();
    if (nhwc) {
      at::parallel_for(0, n * ho, 1, [&](int64_t begin, int64_t end) {
        batch_norm_relu_unpool_rows_nhwc(in, h, w, c, begin, end, fa.data(), fb.data(), fk.data(), go, k, gi);
      });
    } else {
      at::parallel_for(0, n * c, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
          size_t ch = static_cast<size_t>(p % c);
          const float* xp = in + p * hw;
          float* dp = gi + p * hw;
          for (int64_t e = 0; e < hw; ++e) dp[e] = fa[ch] + fb[ch] * xp[e];
          for (int64_t oi = 0; oi < ho; ++oi) {
            for (int64_t oj = 0; oj < wo; ++oj) {
              int64_t win = p * pooled + oi * wo + oj;
              dp[chosen_offset(k[win], oi, oj, w)] += fk[ch] * go[win] * static_cast<float>(k[win] != kNone);
            }
          }
        }
      });
    }
    return {grad, grad_weight, grad_bias, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

bool fits(const torch::Tensor& x) {
  return x.dim() == 4 && x.is_cpu() && x.scalar_type() == torch::kFloat && x.size(2) >= 2 && x.size(3) >= 2;
}

}  // namespace

torch::Tensor to_channels_last(const torch::Tensor& x) {
  if (x.dim() != 4 || !x.is_cpu() || x.scalar_type() != torch::kFloat) return x;
  if (x.size(1) == 1 && x.is_contiguous()) {
    // One channel: both layouts are the same memory, but libtorch reads plain strides as [N, C, H, W]
    // (and gives a convolution's output those). These strides (a view, no copy) say channels-last.
    return x.as_strided(x.sizes(), {x.size(2) * x.size(3), 1, x.size(3), 1});
  }
  return x.contiguous(torch::MemoryFormat::ChannelsLast);
}

torch::Tensor relu_max_pool2x2(const torch::Tensor& x) {
  if (fits(x)) return ReluMaxPool2x2::apply(x);
  return torch::max_pool2d(torch::relu(x), {2, 2}, {2, 2});
}

torch::Tensor batch_norm_relu_max_pool2x2(const torch::Tensor& x, torch::nn::BatchNorm2d& bn) {
  const auto& options = bn->options;
  bool fused = bn->is_training() && options.affine() && options.track_running_stats() && fits(x) &&
               x.size(0) * x.size(2) * x.size(3) > 1 && bn->weight.scalar_type() == torch::kFloat &&
               bn->running_mean.scalar_type() == torch::kFloat;
  if (!fused) return relu_max_pool2x2(bn(x));
  {
    torch::NoGradGuard no_grad;
    bn->num_batches_tracked += 1;
  }
  double momentum = options.momentum() ? *options.momentum() : 1.0 / bn->num_batches_tracked.item<double>();
  return BatchNormReluMaxPool2x2::apply(x, bn->weight, bn->bias, bn->running_mean, bn->running_var, momentum,
                                        options.eps());
}

}  // namespace kd::models
