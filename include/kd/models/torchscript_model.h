// A TorchScript file (torch.jit.script/trace(...).save in Python) behind the Model
// interface: as a frozen teacher, or as a user-defined student whose parameters
// kdistill trains and saves back.
//
//   auto teacher = load_torchscript("teacher.pt", "logits");  // output: index or dict key
#pragma once

#include <torch/script.h>

#include <map>
#include <memory>
#include <optional>
#include <vector>
#include <string>

#include "kd/models/model.h"

namespace kd::models {

class TorchScriptModel : public Model {
 public:
  // `output`: which output is the logits when forward returns a tuple/list ("0", "1", ...)
  // or a dict ("logits"); "" when it returns a tensor.
  TorchScriptModel(torch::jit::Module module, std::string path, std::string output);

  torch::Tensor forward(const torch::Tensor& input) override;
  std::vector<torch::Tensor> parameters() override;
  NamedTensors state() override;
  void load_state(const NamedTensors& state) override;
  void set_training(bool training) override;
  void to(torch::Device device) override;
  ModelSummary summary(const std::vector<int64_t>& input_shape) override;
  std::string kind() const override { return "torchscript"; }
  // Every submodule by its path, as named_modules() gives it ("features.0", "layer1.0.conv1"). A tap is
  // the submodule's output in the inlined forward graph, which then also returns it (a copy: later
  // in-place ops do not reach it). kd::Error for a submodule called only inside control flow, or not
  // called at all.
  std::vector<std::string> tap_names() override;
  TappedForward forward_taps(const torch::Tensor& input, const std::vector<std::string>& taps) override;

  torch::jit::Module& module() { return module_; }

  // A text model's forward takes token ids by name, as Hugging Face's BERT-style models do:
  // forward(input_ids, attention_mask[, token_type_ids]) (any order; other arguments keep their
  // defaults). kdistill's one input is then the ids (float32, as data.format: text gives them): they
  // go in as int64, attention_mask is 1 where the id is not `pad_id`, token_type_ids are zeros.
  bool takes_token_ids() const { return !arguments_.empty(); }
  void set_pad_id(int64_t pad_id) { pad_id_ = pad_id; }
  // Saves the module (with its current parameters) as TorchScript, atomically.
  void save(const std::string& path);

 private:
  // module_ for training; without grad in eval mode, its kd::linear copy (built once).
  torch::jit::Module& inference_module();
  // forward of inference_module(); for inference, on channels-last images (models::to_channels_last)
  // unless the module refused them once (a view() that the layout does not allow, say).
  c10::IValue run(const torch::Tensor& input);
  // forward's arguments for `input`: the tensor itself, or the token ids, mask and types by name.
  std::vector<c10::IValue> arguments_for(const torch::Tensor& input) const;
  // The logits among forward's outputs (output_).
  torch::Tensor logits_of(const c10::IValue& result) const;
  // forward's graph, inlined, returning (its output, the taps...); built once for each list of taps.
  std::shared_ptr<torch::jit::GraphFunction> tapped_forward(const std::vector<std::string>& taps);
  std::map<std::vector<std::string>, std::shared_ptr<torch::jit::GraphFunction>> tapped_;

  torch::jit::Module module_;
  std::optional<torch::jit::Module> fast_;
  bool fast_failed_ = false;
  bool channels_last_failed_ = false;
  std::string path_;
  std::string output_;
  std::vector<std::string> arguments_;  // forward's argument names when it takes token ids by name, else empty
  int64_t pad_id_ = 0;
};

// kd::Error naming the file on a missing, truncated or non-TorchScript file.
std::shared_ptr<TorchScriptModel> load_torchscript(const std::string& path, const std::string& output = "");

}  // namespace kd::models
