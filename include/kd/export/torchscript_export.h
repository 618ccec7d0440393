// Exports a zoo model as a TorchScript file that PyTorch's torch.jit.load (Python) and
// torch::jit::load (C++) run, train and save again.
//
// The file holds a module of class "Student" with one attribute per state() tensor, named with
// dots replaced by underscores ("layer1_0.conv1.weight" -> layer1_0_conv1_weight; parameters stay
// parameters, batch-norm statistics are buffers), a `forward` compiled from
// kd::models::torchscript_source, and the spec as the extra file "kdistill/spec.json"
// (torch.jit.load(path, _extra_files={"kdistill/spec.json": ""})). The module is saved in eval mode.
//
//   export_torchscript(*model, spec, {1, 28, 28}, 10, "out/student.pt");
//   # python: torch.jit.load("out/student.pt")(torch.randn(8, 1, 28, 28)).shape == (8, 10)
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "kd/io/model_file.h"
#include "kd/models/model.h"
#include "kd/models/zoo.h"

namespace kd::exports {

// The name of the extra file holding to_json(spec).
inline constexpr const char* kTorchScriptSpecFile = "kdistill/spec.json";

// Writes `model` (built from `spec` for `input_shape` and `outputs`) to `path` atomically. kd::Error when
// the model's state does not match the spec (names or shapes) or the file cannot be written.
// With `info`, the file also carries it as the extra file "kdistill.json" (what io::load_model reads:
// task, class names, preprocessing).
void export_torchscript(models::Model& model, const models::ZooSpec& spec,
                        const std::vector<int64_t>& input_shape, int64_t outputs,
                        const std::filesystem::path& path, const io::ModelInfo* info = nullptr);

}  // namespace kd::exports
