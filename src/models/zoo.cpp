#include "kd/models/zoo.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "kd/models/dense_chain.h"
#include "kd/models/fused_ops.h"
#include "kd/util/error.h"
#include "kd/util/shape.h"
#include "kd/util/strings.h"

namespace kd::models {
namespace {

// BatchNorm hyper-parameters: libtorch's defaults, written into the TorchScript source as well.
constexpr double kBatchNormMomentum = 0.1;
constexpr double kBatchNormEps = kZooBatchNormEps;
constexpr double kLeakyReluSlope = kZooLeakyReluSlope;

// One step of a zoo network (a ZooStep with its modules). The same plan drives the torch::nn modules
// (forward), the summary (shapes, params, MACs) and the TorchScript source, so the three cannot drift apart.
using StepKind = ZooStepKind;

struct Step {
  Step(StepKind kind, std::string name) : kind(kind), name(std::move(name)) {}

  StepKind kind;
  std::string name;         // module name (Linear, Conv, BatchNorm, Block) or row name
  int64_t in = 0, out = 0;  // Linear: features; Conv: channels; BatchNorm: features in `out`
  int64_t kernel = 1, stride = 1, padding = 0;
  bool bias = true;
  bool spatial = false;              // BatchNorm: 2d (true) or 1d
  std::vector<int64_t> shape;        // Reshape: target without the batch dim
  std::string op;                    // Activation: name; Pool: max | avg; Block: activation after the add
  double p = 0;                      // Dropout probability
  int64_t heads = 0, ff = 0;         // Encoder
  std::vector<Step> body, shortcut;  // Block: main path; projection (empty = identity)

  torch::nn::Linear linear{nullptr};
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm1d bn1d{nullptr};
  torch::nn::BatchNorm2d bn2d{nullptr};
  torch::nn::Embedding embedding{nullptr};
  torch::nn::Conv1d conv1d{nullptr};
  torch::nn::Embedding positions{nullptr};                      // Positions: a table [L, out]
  torch::nn::Linear attn_in{nullptr}, attn_out{nullptr}, ff1{nullptr}, ff2{nullptr};  // Encoder
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};          // Encoder (LayerNorm steps: norm1)
  torch::nn::GRU gru{nullptr};                                  // Recurrent
};

int64_t scaled(int64_t size, double multiplier) {
  return std::max<int64_t>(1, std::llround(static_cast<double>(size) * multiplier));
}

// The side of a square image with `features` pixels, or 0.
int64_t square_side(int64_t features) {
  auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(features))));
  return side * side == features ? side : 0;
}

std::string one_of(const std::vector<std::string>& names) {
  std::string text;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) text += i + 1 == names.size() ? " or " : ", ";
    text += names[i];
  }
  return text;
}

void check_name(const std::string& field, const std::string& what, const std::string& value,
                const std::vector<std::string>& allowed) {
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return;
  auto suggestion = nearest(value, allowed);
  fail("{}: unknown {} {}{} (expected {})", field, what, quote(value),
       suggestion ? "; did you mean " + quote(*suggestion) + "?" : std::string(), one_of(allowed));
}

const std::vector<std::string>& pool_kinds() {
  static const std::vector<std::string> kinds = {"max", "avg"};
  return kinds;
}

// ---- the plan ------------------------------------------------------------------------------------

Step linear_step(const std::string& name, int64_t in, int64_t out, bool bias) {
  Step s{StepKind::Linear, name};
  s.in = in;
  s.out = out;
  s.bias = bias;
  return s;
}

Step conv_step(const std::string& name, int64_t in, int64_t out, int64_t kernel, int64_t stride, bool bias) {
  Step s{StepKind::Conv, name};
  s.in = in;
  s.out = out;
  s.kernel = kernel;
  s.stride = stride;
  s.padding = kernel / 2;
  s.bias = bias;
  return s;
}

Step batch_norm_step(const std::string& name, int64_t features, bool spatial) {
  Step s{StepKind::BatchNorm, name};
  s.out = features;
  s.spatial = spatial;
  return s;
}

Step activation_step(const std::string& name, const std::string& activation) {
  Step s{StepKind::Activation, name};
  s.op = activation;
  return s;
}

// The token embedding the text families start with: vocab ids -> `embedding` x width_multiplier wide,
// the pad id's row zero; [out, L] when `channels_first` (for convolutions), else [L, out].
Step embedding_step(const ZooSpec& spec, bool channels_first) {
  Step embed{StepKind::Embedding, "embed"};
  embed.in = spec.vocab();
  embed.out = scaled(spec.embedding(), spec.width_multiplier());
  embed.padding = spec.pad_id();
  embed.bias = false;
  embed.spatial = channels_first;
  return embed;
}

Step dropout_step(const std::string& name, double p) {
  Step s{StepKind::Dropout, name};
  s.p = p;
  return s;
}

// Hidden layers (Linear [+BN] + act [+dropout]) named fc1, fc2, ...; returns the last width.
int64_t add_hidden_layers(std::vector<Step>& steps, const ZooSpec& spec, int64_t features) {
  for (size_t i = 0; i < spec.hidden().size(); ++i) {
    std::string name = "fc" + std::to_string(i + 1);
    int64_t width = scaled(spec.hidden()[i], spec.width_multiplier());
    // A layer followed by batch norm has no bias: BN's shift makes it redundant (as in torchvision).
    steps.push_back(linear_step(name, features, width, !spec.batch_norm()));
    if (spec.batch_norm()) steps.push_back(batch_norm_step(name + "_bn", width, false));
    steps.push_back(activation_step(name + "_act", spec.activation()));
    if (spec.dropout() > 0) steps.push_back(dropout_step(name + "_drop", spec.dropout()));
    features = width;
  }
  return features;
}

Step residual_block(const std::string& name, int64_t in, int64_t out, int64_t stride,
                    const std::string& act) {
  Step block{StepKind::Block, name};
  block.op = act;
  block.body.push_back(conv_step("conv1", in, out, 3, stride, false));
  block.body.push_back(batch_norm_step("conv1_bn", out, true));
  block.body.push_back(activation_step("conv1_act", act));
  block.body.push_back(conv_step("conv2", out, out, 3, 1, false));
  block.body.push_back(batch_norm_step("conv2_bn", out, true));
  // Option B of He et al. 2016: a 1x1 projection where the shape changes, identity elsewhere.
  if (stride != 1 || in != out) {
    block.shortcut.push_back(conv_step("shortcut", in, out, 1, stride, false));
    block.shortcut.back().padding = 0;
    block.shortcut.push_back(batch_norm_step("shortcut_bn", out, true));
  }
  return block;
}

// Conv stages named conv1, conv2, ... (cnn: one conv a stage; vgg: `convs` convs named conv1_1,
// conv1_2, ...), each conv [+BN] + act, then 2x2 pooling; returns the last channel count.
int64_t add_conv_stages(std::vector<Step>& steps, const ZooSpec& spec, int64_t channels, int convs) {
  for (size_t i = 0; i < spec.channels().size(); ++i) {
    std::string stage = "conv" + std::to_string(i + 1);
    int64_t width = scaled(spec.channels()[i], spec.width_multiplier());
    for (int c = 1; c <= convs; ++c) {
      std::string name = convs == 1 ? stage : stage + "_" + std::to_string(c);
      steps.push_back(conv_step(name, channels, width, spec.kernel(), 1, !spec.batch_norm()));
      if (spec.batch_norm()) steps.push_back(batch_norm_step(name + "_bn", width, true));
      steps.push_back(activation_step(name + "_act", spec.activation()));
      channels = width;
    }
    Step pool{StepKind::Pool, stage + "_pool"};
    pool.op = spec.pool();
    steps.push_back(pool);
  }
  return channels;
}

// The tail of every convolutional family: global average pooling [+ dropout], the `hidden` head, a
// Linear head.
void add_pooled_head(std::vector<Step>& steps, const ZooSpec& spec, int64_t channels, int64_t outputs) {
  steps.push_back(Step{StepKind::GlobalPool, "gap"});
  if (spec.dropout() > 0) steps.push_back(dropout_step("gap_drop", spec.dropout()));
  int64_t features = add_hidden_layers(steps, spec, channels);
  steps.push_back(linear_step("head", features, outputs, true));
}

// ---- the families: one function each for the plan, one for the checks of its own keys -----------
// A plan function gets the input as the family takes it: [C, H, W] for image families (flat square
// input already viewed as [1, s, s] by a Reshape step), the input shape as given otherwise.

void mlp_plan(const ZooSpec& spec, const std::vector<int64_t>& input, int64_t outputs, std::vector<Step>& steps) {
  if (input.size() > 1) steps.push_back(Step{StepKind::Flatten, "flatten"});
  int64_t features = add_hidden_layers(steps, spec, element_count(input));
  steps.push_back(linear_step("head", features, outputs, true));
}

void linear_plan(const ZooSpec& spec, const std::vector<int64_t>& input, int64_t outputs, std::vector<Step>& steps) {
  if (input.size() > 1) steps.push_back(Step{StepKind::Flatten, "flatten"});
  if (spec.dropout() > 0) steps.push_back(dropout_step("input_drop", spec.dropout()));
  steps.push_back(linear_step("head", element_count(input), outputs, true));
}

void cnn_plan(const ZooSpec& spec, const std::vector<int64_t>& image, int64_t outputs, std::vector<Step>& steps) {
  add_pooled_head(steps, spec, add_conv_stages(steps, spec, image[0], 1), outputs);
}

void vgg_plan(const ZooSpec& spec, const std::vector<int64_t>& image, int64_t outputs, std::vector<Step>& steps) {
  add_pooled_head(steps, spec, add_conv_stages(steps, spec, image[0], 2), outputs);
}

void resnet_plan(const ZooSpec& spec, const std::vector<int64_t>& image, int64_t outputs, std::vector<Step>& steps) {
  int64_t width = scaled(spec.width(), spec.width_multiplier());
  int64_t blocks = (spec.depth() - 2) / 6;
  steps.push_back(conv_step("stem", image[0], width, 3, 1, false));
  steps.push_back(batch_norm_step("stem_bn", width, true));
  steps.push_back(activation_step("stem_act", spec.activation()));
  int64_t channels = width;
  for (int64_t stage = 1; stage <= 3; ++stage) {
    int64_t stage_width = width << (stage - 1);
    for (int64_t b = 0; b < blocks; ++b) {
      int64_t stride = stage > 1 && b == 0 ? 2 : 1;
      steps.push_back(residual_block(fmt::format("layer{}_{}", stage, b), channels, stage_width, stride,
                                     spec.activation()));
      channels = stage_width;
    }
  }
  add_pooled_head(steps, spec, channels, outputs);
}

void textcnn_plan(const ZooSpec& spec, const std::vector<int64_t>&, int64_t outputs, std::vector<Step>& steps) {
  Step embed = embedding_step(spec, /*channels_first=*/true);  // [E, L], for the convolutions
  steps.push_back(embed);
  if (spec.dropout() > 0) steps.push_back(dropout_step("embed_drop", spec.dropout()));
  int64_t channels = embed.out;
  for (size_t i = 0; i < spec.channels().size(); ++i) {
    std::string name = fmt::format("conv{}", i + 1);
    Step conv{StepKind::Conv1d, name};
    conv.in = channels;
    conv.out = scaled(spec.channels()[i], spec.width_multiplier());
    conv.kernel = spec.kernel();
    conv.padding = spec.kernel() / 2;
    steps.push_back(conv);
    steps.push_back(activation_step(name + "_act", spec.activation()));
    channels = conv.out;
  }
  steps.push_back(Step{StepKind::TimePool, "pool"});
  if (spec.dropout() > 0) steps.push_back(dropout_step("pool_drop", spec.dropout()));
  int64_t features = add_hidden_layers(steps, spec, channels);
  steps.push_back(linear_step("head", features, outputs, true));
}

void transformer_plan(const ZooSpec& spec, const std::vector<int64_t>& input, int64_t outputs, std::vector<Step>& steps) {
  Step embed = embedding_step(spec, /*channels_first=*/false);
  int64_t width = embed.out;
  steps.push_back(embed);
  Step positions{StepKind::Positions, "positions"};
  positions.in = input[0];
  positions.out = width;
  steps.push_back(positions);
  if (spec.dropout() > 0) steps.push_back(dropout_step("embed_drop", spec.dropout()));
  for (int64_t i = 1; i <= spec.layers(); ++i) {
    Step layer{StepKind::Encoder, fmt::format("layer{}", i)};
    layer.in = layer.out = width;
    layer.heads = spec.heads();
    layer.ff = spec.ff() > 0 ? scaled(spec.ff(), spec.width_multiplier()) : 4 * width;
    layer.op = spec.activation();
    layer.spatial = spec.norm() == "pre";
    layer.p = spec.dropout();
    steps.push_back(layer);
  }
  if (spec.norm() == "pre") {
    Step norm{StepKind::LayerNorm, "norm"};
    norm.out = width;
    steps.push_back(norm);
  }
  Step pool{StepKind::SeqPool, "pool"};
  pool.op = spec.pooling();
  steps.push_back(pool);
  if (spec.dropout() > 0) steps.push_back(dropout_step("pool_drop", spec.dropout()));
  int64_t features = add_hidden_layers(steps, spec, width);
  steps.push_back(linear_step("head", features, outputs, true));
}

void bigru_plan(const ZooSpec& spec, const std::vector<int64_t>&, int64_t outputs, std::vector<Step>& steps) {
  Step embed = embedding_step(spec, /*channels_first=*/false);
  steps.push_back(embed);
  if (spec.dropout() > 0) steps.push_back(dropout_step("embed_drop", spec.dropout()));
  int64_t features = embed.out;
  for (size_t i = 0; i < spec.channels().size(); ++i) {
    Step gru{StepKind::Recurrent, fmt::format("gru{}", i + 1)};
    gru.in = features;
    gru.out = scaled(spec.channels()[i], spec.width_multiplier());
    steps.push_back(gru);
    if (spec.dropout() > 0) steps.push_back(dropout_step(gru.name + "_drop", spec.dropout()));
    features = 2 * gru.out;
  }
  Step pool{StepKind::SeqPool, "pool"};
  pool.op = spec.pooling();
  steps.push_back(pool);
  features = add_hidden_layers(steps, spec, features);
  steps.push_back(linear_step("head", features, outputs, true));
}

void no_checks(const ZooSpec&, const std::vector<int64_t>&, const std::string&) {}

// cnn and vgg: at least one stage, an odd kernel, and an image that each stage can halve.
void check_conv_stages(const ZooSpec& spec, const std::vector<int64_t>& image, const std::string& field) {
  if (spec.channels().empty()) {
    fail("{}.channels: arch {} needs at least one stage, e.g. [32, 64]", field, spec.arch());
  }
  if (spec.kernel() < 1 || spec.kernel() % 2 == 0) {
    fail("{}.kernel: must be an odd size >= 1 (so that same padding keeps the image size), got {}", field,
         spec.kernel());
  }
  int64_t h = image[1], w = image[2];
  for (size_t stage = 0; stage < spec.channels().size(); ++stage) {
    if (h < 2 || w < 2) {
      fail(
          "{}.channels: each of the {} stages halves the image, but a {}x{} input is down to {}x{} before "
          "stage {}; use at most {} stages or a larger input",
          field, spec.channels().size(), image[1], image[2], h, w, stage + 1, stage);
    }
    h /= 2;
    w /= 2;
  }
}

// Token ids from text data, for textcnn and transformer alike.
void check_token_input(const ZooSpec& spec, const std::vector<int64_t>& input, const std::string& field) {
  if (spec.vocab() < 2) {
    fail("{}.arch: {} reads token ids; use it with data.format: text (which sets the vocabulary)", field, spec.arch());
  }
  if (input.size() != 1) fail("{}.arch: {} reads token ids [length], got input {}", field, spec.arch(), shape_text(input));
  if (spec.pad_id() < 0 || spec.pad_id() >= spec.vocab()) {
    fail("{}.pad_id: {} is not an id of the {} tokens", field, spec.pad_id(), spec.vocab());
  }
  if (spec.embedding() < 1) fail("{}.embedding: must be positive, got {}", field, spec.embedding());
}

// textcnn: token ids [L] from data.format: text, at least one stage, an odd kernel.
void check_textcnn(const ZooSpec& spec, const std::vector<int64_t>& input, const std::string& field) {
  check_token_input(spec, input, field);
  if (spec.channels().empty()) fail("{}.channels: arch textcnn needs at least one stage, e.g. [128]", field);
  if (spec.kernel() < 1 || spec.kernel() % 2 == 0) {
    fail("{}.kernel: must be an odd size >= 1 (so that same padding keeps the length), got {}", field, spec.kernel());
  }
}

void check_transformer(const ZooSpec& spec, const std::vector<int64_t>& input, const std::string& field) {
  check_token_input(spec, input, field);
  if (spec.layers() < 1) fail("{}.layers: a transformer needs at least 1 layer, got {}", field, spec.layers());
  int64_t width = scaled(spec.embedding(), spec.width_multiplier());
  if (spec.heads() < 1 || width % spec.heads() != 0) {
    fail("{}.heads: {} heads do not divide the width {} (embedding x width_multiplier)", field, spec.heads(), width);
  }
  if (spec.ff() < 0) fail("{}.ff: must be positive (or 0 for 4 x embedding), got {}", field, spec.ff());
  check_name(field + ".norm", "norm placement", spec.norm(), {"pre", "post"});
  check_name(field + ".pooling", "pooling", spec.pooling(), {"mean", "first"});
}

void check_bigru(const ZooSpec& spec, const std::vector<int64_t>& input, const std::string& field) {
  check_token_input(spec, input, field);
  if (spec.channels().empty()) fail("{}.channels: arch bigru needs at least one stage (units a direction), e.g. [64]", field);
  check_name(field + ".pooling", "pooling", spec.pooling(), {"mean", "max"});
}

void check_resnet(const ZooSpec& spec, const std::vector<int64_t>&, const std::string& field) {
  if (spec.depth() < 8 || (spec.depth() - 2) % 6 != 0) {
    int64_t n = std::max<int64_t>(1, std::llround((spec.depth() - 2) / 6.0));
    fail(
        "{}.depth: a CIFAR ResNet has depth 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got {}; did you mean "
        "{}?",
        field, spec.depth(), 6 * n + 2);
  }
  if (spec.width() <= 0) fail("{}.width: must be positive, got {}", field, spec.width());
}

// A family: its public description, the checks of its own keys and its plan.
struct Family {
  ZooArch arch;
  void (*check)(const ZooSpec& spec, const std::vector<int64_t>& input, const std::string& field);
  void (*plan)(const ZooSpec& spec, const std::vector<int64_t>& input, int64_t outputs, std::vector<Step>& steps);
};

// The zoo: one line a family (docs/models.md describes each).
const std::vector<Family>& families() {
  static const std::vector<Family> table = {
      {{"mlp", "Linear [+BN] + act per hidden size, then a Linear head", false, {"hidden", "batch_norm"}, "hidden"},
       no_checks, mlp_plan},
      {{"cnn", "per stage conv [+BN] + act + 2x2 pool; global pool; head", true,
        {"hidden", "batch_norm", "channels", "kernel", "pool"}, "channels"},
       check_conv_stages, cnn_plan},
      {{"vgg", "per stage two convs [+BN] + act, then 2x2 pool; global pool; head", true,
        {"hidden", "batch_norm", "channels", "kernel", "pool"}, "channels"},
       check_conv_stages, vgg_plan},
      {{"resnet", "CIFAR ResNet, depth 6n+2, basic blocks, option B shortcuts", true,
        {"hidden", "batch_norm", "depth", "width"}, ""},
       check_resnet, resnet_plan},
      {{"linear", "one Linear layer on the flattened input", false, {}, ""}, no_checks, linear_plan},
      {{"textcnn", "token embedding; per stage conv1d + act; max over the tokens; head", false,
        {"hidden", "channels", "kernel", "embedding"}, "channels", true},
       check_textcnn, textcnn_plan},
      {{"transformer", "token embedding + positions; encoder layers (self-attention, feed-forward); pooled; head",
        false, {"hidden", "embedding", "layers", "heads", "ff", "norm", "pooling"}, "", true},
       check_transformer, transformer_plan},
      {{"bigru", "token embedding; per stage a bidirectional GRU; mean or max over the tokens; head", false,
        {"hidden", "channels", "embedding", "pooling"}, "channels", true},
       check_bigru, bigru_plan},
  };
  return table;
}

const Family* find_family(const std::string& name) {
  for (const Family& f : families()) {
    if (f.arch.name == name) return &f;
  }
  return nullptr;
}

// The input as the family takes it: image families view a flat square input as [1, s, s].
std::vector<int64_t> family_input(const Family& family, const std::vector<int64_t>& input_shape) {
  if (!family.arch.image || input_shape.size() == 3) return input_shape;
  int64_t side = square_side(input_shape[0]);
  return {1, side, side};
}

std::vector<Step> make_plan(const ZooSpec& spec, const std::vector<int64_t>& input_shape, int64_t outputs) {
  const Family* family = find_family(spec.arch());
  KD_CHECK(family, "make_plan: unchecked arch {}", spec.arch());
  std::vector<Step> steps;
  std::vector<int64_t> input = family_input(*family, input_shape);
  if (input != input_shape) {
    Step s{StepKind::Reshape, "reshape"};
    s.shape = input;
    steps.push_back(s);
  }
  family->plan(spec, input, outputs, steps);
  return steps;
}

// ---- modules and forward -------------------------------------------------------------------------

void build_modules(torch::nn::Module& parent, std::vector<Step>& steps) {
  for (Step& s : steps) {
    switch (s.kind) {
      case StepKind::Linear:
        s.linear = parent.register_module(
            s.name, torch::nn::Linear(torch::nn::LinearOptions(s.in, s.out).bias(s.bias)));
        break;
      case StepKind::Conv:
        s.conv =
            parent.register_module(s.name, torch::nn::Conv2d(torch::nn::Conv2dOptions(s.in, s.out, s.kernel)
                                                                 .stride(s.stride)
                                                                 .padding(s.padding)
                                                                 .bias(s.bias)));
        break;
      case StepKind::BatchNorm: {
        auto options = torch::nn::BatchNormOptions(s.out).momentum(kBatchNormMomentum).eps(kBatchNormEps);
        if (s.spatial) {
          s.bn2d = parent.register_module(s.name, torch::nn::BatchNorm2d(options));
        } else {
          s.bn1d = parent.register_module(s.name, torch::nn::BatchNorm1d(options));
        }
        break;
      }
      case StepKind::Embedding:
        s.embedding = parent.register_module(
            s.name, torch::nn::Embedding(torch::nn::EmbeddingOptions(s.in, s.out).padding_idx(s.padding)));
        break;
      case StepKind::Positions:
        s.positions = parent.register_module(s.name, torch::nn::Embedding(s.in, s.out));
        {
          torch::NoGradGuard no_grad;
          s.positions->weight.normal_(0.0, 0.02);  // BERT's initialisation
        }
        break;
      case StepKind::LayerNorm:
        s.norm1 = parent.register_module(s.name, torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.out}).eps(kZooLayerNormEps)));
        break;
      case StepKind::Encoder: {
        auto layer = std::make_shared<torch::nn::Module>("EncoderLayer");
        auto norm = [&](const char* name) {
          return layer->register_module(name, torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.out}).eps(kZooLayerNormEps)));
        };
        s.attn_in = layer->register_module("attn_in", torch::nn::Linear(s.out, 3 * s.out));
        s.attn_out = layer->register_module("attn_out", torch::nn::Linear(s.out, s.out));
        s.norm1 = norm("norm1");
        s.ff1 = layer->register_module("ff1", torch::nn::Linear(s.out, s.ff));
        s.ff2 = layer->register_module("ff2", torch::nn::Linear(s.ff, s.out));
        s.norm2 = norm("norm2");
        parent.register_module(s.name, layer);
        break;
      }
      case StepKind::Recurrent:
        s.gru = parent.register_module(
            s.name, torch::nn::GRU(torch::nn::GRUOptions(s.in, s.out).bidirectional(true).batch_first(true)));
        break;
      case StepKind::Conv1d:
        s.conv1d = parent.register_module(
            s.name, torch::nn::Conv1d(torch::nn::Conv1dOptions(s.in, s.out, s.kernel).padding(s.padding).bias(s.bias)));
        break;
      case StepKind::Block: {
        auto block = std::make_shared<torch::nn::Module>("ResidualBlock");
        build_modules(*block, s.body);
        build_modules(*block, s.shortcut);
        parent.register_module(s.name, block);
        break;
      }
      default:
        break;
    }
  }
}

bool relu_before_max_pool(const Step& activation, const Step* next) {
  return activation.op == "relu" && next && next->kind == StepKind::Pool && next->op == "max";
}

// The dense layers of a plain MLP plan (an optional flatten, then linear, activation, ..., linear: no
// batch norm, no dropout while training) for dense_chain, and its activation; no layers for any other plan.
std::vector<DenseLayer> plain_dense_layers(const std::vector<Step>& steps, bool training, std::string& activation) {
  std::vector<DenseLayer> layers;
  size_t activations = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& s = steps[i];
    bool expected = true;
    switch (s.kind) {
      case StepKind::Flatten:
        expected = i == 0;
        break;
      case StepKind::Linear:
        layers.push_back({s.linear->weight, s.bias ? s.linear->bias : torch::Tensor()});
        break;
      case StepKind::Activation:
        expected = !layers.empty() && (activation.empty() || activation == s.op);
        activation = s.op;
        ++activations;
        break;
      case StepKind::Dropout:
        expected = !training;
        break;
      default:
        expected = false;
    }
    if (!expected) return {};
  }
  // Linear and activation alternate, ending on a linear layer.
  if (layers.empty() || steps.back().kind != StepKind::Linear || activations + 1 != layers.size()) return {};
  return layers;
}

// Tensors asked for by name (zoo layer names, a Block's inner steps as "block.step"), filled as they
// are computed; null when none are asked for.
using TapMap = std::map<std::string, torch::Tensor>;

bool tapped(const TapMap* taps, const std::string& name) { return taps && taps->count(name); }

// One transformer encoder layer on x [N, L, D]; `tokens` [N, L] masks padding out of the attention.
// `attention`, when given, receives the attention probabilities [N, heads, L, L].
torch::Tensor encoder_layer(Step& s, torch::Tensor x, const torch::Tensor& tokens, bool training,
                            torch::Tensor* attention) {
  int64_t n = x.size(0), length = x.size(1), width = s.out, head = width / s.heads;
  auto self_attention = [&](const torch::Tensor& h) {
    auto qkv = s.attn_in(h).chunk(3, -1);
    auto split = [&](const torch::Tensor& t) { return t.reshape({n, length, s.heads, head}).transpose(1, 2); };
    torch::Tensor scores = torch::matmul(split(qkv[0]), split(qkv[1]).transpose(-2, -1)) / std::sqrt(static_cast<double>(head));
    scores = scores.masked_fill(tokens.logical_not().unsqueeze(1).unsqueeze(2), -std::numeric_limits<float>::infinity());
    torch::Tensor probabilities = torch::softmax(scores, -1);
    if (attention) *attention = probabilities;
    torch::Tensor context = torch::matmul(probabilities, split(qkv[2])).transpose(1, 2).reshape({n, length, width});
    return torch::dropout(s.attn_out(context), s.p, training);
  };
  auto feed_forward = [&](const torch::Tensor& h) {
    return torch::dropout(s.ff2(activate(s.op, s.ff1(h), kLeakyReluSlope)), s.p, training);
  };
  if (s.spatial) {  // pre-norm
    x = x + self_attention(s.norm1(x));
    return x + feed_forward(s.norm2(x));
  }
  x = s.norm1(x + self_attention(x));
  return s.norm2(x + feed_forward(x));
}

// Where each position of a text reads from when the text's tokens are reversed in place: the first
// `length` positions reversed, the padding after them kept ([N, L], for gather along dim 1).
torch::Tensor reversed_positions(const torch::Tensor& tokens) {
  torch::Tensor lengths = tokens.sum(1, /*keepdim=*/true);
  torch::Tensor positions = torch::arange(tokens.size(1), lengths.options()).unsqueeze(0);
  return torch::where(positions < lengths, lengths - 1 - positions, positions);
}

// A bidirectional GRU on x [N, L, in] whose texts end in padding: the forward direction runs as
// torch.nn.GRU does; the backward one on each text's tokens reversed in place, so that it starts at the
// text's last token rather than in its padding. [N, L, 2 out]; what it holds at padding positions is
// not read (pooling leaves them out).
torch::Tensor bigru_layer(Step& s, const torch::Tensor& x, const torch::Tensor& tokens, bool training) {
  torch::Tensor order = reversed_positions(tokens).unsqueeze(2);
  auto flip = [&](const torch::Tensor& t) { return t.gather(1, order.expand({-1, -1, t.size(2)})); };
  torch::Tensor h0 = torch::zeros({1, x.size(0), s.out}, x.options());
  const auto& p = s.gru->named_parameters(/*recurse=*/false);
  auto direction = [&](const torch::Tensor& input, const std::string& suffix) {
    std::vector<torch::Tensor> params = {p["weight_ih_l0" + suffix], p["weight_hh_l0" + suffix],
                                         p["bias_ih_l0" + suffix], p["bias_hh_l0" + suffix]};
    return std::get<0>(torch::gru(input, h0, params, /*has_biases=*/true, /*num_layers=*/1, /*dropout=*/0.0, training,
                                  /*bidirectional=*/false, /*batch_first=*/true));
  };
  return torch::cat({direction(x, ""), flip(direction(flip(x), "_reverse"))}, 2);
}

torch::Tensor run(std::vector<Step>& steps, torch::Tensor x, bool training, const std::string& prefix = "",
                  TapMap* taps = nullptr) {
  std::string activation;
  auto dense = taps ? std::vector<DenseLayer>() : plain_dense_layers(steps, training, activation);
  if (!dense.empty()) {
    if (steps.front().kind == StepKind::Flatten) x = x.flatten(1);
    return dense_chain(x, dense, activation.empty() ? "relu" : activation, kLeakyReluSlope);
  }
  auto keep = [&](const Step& s) {
    if (tapped(taps, prefix + s.name)) (*taps)[prefix + s.name] = x;
  };
  torch::Tensor tokens;  // bool [N, L]: the positions holding a token, not padding (text families)
  for (size_t i = 0; i < steps.size(); ++i) {
    Step& s = steps[i];
    // With taps, every step runs on its own: libtorch's ops, whose intermediate tensors are the taps.
    if (!taps && s.kind == StepKind::BatchNorm && s.spatial && i + 2 < steps.size() &&
        steps[i + 1].kind == StepKind::Activation && relu_before_max_pool(steps[i + 1], &steps[i + 2])) {
      x = batch_norm_relu_max_pool2x2(x, s.bn2d);
      i += 2;
      continue;
    }
    if (!taps && s.kind == StepKind::Activation && relu_before_max_pool(s, i + 1 < steps.size() ? &steps[i + 1] : nullptr)) {
      x = relu_max_pool2x2(x);
      ++i;
      continue;
    }
    switch (s.kind) {
      case StepKind::Flatten:
        x = x.flatten(1);
        break;
      case StepKind::Reshape: {
        std::vector<int64_t> shape = {-1};
        shape.insert(shape.end(), s.shape.begin(), s.shape.end());
        x = x.reshape(shape);
        break;
      }
      case StepKind::Linear:
        x = linear(x, s.linear->weight, s.linear->bias);
        break;
      case StepKind::Conv:
        x = s.conv(to_channels_last(x));  // ops after it keep the layout
        break;
      case StepKind::BatchNorm:
        x = s.spatial ? s.bn2d(x) : s.bn1d(x);
        break;
      case StepKind::Activation:
        x = activate(s.op, x, kLeakyReluSlope);
        break;
      case StepKind::Dropout:
        x = torch::dropout(x, s.p, training);
        break;
      case StepKind::Pool:
        x = s.op == "max" ? torch::max_pool2d(x, {2, 2}, {2, 2}) : torch::avg_pool2d(x, {2, 2}, {2, 2});
        break;
      case StepKind::GlobalPool:
        x = x.mean({2, 3});
        break;
      case StepKind::Embedding: {
        torch::Tensor ids = x.to(torch::kLong);
        tokens = ids.ne(s.padding);
        x = s.embedding(ids);
        if (s.spatial) x = x.transpose(1, 2).contiguous();
        break;
      }
      case StepKind::Positions:
        x = x + s.positions->weight;
        break;
      case StepKind::LayerNorm:
        x = s.norm1(x);
        break;
      case StepKind::Encoder:
        x = encoder_layer(s, x, tokens, training, tapped(taps, prefix + s.name + ".attention") ? &(*taps)[prefix + s.name + ".attention"] : nullptr);
        break;
      case StepKind::Recurrent:
        x = bigru_layer(s, x, tokens, training);
        break;
      case StepKind::SeqPool:
        if (s.op == "first") {
          x = x.select(1, 0);
        } else if (s.op == "max") {
          x = x.masked_fill(tokens.logical_not().unsqueeze(2), -std::numeric_limits<float>::infinity()).amax(1);
        } else {
          torch::Tensor weight = tokens.unsqueeze(2).to(x.scalar_type());
          x = (x * weight).sum(1) / weight.sum(1).clamp_min(1);
        }
        break;
      case StepKind::Conv1d:
        x = s.conv1d(x);
        break;
      case StepKind::TimePool:
        x = x.masked_fill(tokens.logical_not().unsqueeze(1), -std::numeric_limits<float>::infinity()).amax(2);
        break;
      case StepKind::Block: {
        std::string inner = prefix + s.name + ".";
        torch::Tensor y = run(s.body, x, training, inner, taps);
        torch::Tensor shortcut = s.shortcut.empty() ? x : run(s.shortcut, x, training, inner, taps);
        x = activate(s.op, y + shortcut, kLeakyReluSlope);
        break;
      }
    }
    keep(s);
  }
  return x;
}

// ---- summary -------------------------------------------------------------------------------------

struct Row {
  std::string name, kind;
  std::vector<int64_t> shape;
  int64_t params = 0, macs = 0;
};

std::string activation_kind(const std::string& name) {
  static const std::map<std::string, std::string> kinds = {
      {"relu", "ReLU"}, {"gelu", "GELU"}, {"tanh", "Tanh"}, {"leaky_relu", "LeakyReLU"}, {"silu", "SiLU"}};
  return kinds.at(name);
}

std::vector<int64_t> infer(const std::vector<Step>& steps, std::vector<int64_t> shape,
                           const std::string& prefix, std::vector<Row>& rows) {
  for (const Step& s : steps) {
    Row row;
    row.name = prefix + s.name;
    auto need = [&](bool ok, const std::string& expected) {
      if (!ok) fail("summary: layer {} expects input {}, got {}", row.name, expected, shape_text(shape));
    };
    switch (s.kind) {
      case StepKind::Flatten:
        row.kind = "Flatten";
        shape = {element_count(shape)};
        break;
      case StepKind::Reshape:
        row.kind = "Reshape";
        need(element_count(shape) == element_count(s.shape), fmt::format("of {} features", element_count(s.shape)));
        shape = s.shape;
        break;
      case StepKind::Linear:
        row.kind = "Linear";
        need(shape.size() == 1 && shape[0] == s.in, fmt::format("[{}]", s.in));
        shape = {s.out};
        row.params = s.in * s.out + (s.bias ? s.out : 0);
        row.macs = s.in * s.out;
        break;
      case StepKind::Conv: {
        row.kind = "Conv2d";
        need(shape.size() == 3 && shape[0] == s.in, fmt::format("[{}, H, W]", s.in));
        int64_t h = (shape[1] + 2 * s.padding - s.kernel) / s.stride + 1;
        int64_t w = (shape[2] + 2 * s.padding - s.kernel) / s.stride + 1;
        need(h >= 1 && w >= 1, fmt::format("of at least {}x{} pixels", s.kernel, s.kernel));
        shape = {s.out, h, w};
        row.params = s.kernel * s.kernel * s.in * s.out + (s.bias ? s.out : 0);
        row.macs = s.kernel * s.kernel * s.in * s.out * h * w;
        break;
      }
      case StepKind::BatchNorm:
        row.kind = s.spatial ? "BatchNorm2d" : "BatchNorm1d";
        row.params = 2 * s.out;
        break;
      case StepKind::Activation:
        row.kind = activation_kind(s.op);
        break;
      case StepKind::Dropout:
        row.kind = "Dropout";
        break;
      case StepKind::Pool:
        row.kind = s.op == "max" ? "MaxPool2d" : "AvgPool2d";
        need(shape.size() == 3 && shape[1] >= 2 && shape[2] >= 2, "of at least 2x2 pixels");
        shape = {shape[0], shape[1] / 2, shape[2] / 2};
        break;
      case StepKind::GlobalPool:
        row.kind = "GlobalAvgPool";
        need(shape.size() == 3, "[C, H, W]");
        shape = {shape[0]};
        break;
      case StepKind::Embedding:
        row.kind = "Embedding";
        need(shape.size() == 1, "token ids [L]");
        shape = s.spatial ? std::vector<int64_t>{s.out, shape[0]} : std::vector<int64_t>{shape[0], s.out};
        row.params = s.in * s.out;
        break;
      case StepKind::Positions:
        row.kind = "Positions";
        need(shape.size() == 2 && shape[0] == s.in && shape[1] == s.out, fmt::format("[{}, {}]", s.in, s.out));
        row.params = s.in * s.out;
        break;
      case StepKind::LayerNorm:
        row.kind = "LayerNorm";
        need(!shape.empty() && shape.back() == s.out, fmt::format("[..., {}]", s.out));
        row.params = 2 * s.out;
        break;
      case StepKind::Encoder: {
        // The attention probabilities are a tap of their own: TinyBERT-style attention transfer.
        rows.push_back(Row{row.name + ".attention", "Attention", {s.heads, shape.empty() ? 0 : shape[0], shape.empty() ? 0 : shape[0]}, 0, 0});
        row.kind = "EncoderLayer";
        need(shape.size() == 2 && shape[1] == s.out, fmt::format("[L, {}]", s.out));
        int64_t d = s.out, length = shape[0];
        row.params = (3 * d * d + 3 * d) + (d * d + d) + (d * s.ff + s.ff) + (s.ff * d + d) + 4 * d;
        row.macs = length * (4 * d * d + 2 * d * s.ff) + 2 * length * length * d;  // projections; scores and context
        break;
      }
      case StepKind::Recurrent: {
        row.kind = "BiGRU";
        need(shape.size() == 2 && shape[1] == s.in, fmt::format("[L, {}]", s.in));
        int64_t gates = 3 * s.out;
        row.params = 2 * (gates * s.in + gates * s.out + 2 * gates);
        row.macs = 2 * shape[0] * gates * (s.in + s.out);  // both directions, every position
        shape = {shape[0], 2 * s.out};
        break;
      }
      case StepKind::SeqPool:
        row.kind = s.op == "first" ? "FirstToken" : s.op == "max" ? "MaxOverTokens" : "MeanOverTokens";
        need(shape.size() == 2, "[L, D]");
        shape = {shape[1]};
        break;
      case StepKind::Conv1d:
        row.kind = "Conv1d";
        need(shape.size() == 2 && shape[0] == s.in, fmt::format("[{}, L]", s.in));
        shape = {s.out, shape[1] + 2 * s.padding - s.kernel + 1};
        row.params = s.kernel * s.in * s.out + (s.bias ? s.out : 0);
        row.macs = s.kernel * s.in * s.out * shape[1];
        break;
      case StepKind::TimePool:
        row.kind = "MaxOverTokens";
        need(shape.size() == 2, "[C, L]");
        shape = {shape[0]};
        break;
      case StepKind::Block: {
        std::vector<int64_t> main = infer(s.body, shape, row.name + ".", rows);
        std::vector<int64_t> side =
            s.shortcut.empty() ? shape : infer(s.shortcut, shape, row.name + ".", rows);
        KD_CHECK(main == side, "block {}: {} vs {}", row.name, shape_text(main), shape_text(side));
        row.kind = "Add+" + activation_kind(s.op);
        shape = main;
        break;
      }
    }
    row.shape = shape;
    rows.push_back(row);
  }
  return shape;
}

// ---- TorchScript source --------------------------------------------------------------------------

std::string activation_source(const std::string& name, const std::string& x) {
  if (name == "leaky_relu") return fmt::format("torch.leaky_relu({}, {})", x, kLeakyReluSlope);
  return fmt::format("torch.{}({})", name, x);
}

void emit(const std::vector<Step>& steps, const std::string& x, const std::string& prefix, std::string& out) {
  auto attr = [&](const Step& s, const std::string& tensor) {
    return "self." + torchscript_attribute_name(prefix + s.name + "." + tensor);
  };
  for (const Step& s : steps) {
    switch (s.kind) {
      case StepKind::Flatten:
        out += fmt::format("    {0} = torch.flatten({0}, 1)\n", x);
        break;
      case StepKind::Reshape:
        out += fmt::format("    {0} = torch.reshape({0}, [-1, {1}, {2}, {3}])\n", x, s.shape[0], s.shape[1],
                           s.shape[2]);
        break;
      case StepKind::Linear:
        if (s.bias) {
          out += fmt::format("    {0} = torch.addmm({1}, {0}, {2}.t())\n", x, attr(s, "bias"),
                             attr(s, "weight"));
        } else {
          out += fmt::format("    {0} = torch.mm({0}, {1}.t())\n", x, attr(s, "weight"));
        }
        break;
      case StepKind::Conv:
        out += fmt::format("    {0} = torch.conv2d({0}, {1}, {2}, [{3}, {3}], [{4}, {4}])\n", x,
                           attr(s, "weight"), s.bias ? attr(s, "bias") : "None", s.stride, s.padding);
        break;
      case StepKind::BatchNorm:
        // PyTorch's BatchNorm counts batches in training; kept so a trained file round-trips exactly.
        out += fmt::format("    if self.training:\n        {}.add_(1)\n", attr(s, "num_batches_tracked"));
        out += fmt::format(
            "    {0} = torch.batch_norm({0}, {1}, {2}, {3}, {4}, self.training, {5}, {6}, False)\n", x,
            attr(s, "weight"), attr(s, "bias"), attr(s, "running_mean"), attr(s, "running_var"),
            kBatchNormMomentum, kBatchNormEps);
        break;
      case StepKind::Activation:
        out += fmt::format("    {} = {}\n", x, activation_source(s.op, x));
        break;
      case StepKind::Dropout:
        out += fmt::format("    {0} = torch.dropout({0}, {1}, self.training)\n", x, s.p);
        break;
      case StepKind::Pool:
        out += fmt::format("    {0} = torch.{1}_pool2d({0}, [2, 2], [2, 2])\n", x, s.op);
        break;
      case StepKind::GlobalPool:
        out += fmt::format("    {0} = torch.mean({0}, [2, 3])\n", x);
        break;
      case StepKind::Embedding:
        out += fmt::format("    tokens = torch.ne({0}, {1})\n", x, s.padding);
        out += fmt::format("    {0} = torch.embedding({1}, {0}.long(), {2}){3}\n", x, attr(s, "weight"), s.padding,
                           s.spatial ? ".transpose(1, 2)" : "");
        break;
      case StepKind::Positions:
        out += fmt::format("    {0} = {0} + {1}\n", x, attr(s, "weight"));
        break;
      case StepKind::LayerNorm:
        out += fmt::format("    {0} = torch.layer_norm({0}, [{1}], {2}, {3}, {4})\n", x, s.out, attr(s, "weight"),
                           attr(s, "bias"), kZooLayerNormEps);
        break;
      case StepKind::Encoder: {
        auto sub = [&](const std::string& tensor) { return attr(s, tensor); };
        auto linear = [&](const std::string& layer, const std::string& in) {
          return fmt::format("torch.matmul({}, {}.t()) + {}", in, sub(layer + ".weight"), sub(layer + ".bias"));
        };
        auto norm = [&](const std::string& layer, const std::string& in) {
          return fmt::format("torch.layer_norm({}, [{}], {}, {}, {})", in, s.out, sub(layer + ".weight"),
                             sub(layer + ".bias"), kZooLayerNormEps);
        };
        int64_t head = s.out / s.heads;
        out += fmt::format("    n, l = {0}.size(0), {0}.size(1)\n", x);
        out += fmt::format("    h = {}\n", s.spatial ? norm("norm1", x) : x);
        out += fmt::format("    q, k, v = ({}).chunk(3, -1)\n", linear("attn_in", "h"));
        for (const char* t : {"q", "k", "v"}) {
          out += fmt::format("    {0} = {0}.reshape(n, l, {1}, {2}).transpose(1, 2)\n", t, s.heads, head);
        }
        out += fmt::format("    a = torch.matmul(q, k.transpose(-2, -1)) / {}\n", std::sqrt(static_cast<double>(head)));
        out += "    a = torch.softmax(a.masked_fill(torch.logical_not(tokens).unsqueeze(1).unsqueeze(2), float(\"-inf\")), -1)\n";
        out += fmt::format("    c = torch.matmul(a, v).transpose(1, 2).reshape(n, l, {})\n", s.out);
        // Dropout only when there is any: a probability 0 would print as the int 0, which torch.dropout refuses.
        auto dropout = [&](const std::string& in) {
          return s.p > 0 ? fmt::format("torch.dropout({}, {}, self.training)", in, s.p) : in;
        };
        out += fmt::format("    c = {}\n", dropout(linear("attn_out", "c")));
        out += s.spatial ? fmt::format("    {0} = {0} + c\n    h = {1}\n", x, norm("norm2", x))
                         : fmt::format("    {0} = {1}\n    h = {0}\n", x, norm("norm1", x + " + c"));
        out += fmt::format("    h = {}\n", activation_source(s.op, linear("ff1", "h")));
        out += fmt::format("    h = {}\n", dropout(linear("ff2", "h")));
        out += s.spatial ? fmt::format("    {0} = {0} + h\n", x) : fmt::format("    {0} = {1}\n", x, norm("norm2", x + " + h"));
        break;
      }
      case StepKind::Recurrent: {
        // As bigru_layer: the backward direction on each text's tokens reversed in place.
        auto params = [&](const std::string& suffix) {
          std::vector<std::string> names;
          for (const char* w : {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}) names.push_back(attr(s, w + suffix));
          return "[" + join(names, ", ") + "]";
        };
        out += "    lengths = tokens.sum(1, keepdim=True)\n";
        out += "    positions = torch.arange(tokens.size(1)).unsqueeze(0)\n";
        out += "    order = torch.where(positions < lengths, lengths - 1 - positions, positions).unsqueeze(2)\n";
        out += fmt::format("    h0 = torch.zeros(1, {}.size(0), {}, dtype={}.dtype)\n", x, s.out, x);
        out += fmt::format("    f = torch.gru({}, h0, {}, True, 1, 0.0, self.training, False, True)[0]\n", x, params(""));
        out += fmt::format("    r = torch.gather({0}, 1, order.expand(-1, -1, {0}.size(2)))\n", x);
        out += fmt::format("    r = torch.gru(r, h0, {}, True, 1, 0.0, self.training, False, True)[0]\n", params("_reverse"));
        out += fmt::format("    {} = torch.cat([f, torch.gather(r, 1, order.expand(-1, -1, {}))], 2)\n", x, s.out);
        break;
      }
      case StepKind::SeqPool:
        if (s.op == "first") {
          out += fmt::format("    {0} = {0}.select(1, 0)\n", x);
        } else if (s.op == "max") {
          out += fmt::format("    {0} = torch.amax(torch.masked_fill({0}, torch.logical_not(tokens).unsqueeze(2), "
                             "float(\"-inf\")), [1])\n", x);
        } else {
          out += fmt::format("    w = tokens.unsqueeze(2).to({}.dtype)\n", x);
          out += fmt::format("    {0} = ({0} * w).sum(1) / w.sum(1).clamp_min(1.0)\n", x);
        }
        break;
      case StepKind::Conv1d:
        out += fmt::format("    {0} = torch.conv1d({0}, {1}, {2}, [1], [{3}])\n", x, attr(s, "weight"),
                           s.bias ? attr(s, "bias") : "None", s.padding);
        break;
      case StepKind::TimePool:
        out += fmt::format("    {0} = torch.amax(torch.masked_fill({0}, torch.logical_not(tokens).unsqueeze(1), "
                           "float(\"-inf\")), [2])\n", x);
        break;
      case StepKind::Block: {
        out += fmt::format("    y = {}\n", x);
        emit(s.body, "y", prefix + s.name + ".", out);
        std::string side = x;
        if (!s.shortcut.empty()) {
          out += fmt::format("    s = {}\n", x);
          emit(s.shortcut, "s", prefix + s.name + ".", out);
          side = "s";
        }
        out += fmt::format("    {} = {}\n", x, activation_source(s.op, "y + " + side));
        break;
      }
    }
  }
}

// ---- the public plan -----------------------------------------------------------------------------

std::vector<ZooStep> public_plan(const std::vector<Step>& steps) {
  std::vector<ZooStep> plan;
  for (const Step& s : steps) {
    ZooStep z;
    z.kind = s.kind;
    z.name = s.name;
    z.in = s.in;
    z.out = s.out;
    z.kernel = s.kernel;
    z.stride = s.stride;
    z.padding = s.padding;
    z.bias = s.bias;
    z.spatial = s.spatial;
    z.shape = s.shape;
    z.op = s.op;
    z.p = s.p;
    z.heads = s.heads;
    z.ff = s.ff;
    z.body = public_plan(s.body);
    z.shortcut = public_plan(s.shortcut);
    plan.push_back(std::move(z));
  }
  return plan;
}

// ---- JSON ----------------------------------------------------------------------------------------

const std::vector<std::string>& spec_keys() {
  static const std::vector<std::string> keys = {"arch",       "hidden",   "activation",      "dropout",
                                                "batch_norm", "channels", "kernel",          "pool",
                                                "depth",      "width",    "width_multiplier", "embedding",
                                                "vocab",      "pad_id",   "layers",          "heads",
                                                "ff",         "norm",     "pooling"};
  return keys;
}

std::string json_string(const nlohmann::json& value, const std::string& field) {
  if (!value.is_string()) fail("{}: expected a name, got {}", field, value.dump());
  return value.get<std::string>();
}

int64_t json_int(const nlohmann::json& value, const std::string& field) {
  if (value.is_number_integer()) return value.get<int64_t>();
  if (value.is_number_float()) {
    double d = value.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 9e15) return static_cast<int64_t>(d);
  }
  fail("{}: expected an integer, got {}", field, value.dump());
}

double json_double(const nlohmann::json& value, const std::string& field) {
  if (!value.is_number()) fail("{}: expected a number, got {}", field, value.dump());
  return value.get<double>();
}

std::vector<int64_t> json_int_list(const nlohmann::json& value, const std::string& field) {
  if (!value.is_array())
    fail("{}: expected a list of integers such as [64, 32], got {}", field, value.dump());
  std::vector<int64_t> list;
  for (size_t i = 0; i < value.size(); ++i)
    list.push_back(json_int(value[i], fmt::format("{}[{}]", field, i)));
  return list;
}

}  // namespace

const std::vector<ZooArch>& zoo_arch_table() {
  static const std::vector<ZooArch> table = [] {
    std::vector<ZooArch> archs;
    for (const Family& f : families()) archs.push_back(f.arch);
    return archs;
  }();
  return table;
}

const std::vector<std::string>& zoo_archs() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> list;
    for (const Family& f : families()) list.push_back(f.arch.name);
    return list;
  }();
  return names;
}

const ZooArch* find_zoo_arch(const std::string& name) {
  const Family* family = find_family(name);
  return family ? &family->arch : nullptr;
}

bool ZooArch::uses(const std::string& key) const { return std::find(reads.begin(), reads.end(), key) != reads.end(); }

const std::vector<int64_t>* zoo_stage_sizes(const ZooSpec& spec) {
  const ZooArch* arch = find_zoo_arch(spec.arch());
  if (!arch || arch->stages.empty()) return nullptr;
  return arch->stages == "channels" ? &spec.channels() : &spec.hidden();
}

const std::vector<std::string>& zoo_activations() {
  static const std::vector<std::string> activations = {"relu", "gelu", "tanh", "leaky_relu", "silu"};
  return activations;
}

void validate(const ZooSpec& spec, const std::vector<int64_t>& input_shape, int64_t outputs,
              const std::string& field) {
  const std::string& arch = spec.arch();
  check_name(field + ".arch", "architecture", arch, zoo_archs());
  check_name(field + ".activation", "activation", spec.activation(), zoo_activations());
  check_name(field + ".pool", "pooling", spec.pool(), pool_kinds());
  const Family& family = *find_family(arch);

  bool shape_ok = input_shape.size() == 1 || input_shape.size() == 3;
  for (int64_t d : input_shape) shape_ok = shape_ok && d > 0;
  if (!shape_ok) {
    fail("{}: input shape {} is neither [features] nor [channels, height, width]", field,
         shape_text(input_shape));
  }
  if (outputs < 1) fail("{}: the model needs at least 1 output, got {}", field, outputs);

  for (size_t i = 0; i < spec.hidden().size(); ++i) {
    if (spec.hidden()[i] <= 0) {
      fail("{}.hidden[{}]: a layer size must be positive, got {}", field, i, spec.hidden()[i]);
    }
  }
  for (size_t i = 0; i < spec.channels().size(); ++i) {
    if (spec.channels()[i] <= 0) {
      fail("{}.channels[{}]: a channel count must be positive, got {}", field, i, spec.channels()[i]);
    }
  }
  if (!(spec.dropout() >= 0 && spec.dropout() < 1)) {
    fail("{}.dropout: must be in [0, 1), got {}", field, spec.dropout());
  }
  if (!(spec.width_multiplier() > 0 && std::isfinite(spec.width_multiplier()))) {
    fail("{}.width_multiplier: must be a positive number, got {}", field, spec.width_multiplier());
  }

  // Keys that shape the network are refused by a family that would ignore them (they are certainly a
  // mistake); the others are ignored (docs/models.md).
  auto readers = [&](const std::string& key) {
    std::vector<std::string> names;
    for (const Family& f : families()) {
      if (f.arch.uses(key)) names.push_back(f.arch.name);
    }
    return one_of(names);
  };
  if (!spec.hidden().empty() && !family.arch.uses("hidden")) {
    fail("{}.hidden: arch {} has no hidden layers (got {}); use arch {}", field, arch,
         shape_text(spec.hidden()), readers("hidden"));
  }
  if (spec.batch_norm() && !family.arch.uses("batch_norm")) {
    fail("{}.batch_norm: arch {} has no hidden layer to normalise; use arch {}", field, arch,
         readers("batch_norm"));
  }
  if (!spec.channels().empty() && !family.arch.uses("channels")) {
    fail("{}.channels: arch {} has no stages (channels) (got {}); use arch {}", field, arch,
         shape_text(spec.channels()), readers("channels"));
  }

  std::vector<int64_t> input = family_input(family, input_shape);
  if (family.arch.image && input.size() == 3 && input[1] == 0) {
    fail(
        "{}.arch: {} needs image input [channels, height, width]; got {} flat features, not a perfect "
        "square to view as 1 x s x s",
        field, arch, input_shape[0]);
  }
  family.check(spec, input, field);
}

ZooSpec with_vocab(ZooSpec spec, int64_t vocab, int64_t pad_id) {
  const Family* family = find_family(spec.arch());
  if (family && family->arch.text && spec.vocab() == 0 && vocab > 0) spec.vocab(vocab).pad_id(pad_id);
  return spec;
}

ModelPtr build_zoo_model(const ZooSpec& spec, const std::vector<int64_t>& input_shape, int64_t outputs,
                         const std::string& field) {
  return std::make_shared<ZooModel>(spec, input_shape, outputs, field);
}

nlohmann::json to_json(const ZooSpec& spec) {
  return nlohmann::json{{"arch", spec.arch()},
                        {"hidden", spec.hidden()},
                        {"activation", spec.activation()},
                        {"dropout", spec.dropout()},
                        {"batch_norm", spec.batch_norm()},
                        {"channels", spec.channels()},
                        {"kernel", spec.kernel()},
                        {"pool", spec.pool()},
                        {"depth", spec.depth()},
                        {"width", spec.width()},
                        {"width_multiplier", spec.width_multiplier()},
                        {"embedding", spec.embedding()},
                        {"vocab", spec.vocab()},
                        {"pad_id", spec.pad_id()},
                        {"layers", spec.layers()},
                        {"heads", spec.heads()},
                        {"ff", spec.ff()},
                        {"norm", spec.norm()},
                        {"pooling", spec.pooling()}};
}

ZooSpec zoo_spec_from_json(const nlohmann::json& json, const std::string& field) {
  if (!json.is_object()) {
    fail("{}: expected a mapping such as {{arch: mlp, hidden: [64]}}, got {}", field, json.dump());
  }
  ZooSpec spec;
  for (const auto& [key, value] : json.items()) {
    std::string where = field + "." + key;
    if (key == "arch") {
      spec.arch(json_string(value, where));
    } else if (key == "hidden") {
      spec.hidden(json_int_list(value, where));
    } else if (key == "activation") {
      spec.activation(json_string(value, where));
    } else if (key == "dropout") {
      spec.dropout(json_double(value, where));
    } else if (key == "batch_norm") {
      if (!value.is_boolean()) fail("{}: expected true or false, got {}", where, value.dump());
      spec.batch_norm(value.get<bool>());
    } else if (key == "channels") {
      spec.channels(json_int_list(value, where));
    } else if (key == "kernel") {
      spec.kernel(json_int(value, where));
    } else if (key == "pool") {
      spec.pool(json_string(value, where));
    } else if (key == "depth") {
      spec.depth(json_int(value, where));
    } else if (key == "width") {
      spec.width(json_int(value, where));
    } else if (key == "width_multiplier") {
      spec.width_multiplier(json_double(value, where));
    } else if (key == "embedding") {
      spec.embedding(json_int(value, where));
    } else if (key == "vocab") {
      spec.vocab(json_int(value, where));
    } else if (key == "pad_id") {
      spec.pad_id(json_int(value, where));
    } else if (key == "layers") {
      spec.layers(json_int(value, where));
    } else if (key == "heads") {
      spec.heads(json_int(value, where));
    } else if (key == "ff") {
      spec.ff(json_int(value, where));
    } else if (key == "norm") {
      spec.norm(json_string(value, where));
    } else if (key == "pooling") {
      spec.pooling(json_string(value, where));
    } else {
      auto suggestion = nearest(key, spec_keys());
      fail("{}: unknown key{} (expected {})", where,
           suggestion ? "; did you mean " + quote(*suggestion) + "?" : std::string(), one_of(spec_keys()));
    }
  }
  return spec;
}

std::vector<ZooStep> zoo_plan(const ZooSpec& spec, const std::vector<int64_t>& input_shape, int64_t outputs) {
  validate(spec, input_shape, outputs);
  return public_plan(make_plan(spec, input_shape, outputs));
}

std::string torchscript_attribute_name(const std::string& state_name) {
  std::string name = state_name;
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

std::string torchscript_source(const ZooSpec& spec, const std::vector<int64_t>& input_shape,
                               int64_t outputs) {
  validate(spec, input_shape, outputs);
  std::string source = "def forward(self, x):\n";
  emit(make_plan(spec, input_shape, outputs), "x", "", source);
  source += "    return x\n";
  return source;
}

// ---- ZooModel ------------------------------------------------------------------------------------

struct ZooModel::Impl {
  std::shared_ptr<torch::nn::Module> root;
  std::vector<Step> steps;
};

ZooModel::ZooModel(const ZooSpec& spec, const std::vector<int64_t>& input_shape, int64_t outputs,
                   const std::string& field)
    : spec_(spec), input_shape_(input_shape), outputs_(outputs), impl_(std::make_unique<Impl>()) {
  validate(spec, input_shape, outputs, field);
  impl_->steps = make_plan(spec, input_shape, outputs);
  impl_->root = std::make_shared<torch::nn::Module>("ZooModel");
  build_modules(*impl_->root, impl_->steps);
}

ZooModel::~ZooModel() = default;

torch::Tensor ZooModel::forward(const torch::Tensor& input) {
  return run(impl_->steps, checked_input(input), impl_->root->is_training());
}

torch::Tensor ZooModel::checked_input(const torch::Tensor& input) const {
  bool fits = input.dim() == static_cast<int64_t>(input_shape_.size()) + 1;
  for (size_t i = 0; fits && i < input_shape_.size(); ++i) fits = input.size(i + 1) == input_shape_[i];
  if (!fits) {
    std::vector<std::string> expected = {"N"};
    for (int64_t d : input_shape_) expected.push_back(std::to_string(d));
    fail("{} model: input has shape {}, expected [{}]", spec_.arch(), shape_text(input.sizes().vec()),
         join(expected, ", "));
  }
  return input.scalar_type() == torch::kFloat ? input : input.to(torch::kFloat);
}

std::vector<std::string> ZooModel::tap_names() {
  std::vector<Row> rows;
  infer(impl_->steps, input_shape_, "", rows);
  std::vector<std::string> names;
  for (const Row& row : rows) names.push_back(row.name);
  return names;
}

TappedForward ZooModel::forward_taps(const torch::Tensor& input, const std::vector<std::string>& taps) {
  if (taps.empty()) return {forward(input), {}};
  check_taps(*this, taps);
  TapMap wanted;
  for (const auto& tap : taps) wanted.emplace(tap, torch::Tensor());
  TappedForward result;
  result.output = run(impl_->steps, checked_input(input), impl_->root->is_training(), "", &wanted);
  for (const auto& tap : taps) result.taps.push_back(tap == kOutputTap ? result.output : wanted.at(tap));
  return result;
}

std::vector<torch::Tensor> ZooModel::parameters() { return impl_->root->parameters(); }

NamedTensors ZooModel::state() {
  // PyTorch's state_dict order: each module's parameters, then its buffers, then its children.
  NamedTensors state;
  for (const auto& item : impl_->root->named_modules("", /*include_self=*/true)) {
    std::string prefix = item.key().empty() ? "" : item.key() + ".";
    for (const auto& p : item.value()->named_parameters(/*recurse=*/false))
      state.emplace_back(prefix + p.key(), p.value());
    for (const auto& b : item.value()->named_buffers(/*recurse=*/false))
      state.emplace_back(prefix + b.key(), b.value());
  }
  return state;
}

void ZooModel::load_state(const NamedTensors& state) {
  NamedTensors own = this->state();
  std::map<std::string, torch::Tensor> given;
  for (const auto& [name, tensor] : state) {
    if (!given.emplace(name, tensor).second) fail("load_state: tensor {} appears twice", quote(name));
  }
  std::set<std::string> own_names;
  for (const auto& [name, tensor] : own) {
    own_names.insert(name);
    auto it = given.find(name);
    if (it == given.end()) {
      fail("load_state: missing tensor {} (shape {}) for the {} model", quote(name),
           shape_text(tensor.sizes().vec()), spec_.arch());
    }
    if (it->second.sizes() != tensor.sizes()) {
      fail("load_state: {}: shape {} in the state, but the {} model has {}", quote(name),
           shape_text(it->second.sizes().vec()), spec_.arch(), shape_text(tensor.sizes().vec()));
    }
    check_within_storage(it->second, fmt::format("load_state: {}", quote(name)));
  }
  for (const auto& [name, tensor] : state) {
    if (!own_names.count(name)) {
      fail("load_state: unexpected tensor {}: the {} model has no such parameter or buffer", quote(name),
           spec_.arch());
    }
  }
  // Everything checked first, so a failed load leaves the model as it was.
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : own) tensor.copy_(given.at(name));
}

void ZooModel::set_training(bool training) { impl_->root->train(training); }

void ZooModel::to(torch::Device device) { impl_->root->to(device); }

ModelSummary ZooModel::summary(const std::vector<int64_t>& input_shape) {
  std::vector<Row> rows;
  infer(impl_->steps, input_shape, "", rows);
  ModelSummary summary;
  summary.params = count_params(*this);
  int64_t row_params = 0;
  for (const Row& row : rows) {
    summary.macs += row.macs;
    row_params += row.params;
    summary.layers.push_back(fmt::format("{:<22} {:<14} {:<16} {:>10} {:>12}", row.name, row.kind,
                                         shape_text(row.shape), row.params, row.macs));
  }
  KD_CHECK(row_params == summary.params, "summary rows count {} params, the modules hold {}", row_params,
           summary.params);
  return summary;
}

std::string ZooModel::kind() const { return spec_.arch(); }

std::shared_ptr<torch::nn::Module> ZooModel::module() { return impl_->root; }

}  // namespace kd::models
