// Exports a zoo model (any family of models::zoo_arch_table()) as an ONNX file (opset 13) that onnxruntime,
// onnx.checker and kdistill's own OnnxModel run.
//
// The graph takes RAW inputs: the preprocessing of info.preprocessing is folded in, as leading
// Sub/Div nodes for "normalize" ((x - shift) / scale) and, for regression with a target
// normaliser, trailing Mul/Add nodes that turn the model's values back into the target's units.
// (A tabular encoding, "tabular", is not folded: the input is the encoded feature vector.)
//
//   input  "input"   float32 [N, ...info.input_shape]   (N is the dynamic axis "N")
//   output "output"  float32 [N, info.outputs]           (logits or values)
//   metadata_props:  "kdistill"    -> info.to_json().dump()
//                    "class_names" -> JSON array of info.class_names
//   initializers:    the state() tensors under their state names ("fc1.weight", "conv1_bn.running_mean")
//
//   export_onnx(*student, info, "out/student.onnx");
//   # python: onnxruntime.InferenceSession("out/student.onnx").run(None, {"input": raw_x})
#pragma once

#include <string>

#include "kd/io/model_file.h"
#include "kd/models/model.h"

namespace kd::exports {

inline constexpr int kOnnxExportOpset = 13;

// Writes `model`, a zoo model built from info.spec for info.input_shape and info.outputs, to `path`
// atomically. kd::Error naming the path when the model is not a zoo model, does not match info.spec,
// or the preprocessing cannot be folded.
void export_onnx(models::Model& model, const io::ModelInfo& info, const std::string& path);

}  // namespace kd::exports
