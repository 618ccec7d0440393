// The one interface every network goes through: zoo models, TorchScript files,
// ONNX graphs and TF.js models alike. The trainer, the evaluator and the
// exporters see only this.
//
//   forward: input [N, ...input_shape] float32 -> output [N, outputs]
//            (logits for classification, values for regression)
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kd::models {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Size and cost of a model at a given input shape.
struct ModelSummary {
  int64_t params = 0;        // trainable and frozen parameters
  int64_t macs = 0;          // multiply-accumulates for ONE example
  std::vector<std::string> layers;  // one line per layer: name, kind, output shape, params
};

// One forward pass with named intermediate tensors ("feature taps"), in the order they were asked for.
struct TappedForward {
  torch::Tensor output;
  std::vector<torch::Tensor> taps;
};

// The tap that names a model's final output (logits or predictions), whatever its kind.
inline constexpr const char* kOutputTap = "output";

class Model {
 public:
  virtual ~Model() = default;

  virtual torch::Tensor forward(const torch::Tensor& input) = 0;
  // Parameters the optimizer updates (empty for a frozen teacher format).
  virtual std::vector<torch::Tensor> parameters() = 0;
  // Everything that defines the model's numbers: parameters and buffers by name.
  virtual NamedTensors state() = 0;
  // Copies `state` into the model; kd::Error on a missing name or a shape mismatch.
  virtual void load_state(const NamedTensors& state) = 0;
  virtual void set_training(bool training) = 0;
  virtual void to(torch::Device device) = 0;
  virtual ModelSummary summary(const std::vector<int64_t>& input_shape) = 0;
  // The input shape of one example, in kdistill's layout ([C, H, W] or [F]), as the file itself
  // declares it (an ONNX graph input with known dims, a Keras layer's batch_input_shape); empty when
  // the file does not say (TorchScript) or a dim is unknown.
  virtual std::vector<int64_t> declared_input_shape() { return {}; }
  // a zoo family (models::zoo_archs()), "torchscript", "onnx", "tfjs".
  virtual std::string kind() const = 0;

  // The intermediate tensors forward_taps can return, by name (zoo layers, TorchScript submodules, ONNX
  // values, TF.js layers: what `kdistill inspect` lists), besides kOutputTap; empty when the kind has none.
  virtual std::vector<std::string> tap_names() { return {}; }
  // forward, and the tensors named by `taps` as they are computed on the way (images [N, C, H, W],
  // vectors [N, D]); differentiable where the model trains. kd::Error naming a tap the model lacks.
  // The default serves kinds without taps: kOutputTap only.
  virtual TappedForward forward_taps(const torch::Tensor& input, const std::vector<std::string>& taps);
};

// kd::Error `tap "conv9": the cnn model has no such tap (did you mean "conv2"?); `kdistill inspect`
// lists them` unless every name is kOutputTap or one of model.tap_names().
void check_taps(Model& model, const std::vector<std::string>& taps);

// A BERT-style model's inputs for token ids `input` [N, L] (float32, as data.format: text gives them),
// in the order of `names`: input_ids as int64, attention_mask 1 where the id is not `pad_id`,
// token_type_ids zeros. kd::Error "`what` takes input_ids and NAME, which kdistill cannot fill" for any
// other name (`what`: "model.pt: forward", "model.onnx: the graph").
std::vector<torch::Tensor> token_id_inputs(const torch::Tensor& input, const std::vector<std::string>& names,
                                           int64_t pad_id, const std::string& what);

using ModelPtr = std::shared_ptr<Model>;

// Where the model's parameters live: the CPU for a model without any (an ONNX graph kdistill runs).
torch::Device device_of(Model& model);

// `model` on `device` for the scope, back on the CPU after it (files, exports and scores read it
// there); does nothing for the CPU.
class DeviceScope {
 public:
  DeviceScope(Model* model, torch::Device device);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  Model* model_ = nullptr;  // null when nothing moved
};

// Number of parameters the optimizer sees (PyTorch's sum(p.numel() for p in m.parameters()):
// batch-norm running statistics are buffers and do not count).
int64_t count_params(Model& model);

// Row-major float32 c[m, n] = op(a) op(b) (+ c when `accumulate`), op = the transpose where asked,
// through oneDNN's sgemm on the --threads team (models::linear's and dense_chain's products).
void sgemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, const float* a, const float* b,
           float* c, bool accumulate);

// A fully connected layer, x W^T + b (`bias` may be undefined), for the zoo networks and, through
// the TorchScript op kd::linear, for loaded TorchScript teachers. float32 products on the CPU of
// at least 64K multiply-adds go through oneDNN's sgemm (forward and backward), the rest through
// torch::linear (OpenBLAS). Differentiable either way, twice included (create_graph).
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

}  // namespace kd::models
