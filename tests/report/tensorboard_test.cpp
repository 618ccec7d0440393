// TensorBoard event files: CRC-32C against its published check value, and the files parsed
// back by Python's protobuf with TensorFlow's Event definition (tests/fixtures/tensorboard_event.proto),
// the TFRecord CRCs checked by an independent bitwise CRC-32C in Python.
#include <gtest/gtest.h>

#include "data/python_helper.h"
#include "kd/report/tensorboard.h"
#include "test_util.h"

namespace kd::report {
namespace {

TEST(TensorBoard, Crc32cCheckValues) {
  // The CRC-32C check value (RFC 3720, B.4; "CRC catalogue": CRC-32/ISCSI check = 0xE3069283).
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  // RFC 3720 B.4: 32 bytes of zeros -> 0x8A9136AA.
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(""), 0u);
}

TEST(TensorBoard, EventsParseBackWithTheProtobufDefinitions) {
  test::TempDir dir;
  auto files = write_tensorboard_events(dir / "tb", {{"student", "val_accuracy", 1, 0.5},
                                                     {"student", "val_accuracy", 2, 0.75},
                                                     {"student", "train_loss", 2, 1.25},
                                                     {"teacher/fold-2", "train_loss", 3, -2.0}});
  ASSERT_EQ(files.size(), 2u);
  EXPECT_NE(files[0].string().find("tb/student/events.out.tfevents."), std::string::npos);
  ASSERT_EQ(system(("protoc --proto_path=" + std::string(KD_SOURCE_DIR) + "/tests/fixtures --python_out=" +
                    dir.path().string() + " tensorboard_event.proto").c_str()),
            0)
      << "protoc (package protobuf-compiler) is needed";
  std::string script = R"(
import struct, sys
sys.path.insert(0, ")" + dir.path().string() + R"(")
import tensorboard_event_pb2 as pb

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF

for path in [")" + files[0].string() + "\", \"" + files[1].string() + R"("]:
    raw = open(path, "rb").read()
    pos, events = 0, []
    while pos < len(raw):
        header = raw[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", raw[pos + 8:pos + 12])
        assert length_crc == masked(header), "length crc"
        data = raw[pos + 12:pos + 12 + length]
        (data_crc,) = struct.unpack("<I", raw[pos + 12 + length:pos + 16 + length])
        assert data_crc == masked(data), "data crc"
        pos += 16 + length
        e = pb.Event()
        e.ParseFromString(data)
        events.append(e)
    assert events[0].file_version == "brain.Event:2", events[0]
    assert events[0].wall_time > 1.6e9
    for e in events[1:]:
        for v in e.summary.value:
            print(path.split("/tb/")[1].rsplit("/", 1)[0], e.step, v.tag, v.simple_value)
)";
  auto r = test::run_python(script);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output,
            "student 1 val_accuracy 0.5\n"
            "student 2 val_accuracy 0.75\n"
            "student 2 train_loss 1.25\n"
            "teacher/fold-2 3 train_loss -2.0\n");
}

}  // namespace
}  // namespace kd::report
