// Tensors between ONNX's protobuf types and libtorch, shared by the ONNX importer (io) and exporter
// (export). Include it only from sources built with the ONNX definitions (CMakeLists.txt: onnx_*.cpp).
#pragma once

#include <onnx/onnx_pb.h>
#include <torch/torch.h>

#include <string>

namespace kd::io::onnx_tensor {

// The torch type of an ONNX element type (TensorProto::FLOAT, ...); kd::Error naming `where` otherwise.
torch::ScalarType to_torch(int32_t onnx_type, const std::string& where);
// The ONNX element type of a torch type; kd::Error naming `where` for types ONNX lacks.
int32_t to_onnx(torch::ScalarType type, const std::string& where);

// A CPU tensor from raw_data or the typed fields; kd::Error naming `where` on external data, an
// unknown type or a size that does not match the dims.
torch::Tensor from_proto(const onnx::TensorProto& proto, const std::string& where);
// Fills `proto` (name, dims, data_type, raw_data little-endian).
void to_proto(const torch::Tensor& tensor, const std::string& name, onnx::TensorProto* proto);

}  // namespace kd::io::onnx_tensor
