// IDX arrays, the format of MNIST and Fashion-MNIST (raw or gzipped).
//
// Layout: magic 0x00 0x00 <type> <ndims>, then ndims big-endian uint32 dims, then
// the values in C order, big-endian. Types: 0x08 uint8, 0x09 int8, 0x0B int16,
// 0x0C int32, 0x0D float32, 0x0E float64; the tensor gets that dtype and those dims.
//
//   auto images = kd::data::read_idx("train-images-idx3-ubyte.gz");  // uint8 [60000, 28, 28]
#pragma once

#include <torch/torch.h>

#include <filesystem>

#include "kd/data/array_header.h"

namespace kd::data {

// Reads an IDX file, gunzipping it when it starts with the gzip magic. kd::Error
// naming the file on a wrong magic, an unknown type code, truncated or trailing data.
torch::Tensor read_idx(const std::filesystem::path& path);

// The shape and value size of an IDX file (gzipped or not) from its header alone.
ArrayHeader read_idx_header(const std::filesystem::path& path);

// Writes `tensor` (uint8, int8, int16, int32, float32 or float64) as IDX, atomically;
// gzipped when the name ends in ".gz".
void write_idx(const std::filesystem::path& path, const torch::Tensor& tensor);

}  // namespace kd::data
