// The model zoo: the networks kdistill builds from a spec (a recipe's
// `student: {model: {...}}` or `teacher: {model: {...}}`), behind kd::models::Model.
//
//   arch: mlp     [N, F] or [N, C, H, W] (flattened) -> Linear+act (per hidden size) -> Linear
//   arch: cnn     [N, C, H, W] -> per stage: conv(k, same padding) [+BN] + act + 2x2 pool
//                 -> global average pool -> optional MLP head (`hidden`) -> Linear
//   arch: vgg     as cnn with two convs a stage (VGG, Simonyan & Zisserman 2015)
//   arch: resnet  CIFAR ResNet (He et al. 2016), depth 6n+2, stages of width w, 2w, 4w, BN everywhere,
//                 option B shortcuts (1x1 conv + BN where the shape changes) -> GAP -> Linear
//   arch: linear  one Linear layer on the flattened input (logistic / linear regression)
//   arch: textcnn token ids [N, L] (float32, as data.format: text gives them) -> embedding -> per stage
//                 conv1d(k, same padding) + act -> max over the text's tokens (padding left out)
//                 -> optional MLP head (`hidden`) -> Linear (Kim 2014, one kernel size a stage)
//   arch: transformer  token ids [N, L] -> embedding + learned positions -> `layers` encoder layers
//                 (multi-head self-attention over the text's tokens, padding masked; feed-forward of
//                 width `ff`; pre- or post-norm) -> mean over the tokens or the first token
//                 -> optional MLP head -> Linear (a BERT-style encoder; width = `embedding`)
//   arch: bigru   token ids [N, L] -> embedding -> per stage a bidirectional GRU (`channels`: hidden
//                 units a direction; each direction reads only the text's tokens) -> mean or max over
//                 the tokens -> optional MLP head -> Linear (Tang et al. 2019's BiLSTM student, with GRUs)
// The image families on flat input [F]: F must be a perfect square s*s; the input is reshaped to
// [1, s, s] (the 8x8 digits set is 64 flat features). Any other F is a kd::Error.
// A new family is one line of the table in zoo.cpp, its plan function and its checks: the modules,
// forward, summary, TorchScript source and the ONNX and TF.js exporters all walk the plan.
//
// Example:
//   auto model = build_zoo_model(ZooSpec().arch("cnn").channels({16, 32}), {1, 28, 28}, 10);
//   torch::Tensor logits = model->forward(torch::randn({8, 1, 28, 28}));  // [8, 10]
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kd/models/model.h"

namespace kd::models {

struct ZooSpec {
  TORCH_ARG(std::string, arch) = "mlp";            // a name of zoo_arch_table(): mlp | cnn | vgg | resnet | linear
  TORCH_ARG(std::vector<int64_t>, hidden) = {};    // mlp: hidden sizes; cnn/vgg/resnet: MLP head after pooling
  TORCH_ARG(std::string, activation) = "relu";     // relu | gelu | tanh | leaky_relu (slope 0.01) | silu
  TORCH_ARG(double, dropout) = 0.0;                // after each hidden activation, and before the head
  TORCH_ARG(bool, batch_norm) = false;             // mlp/cnn: BN before each activation (resnet: always)
  TORCH_ARG(std::vector<int64_t>, channels) = {};  // cnn/vgg/textcnn: channels per stage, e.g. {32, 64}; bigru: units a direction
  TORCH_ARG(int64_t, kernel) = 3;                  // cnn/vgg: odd kernel size ("same" padding)
  TORCH_ARG(std::string, pool) = "max";            // cnn/vgg: max | avg, 2x2 after each stage
  TORCH_ARG(int64_t, depth) = 20;                  // resnet: 6n+2 (8, 14, 20, 32, 44, 56, 110)
  TORCH_ARG(int64_t, width) = 16;                  // resnet: stage widths width, 2*width, 4*width
  TORCH_ARG(double, width_multiplier) = 1.0;  // scales hidden sizes / channels / width: max(1, round(x*m))
  TORCH_ARG(int64_t, embedding) = 64;              // textcnn, transformer: the width of a token's embedding
  TORCH_ARG(int64_t, layers) = 2;                  // transformer: encoder layers
  TORCH_ARG(int64_t, heads) = 4;                   // transformer: attention heads (they divide embedding)
  TORCH_ARG(int64_t, ff) = 0;                      // transformer: feed-forward width; 0 = 4 x embedding
  TORCH_ARG(std::string, norm) = "pre";            // transformer: pre | post (layer norm before or after each block)
  TORCH_ARG(std::string, pooling) = "mean";        // transformer: mean (over the tokens) | first (the first token); bigru: mean | max
  TORCH_ARG(int64_t, vocab) = 0;                   // text families: token ids in [0, vocab) (set from the data)
  TORCH_ARG(int64_t, pad_id) = 0;                  // text families: the id that pads a text (set from the data)
};

// A family of the zoo, as the table in zoo.cpp declares it (one line a family; its plan and the checks
// of its own keys are functions beside the table).
struct ZooArch {
  std::string name;                // what `arch:` says
  std::string summary;             // one line for help and docs
  bool image = false;              // takes [C, H, W]; a flat perfect square F is viewed as [1, sqrt F, sqrt F]
  std::vector<std::string> reads;  // spec keys of its own (all read arch, activation, dropout, width_multiplier)
  std::string stages;              // the list key whose length is its depth (what `auto` resizes), or ""
  bool text = false;               // takes token ids [L] (needs vocab)

  bool uses(const std::string& key) const;  // key is one of `reads`
};

// The zoo's families, in the table's order; their names, for recipe checks and help text; one by name
// (nullptr when there is none).
const std::vector<ZooArch>& zoo_arch_table();
const std::vector<std::string>& zoo_archs();  // mlp, cnn, vgg, resnet, linear
const ZooArch* find_zoo_arch(const std::string& name);
// The spec's list of stages (its family's `stages`: mlp's hidden, cnn's and vgg's channels), or
// nullptr for a family without one.
const std::vector<int64_t>* zoo_stage_sizes(const ZooSpec& spec);
const std::vector<std::string>& zoo_activations();  // relu, gelu, tanh, leaky_relu, silu

// kd::Error on a bad spec for this input shape and number of outputs. `field` is the recipe path of
// the spec, used as the prefix of every message: "student.model.depth: a CIFAR ResNet has ...".
// input_shape excludes the batch dim: {784} for flat features, {1, 28, 28} for images (C, H, W).
// An mlp with empty `hidden` is allowed: it is the linear model on the flattened input.
void validate(const ZooSpec& spec, const std::vector<int64_t>& input_shape, int64_t outputs,
              const std::string& field = "model");

// `spec` with the vocabulary of text data (data.format: text) filled in when its family reads token
// ids and the recipe did not set one; unchanged otherwise.
ZooSpec with_vocab(ZooSpec spec, int64_t vocab, int64_t pad_id);

// Validates, then builds the network with PyTorch's default initialisation (deterministic given
// torch::manual_seed). The result is a ZooModel.
ModelPtr build_zoo_model(const ZooSpec& spec, const std::vector<int64_t>& input_shape, int64_t outputs,
                         const std::string& field = "model");

// Every key, always (what checkpoints store). zoo_spec_from_json accepts any subset of the keys and
// fails with a kd::Error naming `field`.key on an unknown key (with a "did you mean") or a wrong type.
nlohmann::json to_json(const ZooSpec& spec);
ZooSpec zoo_spec_from_json(const nlohmann::json& json, const std::string& field = "model");

// Source of a TorchScript `forward` that computes what the ZooModel computes, in plain torch ops
// (torch.addmm, torch.conv2d, torch.batch_norm, torch.max_pool2d, ...). It reads the state() tensors as
// attributes of `self` named with dots replaced by underscores ("layer1_0.conv1.weight" ->
// self.layer1_0_conv1_weight), and honours self.training (dropout, batch-norm statistics).
std::string torchscript_source(const ZooSpec& spec, const std::vector<int64_t>& input_shape, int64_t outputs);
// The attribute name torchscript_source uses for a state() name.
std::string torchscript_attribute_name(const std::string& state_name);

// The plan a zoo network is built from, step by step: what forward, summary and torchscript_source
// walk, for exporters that rebuild the network in another format (ONNX, TF.js). A step's tensors are
// state() entries named prefix + name + ".weight" (".bias", ".running_mean", ...), where prefix is
// "" at the top and the Block's name + "." inside a Block.
// Text steps: Embedding ([L] ids -> [out, L] when `spatial`, else [L, out]; `padding` is the pad id),
// Conv1d ([in, L] -> [out, L]), TimePool (max over the positions whose id is not the pad id: [C, L] -> [C]),
// Positions (a learned [L, out] table added), Encoder (a transformer layer on [L, out]: `heads`, feed-forward
// width `ff`, `op` its activation, `spatial` = pre-norm, `p` its dropout), LayerNorm ([.., out]), SeqPool
// ([L, D] -> [D]: `op` mean or max over the tokens, or first), Recurrent (a bidirectional GRU [L, in] ->
// [L, 2 out], torch.nn.GRU's tensors: weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0 and their
// _reverse; the padding at the end of a text is skipped by both directions).
enum class ZooStepKind {
  Flatten, Reshape, Linear, Conv, BatchNorm, Activation, Dropout, Pool, GlobalPool, Block, Embedding, Conv1d, TimePool,
  Positions, Encoder, LayerNorm, SeqPool, Recurrent
};

struct ZooStep {
  ZooStepKind kind = ZooStepKind::Flatten;
  std::string name;
  int64_t in = 0, out = 0;  // Linear: features; Conv: channels; BatchNorm: features in `out`
  int64_t kernel = 1, stride = 1, padding = 0;  // Conv (square kernel, symmetric padding)
  bool bias = true;                  // Linear, Conv
  bool spatial = false;              // BatchNorm: 2d (true) or 1d
  std::vector<int64_t> shape;        // Reshape: target without the batch dim
  std::string op;                    // Activation: name; Pool: max | avg (2x2, stride 2); Block: activation after the add
  double p = 0;                      // Dropout probability
  int64_t heads = 0, ff = 0;         // Encoder
  std::vector<ZooStep> body, shortcut;  // Block: main path; projection (empty = identity)
};

// Constants of the zoo's layers that the plan does not carry.
inline constexpr double kZooBatchNormEps = 1e-5;
inline constexpr double kZooLeakyReluSlope = 0.01;
inline constexpr double kZooLayerNormEps = 1e-5;

// Validates, then returns the plan of the network build_zoo_model builds.
std::vector<ZooStep> zoo_plan(const ZooSpec& spec, const std::vector<int64_t>& input_shape, int64_t outputs);

// A zoo network: torch::nn modules (Linear, Conv2d, BatchNorm1d/2d) registered under stable names.
// State names follow PyTorch's state_dict order and naming, e.g. mlp: fc1.weight, fc1.bias, ...,
// head.weight, head.bias; resnet: conv1.weight, bn1.*, layer1_0.conv1.weight, ..., head.bias.
class ZooModel : public Model {
 public:
  ZooModel(const ZooSpec& spec, const std::vector<int64_t>& input_shape, int64_t outputs,
           const std::string& field = "model");
  ~ZooModel() override;

  // input [N, ...input_shape] -> [N, outputs]; kd::Error when the trailing dims differ from input_shape.
  torch::Tensor forward(const torch::Tensor& input) override;
  std::vector<torch::Tensor> parameters() override;
  NamedTensors state() override;
  void load_state(const NamedTensors& state) override;
  void set_training(bool training) override;
  void to(torch::Device device) override;
  // params: parameters (BN running statistics excluded, as PyTorch counts). MACs: Linear in*out,
  // Conv2d k*k*cin*cout*Hout*Wout; BN, activations, pooling, dropout and residual adds count 0.
  // layers: one line per step: name, kind, output shape (no batch dim), params, MACs.
  ModelSummary summary(const std::vector<int64_t>& input_shape) override;
  std::string kind() const override;
  // The summary's layer names: conv1, conv1_bn, conv1_act, conv1_pool, gap, fc1, head; a residual
  // block's own name (its output after the add) and its steps as "layer1_0.conv1". With taps the
  // network runs step by step on libtorch's ops (no fused batch norm + ReLU + max pool, no dense
  // chain): a tapped batch norm feeding the fused ReLU + max pool gave run-to-run differences.
  std::vector<std::string> tap_names() override;
  TappedForward forward_taps(const torch::Tensor& input, const std::vector<std::string>& taps) override;

  const ZooSpec& spec() const { return spec_; }
  const std::vector<int64_t>& input_shape() const { return input_shape_; }
  int64_t outputs() const { return outputs_; }
  // The underlying module tree (for torch::save, optimizers over named parameters, printing).
  std::shared_ptr<torch::nn::Module> module();

 private:
  struct Impl;
  torch::Tensor checked_input(const torch::Tensor& input) const;  // float32 [N, ...input_shape] or kd::Error
  ZooSpec spec_;
  std::vector<int64_t> input_shape_;
  int64_t outputs_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kd::models
