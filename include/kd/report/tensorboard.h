// TensorBoard event files, so a run can be watched in the tool users already have:
// DIR/<run>/events.out.tfevents.<time>.<host>, one run per model (and fold), the
// same tags in each so TensorBoard overlays the models in one chart.
//
// Format: TFRecord (uint64 length, masked CRC-32C of the length, the bytes, masked
// CRC-32C of the bytes) of tensorflow.Event messages: wall_time (1, double), step (2,
// int64), file_version (3, "brain.Event:2", first record) or summary (5) holding
// Summary.Value {tag (1), simple_value (2, float)}. Those few fields are encoded by
// hand: Debian ships no TensorFlow .proto files, and generated code for six fields
// would cost a protoc step in the build. tests/report/tensorboard_test.cpp parses the
// files back with protobuf from tests/fixtures/tensorboard_event.proto.
//
//   write_tensorboard_events("runs/x/tensorboard", {{"student", "val_accuracy", 1, 0.91}});
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kd::report {

struct Scalar {
  std::string run;   // sub-folder: "student", "student/fold-2"
  std::string tag;   // "val_accuracy"
  int64_t step = 0;  // the epoch
  double value = 0;
};

// Replaces DIR with one event file per run. Returns the files written.
std::vector<std::filesystem::path> write_tensorboard_events(const std::filesystem::path& dir,
                                                            const std::vector<Scalar>& scalars);

// CRC-32C (Castagnoli), and TFRecord's masked form of it.
uint32_t crc32c(const std::string& bytes);
uint32_t masked_crc32c(const std::string& bytes);

}  // namespace kd::report
