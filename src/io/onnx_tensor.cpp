#include "kd/io/onnx_tensor.h"

#include <cstring>

#include "kd/util/error.h"
#include "kd/util/shape.h"

namespace kd::io::onnx_tensor {
namespace {

struct TypePair {
  int32_t onnx;
  torch::ScalarType torch;
};

// ONNX's unsigned 16/32/64-bit integers have no torch type and are not supported.
const std::vector<TypePair>& type_pairs() {
  static const std::vector<TypePair> pairs = {
      {onnx::TensorProto::FLOAT, torch::kFloat},     {onnx::TensorProto::DOUBLE, torch::kDouble},
      {onnx::TensorProto::FLOAT16, torch::kHalf},    {onnx::TensorProto::BFLOAT16, torch::kBFloat16},
      {onnx::TensorProto::INT64, torch::kLong},      {onnx::TensorProto::INT32, torch::kInt},
      {onnx::TensorProto::INT16, torch::kShort},     {onnx::TensorProto::INT8, torch::kChar},
      {onnx::TensorProto::UINT8, torch::kByte},      {onnx::TensorProto::BOOL, torch::kBool},
  };
  return pairs;
}

template <typename T>
torch::Tensor from_values(const std::vector<T>& values, torch::ScalarType type, const std::vector<int64_t>& dims) {
  auto count = static_cast<int64_t>(values.size());
  return torch::from_blob(const_cast<T*>(values.data()), {count}, type).clone().reshape(dims);
}

}  // namespace

torch::ScalarType to_torch(int32_t onnx_type, const std::string& where) {
  for (const auto& pair : type_pairs()) {
    if (pair.onnx == onnx_type) return pair.torch;
  }
  const std::string& name = onnx::TensorProto::DataType_Name(static_cast<onnx::TensorProto::DataType>(onnx_type));
  fail("{}: element type {} is not supported (float, double, float16, bfloat16, int64, int32, int16, int8, "
       "uint8 and bool are)",
       where, name.empty() ? std::to_string(onnx_type) : name);
}

int32_t to_onnx(torch::ScalarType type, const std::string& where) {
  for (const auto& pair : type_pairs()) {
    if (pair.torch == type) return pair.onnx;
  }
  fail("{}: torch type {} has no ONNX element type", where, c10::toString(type));
}

torch::Tensor from_proto(const onnx::TensorProto& proto, const std::string& where) {
  if (proto.data_location() == onnx::TensorProto::EXTERNAL) {
    fail("{}: tensor {} keeps its data in an external file, which is not supported; save the model "
         "with its weights inside (onnx.save(model, path, save_as_external_data=False))",
         where, proto.name());
  }
  torch::ScalarType type = to_torch(proto.data_type(), where + ": tensor " + proto.name());
  std::vector<int64_t> dims(proto.dims().begin(), proto.dims().end());
  const int64_t count = checked_element_count(dims, fmt::format("{}: tensor {}", where, proto.name()));
  auto wrong_size = [&](int64_t got) {
    fail("{}: tensor {} of shape {} holds {} values, expected {}", where, proto.name(), shape_text(dims), got,
         count);
  };
  if (proto.has_raw_data()) {
    const std::string& raw = proto.raw_data();
    auto element = static_cast<int64_t>(c10::elementSize(type));
    if (static_cast<int64_t>(raw.size()) != count * element) wrong_size(static_cast<int64_t>(raw.size()) / element);
    torch::Tensor tensor = torch::empty(dims, type);
    if (!raw.empty()) std::memcpy(tensor.data_ptr(), raw.data(), raw.size());
    return tensor;
  }
  auto check = [&](int64_t got) {
    if (got != count) wrong_size(got);
  };
  switch (proto.data_type()) {
    case onnx::TensorProto::FLOAT:
      check(proto.float_data_size());
      return from_values(std::vector<float>(proto.float_data().begin(), proto.float_data().end()), type, dims);
    case onnx::TensorProto::DOUBLE:
      check(proto.double_data_size());
      return from_values(std::vector<double>(proto.double_data().begin(), proto.double_data().end()), type, dims);
    case onnx::TensorProto::INT64:
      check(proto.int64_data_size());
      return from_values(std::vector<int64_t>(proto.int64_data().begin(), proto.int64_data().end()), type, dims);
    case onnx::TensorProto::FLOAT16:
    case onnx::TensorProto::BFLOAT16: {
      // int32_data holds the 16-bit patterns.
      check(proto.int32_data_size());
      std::vector<int16_t> bits;
      for (int32_t v : proto.int32_data()) bits.push_back(static_cast<int16_t>(static_cast<uint16_t>(v)));
      return from_values(bits, torch::kShort, dims).view(type);
    }
    default: {  // int32, int16, int8, uint8, bool: values in int32_data
      check(proto.int32_data_size());
      std::vector<int32_t> values(proto.int32_data().begin(), proto.int32_data().end());
      return from_values(values, torch::kInt, dims).to(type);
    }
  }
}

void to_proto(const torch::Tensor& tensor, const std::string& name, onnx::TensorProto* proto) {
  torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
  proto->set_name(name);
  proto->set_data_type(to_onnx(t.scalar_type(), "tensor " + name));
  for (int64_t d : t.sizes()) proto->add_dims(d);
  proto->set_raw_data(std::string(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size()));
}

}  // namespace kd::io::onnx_tensor
