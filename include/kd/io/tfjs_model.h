// A TF.js layers model (model.json + weight shards, as tf.LayersModel.save and
// tensorflowjs_converter write them) as a frozen kdistill teacher.
//
//   model.json: {"format": "layers-model", "modelTopology": {Keras Sequential | Functional/Model},
//                "weightsManifest": [{"paths": [...], "weights": [{name, shape, dtype, quantization?}]}]}
//   forward: kdistill layout in, Keras semantics inside:
//     images [N, C, H, W] -> permuted to [N, H, W, C] for a model whose input is [H, W, C];
//     flat   [N, F]       -> reshaped to [N, C, H, W] (kdistill's flatten order), then permuted, when the
//                            model's input is [H, W, C] and F = H*W*C;
//     images [N, C, H, W] -> permuted to [N, H, W, C] and flattened (TF's H, W, C order) when the
//                            model's input is flat;
//   output [N, outputs] as the model's last layer computes it (logits, or softmax when the model ends
//   in a softmax).
//
// Layers (one table in tfjs_model.cpp): InputLayer, Dense, Conv2D, DepthwiseConv2D, MaxPooling2D,
// AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, Flatten, Reshape, Dropout (and the
// other noise layers: identity at inference), BatchNormalization (last axis), Activation, ReLU,
// LeakyReLU, ELU, Softmax, Rescaling, ZeroPadding2D, Add, Subtract, Multiply, Average, Maximum,
// Minimum, Concatenate. Every kd::Error names model.json: not JSON, a missing or short shard
// ("expected 1234 bytes, found 1000"), an unsupported layer class or dtype.
//
//   auto teacher = std::make_shared<TfjsModel>("teacher/model.json");
//   torch::Tensor logits = teacher->forward(images);  // images [N, C, H, W]
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kd/models/model.h"

namespace kd::io {

class TfjsModel : public models::Model {
 public:
  explicit TfjsModel(const std::string& model_json);
  ~TfjsModel() override;

  torch::Tensor forward(const torch::Tensor& input) override;
  // Frozen: empty.
  std::vector<torch::Tensor> parameters() override;
  // The weights by their manifest names ("dense_1/kernel"), in manifest order.
  models::NamedTensors state() override;
  void load_state(const models::NamedTensors& state) override;
  void set_training(bool training) override;
  void to(torch::Device device) override;
  // params: every weight except BatchNormalization's moving statistics (as PyTorch counts).
  // MACs: Dense in*out; Conv2D kh*kw*(cin/groups)*cout*Hout*Wout; DepthwiseConv2D kh*kw*cin*mult*Hout*Wout.
  // `input_shape` in kdistill's layout ([C, H, W] or [F]).
  models::ModelSummary summary(const std::vector<int64_t>& input_shape) override;
  // The Keras input shape when every dim is known: [H, W, C] as [C, H, W], anything else as it is.
  std::vector<int64_t> declared_input_shape() override;
  std::string kind() const override;
  // Every layer by its Keras name; 4-D outputs come back as [N, C, H, W] (Keras computes channels last).
  std::vector<std::string> tap_names() override;
  models::TappedForward forward_taps(const torch::Tensor& input, const std::vector<std::string>& taps) override;

  // The model's input shape without the batch dim, as Keras declares it ([H, W, C] or [F]; -1 = any).
  const std::vector<int64_t>& keras_input_shape() const;
  // model.json's "userDefinedMetadata" (null when absent).
  const nlohmann::json& metadata() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kd::io
