// What `kdistill inspect MODEL` prints for any loadable model (.kdm, TorchScript, ONNX, TF.js):
// format, task and classes, preprocessing, input and output shapes, parameters, MACs per example
// one line per layer, and the taps feature losses can read (name and shape).
//
//   auto loaded = load_model("student.onnx");
//   std::cout << describe_model("student.onnx", loaded);
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kd/io/model_file.h"

namespace kd::io {

// `input_shape` (one example, no batch dim) is needed when the file does not store it
// (a plain TorchScript or ONNX file); kd::Error naming the file when it is missing or the model
// does not run on it.
nlohmann::json describe_model_json(const std::string& path, LoadedModel& loaded,
                                   std::vector<int64_t> input_shape = {});
std::string describe_model(const std::string& path, LoadedModel& loaded, std::vector<int64_t> input_shape = {});

// "1,28,28" or "[1, 28, 28]" -> {1, 28, 28}; kd::Error naming `field` otherwise.
std::vector<int64_t> parse_shape(const std::string& text, const std::string& field);

}  // namespace kd::io
