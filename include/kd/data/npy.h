// NumPy arrays: .npy files (format versions 1.0, 2.0, 3.0) and .npz archives
// (np.savez and np.savez_compressed), so that users pass data straight from Python.
//
// dtypes read: |b1 (bool), |u1, |i1, i2, i4, i8, f2, f4, f8 in either byte order
// (big-endian is converted), and u2/u4 widened to int32/int64. C order only.
//
//   torch::Tensor x = kd::data::read_npy("x.npy");                  // e.g. float32 [N, D]
//   auto arrays = kd::data::read_npz("data.npz");                   // {"x": ..., "y": ...}
//   kd::data::write_npy("y.npy", logits);                           // readable by np.load
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <string>

#include "kd/data/array_header.h"

namespace kd::data {

// Reads a .npy file into a CPU tensor of the matching dtype and shape. kd::Error naming
// the file on a bad magic or header, an unsupported dtype, Fortran order, or data
// shorter or longer than the shape needs.
torch::Tensor read_npy(const std::filesystem::path& path);

// Writes `tensor` (float32, float64, float16, int64, int32, int16, int8, uint8 or bool)
// as a version 1.0 .npy file (2.0 if the header needs it), atomically.
void write_npy(const std::filesystem::path& path, const torch::Tensor& tensor);

// Every array of a .npz archive, keyed by its name without ".npy" (as np.load gives
// them). Stored and deflated entries; an entry that is not a .npy file is an error.
std::map<std::string, torch::Tensor> read_npz(const std::filesystem::path& path);

// The header of a .npy file, and of each array of a .npz archive (keyed as read_npz's), read without
// the data. kd::Error as read_npy's for a bad header.
ArrayHeader read_npy_header(const std::filesystem::path& path);
std::map<std::string, ArrayHeader> read_npz_headers(const std::filesystem::path& path);

}  // namespace kd::data
