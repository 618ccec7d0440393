// An ONNX file (torch.onnx.export, tf2onnx, kdistill's export_onnx) behind the Model interface, as a
// frozen teacher: the graph runs on libtorch ops, node by node in topological order, with any batch size.
//
//   auto teacher = std::make_shared<OnnxModel>("teacher.onnx", "logits");  // output: index or name
//   torch::Tensor logits = teacher->forward(torch::randn({8, 1, 28, 28}));
//
// Input adaptation: kdistill feeds [N, ...input_shape] in its own layout ([N, C, H, W] images,
// [N, F] features). When the graph's declared input differs (unknown dims match anything):
//   declared [N, H, W, C] (channels last, Keras/tf2onnx), fed [N, C, H, W]  -> permuted
//   declared [N, F], fed [N, C, H, W] with F = C*H*W                        -> flattened
//   declared [N, d1, d2, ...], fed [N, F] with F = d1*d2*...                -> reshaped
// and the input is cast to the declared element type.
//
// Operators: onnx_operators() (the one table); opset-dependent forms (Squeeze/Unsqueeze/Split/
// ReduceMean/Slice/Pad/Clip attributes vs. inputs, Softmax's axis) follow the file's opset.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kd/models/model.h"

namespace kd::io {

// The metadata_props keys kdistill writes (export_onnx) and reads: ModelInfo as JSON, the class names.
inline constexpr const char* kOnnxInfoKey = "kdistill";
inline constexpr const char* kOnnxClassNamesKey = "class_names";

class OnnxModel : public models::Model {
 public:
  // Reads, checks (onnx::checker) and prepares the graph; kd::Error naming the file when it is not a
  // valid ONNX model, uses an unsupported operator, lacks a tensor a node reads, or (one input with
  // known dims) does not run on its declared input. `output` picks the logits of a multi-output graph
  // (an index "0", "1", ... or an output name).
  explicit OnnxModel(const std::string& path, const std::string& output = "");
  ~OnnxModel() override;

  // kd::Error unless the graph has exactly one input (load_model refuses other graphs up front).
  torch::Tensor forward(const torch::Tensor& input) override;
  // Frozen: no trainable parameters.
  std::vector<torch::Tensor> parameters() override { return {}; }
  // The initializers, by name.
  models::NamedTensors state() override;
  void load_state(const models::NamedTensors& state) override;
  void set_training(bool training) override {}
  void to(torch::Device device) override;
  // params: elements of the float initializers the nodes read (shape constants excluded). MACs at
  // `input_shape` for Gemm, MatMul and Conv. One line per node: name, op, output shape (no batch dim), MACs.
  models::ModelSummary summary(const std::vector<int64_t>& input_shape) override;
  // The first input's declared dims without the batch dim, when all are known (fed as they are).
  std::vector<int64_t> declared_input_shape() override;
  std::string kind() const override { return "onnx"; }
  // Every value a node computes, by its name in the graph ("/layer1/conv1/Conv_output_0").
  std::vector<std::string> tap_names() override;
  models::TappedForward forward_taps(const torch::Tensor& input, const std::vector<std::string>& taps) override;

  // The graph's metadata_props (key -> value), e.g. "kdistill" in files export_onnx wrote.
  const std::vector<std::pair<std::string, std::string>>& metadata() const;
  // Names of the graph's inputs (initializers excluded) and outputs, in order.
  std::vector<std::string> input_names() const;
  std::vector<std::string> output_names() const;
  // kd::Error naming the file unless the graph has exactly one input, the one kdistill feeds, or takes
  // token ids by name (takes_token_ids).
  void require_one_input() const;
  // A BERT-style export: inputs input_ids (and attention_mask, token_type_ids, in any order). kdistill's
  // one input is then the token ids (float32): fed as int64, attention_mask 1 where the id is not
  // `pad_id`, token_type_ids zeros.
  bool takes_token_ids() const;
  void set_pad_id(int64_t pad_id);
  // Every output for `inputs` given in input_names() order, as they are (no adaptation).
  std::vector<torch::Tensor> run(const std::vector<torch::Tensor>& inputs);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The operators OnnxModel runs, sorted.
std::vector<std::string> onnx_operators();

// A tensor stored as a serialized onnx.TensorProto (the .pb files of ONNX's test data sets).
torch::Tensor read_onnx_tensor(const std::string& path);

}  // namespace kd::io
