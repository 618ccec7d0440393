#include "kd/data/idx.h"

#include <gtest/gtest.h>

#include "data/python_helper.h"
#include "kd/util/fs.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using kd::data::read_idx;
using kd::data::write_idx;

const fs::path kFashion = "/usr/share/datasets/fashion-mnist";

std::string bytes_of(std::initializer_list<int> values) {
  std::string out;
  for (int v : values) out.push_back(static_cast<char>(v));
  return out;
}

// The decompressed bytes of a Fashion-MNIST file; skips the test if the data set is not installed.
#define KD_FASHION_BYTES(var, name)                                                             \
  if (!fs::exists(kFashion / (name))) KD_PEER_MISSING("dataset-fashion-mnist is not installed"); \
  const std::string var = kd::read_file_maybe_gz(kFashion / (name))

TEST(Idx, WritesBigEndianHeaderAndValues) {
  kd::test::TempDir dir;
  write_idx(dir / "a.idx", torch::tensor({1, -2, 0x01020304}, torch::kInt32));
  // Magic 00 00, type 0x0C (int32), 1 dim; dim 3; values big-endian.
  EXPECT_EQ(kd::read_file(dir / "a.idx"),
            bytes_of({0, 0, 0x0c, 1, 0, 0, 0, 3, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe, 1, 2, 3, 4}));
}

TEST(Idx, RoundTripsEveryType) {
  kd::test::TempDir dir;
  const torch::Tensor values = torch::arange(-12, 12).reshape({2, 3, 4});
  for (auto dtype : {torch::kInt8, torch::kInt16, torch::kInt32, torch::kFloat32, torch::kFloat64}) {
    // Integers from -36 to 33; the float types get exact eighths.
    const bool floating = dtype == torch::kFloat32 || dtype == torch::kFloat64;
    const torch::Tensor tensor = floating ? (values * 3).to(dtype) / 8 : (values * 3).to(dtype);
    write_idx(dir / "t.idx", tensor);
    const torch::Tensor back = read_idx(dir / "t.idx");
    EXPECT_EQ(back.scalar_type(), dtype);
    EXPECT_EQ(back.sizes(), tensor.sizes());
    EXPECT_TRUE(torch::equal(back, tensor)) << c10::toString(dtype);
  }
  const torch::Tensor bytes = torch::arange(0, 256).to(torch::kUInt8).reshape({16, 16});
  write_idx(dir / "u.idx", bytes);
  EXPECT_TRUE(torch::equal(read_idx(dir / "u.idx"), bytes));
}

TEST(Idx, RoundTripsGzipAndEmptyDims) {
  kd::test::TempDir dir;
  const torch::Tensor tensor = torch::linspace(-1, 1, 60, torch::kFloat64).reshape({5, 12});
  write_idx(dir / "t-idx2.gz", tensor);
  const std::string raw = kd::read_file(dir / "t-idx2.gz");
  EXPECT_EQ(static_cast<unsigned char>(raw[0]), 0x1f);  // really gzipped
  EXPECT_EQ(static_cast<unsigned char>(raw[1]), 0x8b);
  EXPECT_TRUE(torch::equal(read_idx(dir / "t-idx2.gz"), tensor));

  write_idx(dir / "empty.idx", torch::zeros({0, 7}, torch::kUInt8));
  EXPECT_EQ(read_idx(dir / "empty.idx").sizes(), (std::vector<int64_t>{0, 7}));
}

TEST(Idx, ReadsFashionMnist) {
  if (!fs::exists(kFashion / "train-labels-idx1-ubyte.gz"))
    KD_PEER_MISSING("dataset-fashion-mnist is not installed");
  const torch::Tensor train_images = read_idx(kFashion / "train-images-idx3-ubyte.gz");
  const torch::Tensor train_labels = read_idx(kFashion / "train-labels-idx1-ubyte.gz");
  const torch::Tensor test_images = read_idx(kFashion / "t10k-images-idx3-ubyte.gz");
  const torch::Tensor test_labels = read_idx(kFashion / "t10k-labels-idx1-ubyte.gz");
  EXPECT_EQ(train_images.sizes(), (std::vector<int64_t>{60000, 28, 28}));
  EXPECT_EQ(train_images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(train_labels.sizes(), (std::vector<int64_t>{60000}));
  EXPECT_EQ(test_images.sizes(), (std::vector<int64_t>{10000, 28, 28}));
  EXPECT_EQ(test_labels.sizes(), (std::vector<int64_t>{10000}));
  // Fashion-MNIST's first training items are an ankle boot (9) and a T-shirt (0).
  EXPECT_EQ(train_labels[0].item<int64_t>(), 9);
  EXPECT_EQ(train_labels[1].item<int64_t>(), 0);
  // Every class has 6000 training and 1000 test items.
  EXPECT_TRUE(
      torch::equal(torch::bincount(train_labels.to(torch::kInt64)), torch::full({10}, 6000, torch::kLong)));
  EXPECT_TRUE(
      torch::equal(torch::bincount(test_labels.to(torch::kInt64)), torch::full({10}, 1000, torch::kLong)));

  // Independent parse with Python's gzip module: first labels and the sum of every pixel.
  const auto python = kd::test::run_python(R"(
import gzip, struct
d = '/usr/share/datasets/fashion-mnist/'
for split in ['train', 't10k']:
    labels = gzip.open(d + split + '-labels-idx1-ubyte.gz').read()[8:]
    images = gzip.open(d + split + '-images-idx3-ubyte.gz').read()[16:]
    print(' '.join(str(b) for b in labels[:10]), sum(images))
)");
  if (python.status != 0) KD_PEER_MISSING("/usr/bin/python3 failed: " << python.output);
  auto line = [](const torch::Tensor& labels, const torch::Tensor& images) {
    std::string text;
    for (int i = 0; i < 10; ++i) text += std::to_string(labels[i].item<int64_t>()) + " ";
    return text + std::to_string(images.sum(torch::kLong).item<int64_t>()) + "\n";
  };
  EXPECT_EQ(python.output, line(train_labels, train_images) + line(test_labels, test_images));
}

TEST(Idx, EmptyFile) {
  kd::test::TempDir dir;
  kd::write_file_atomic(dir / "e.idx", "");
  KD_EXPECT_ERROR(read_idx(dir / "e.idx"), "e.idx: empty file, expected an IDX header");
}

TEST(Idx, MissingFile) {
  kd::test::TempDir dir;
  KD_EXPECT_ERROR(read_idx(dir / "nope.idx"), "nope.idx: file does not exist");
}

TEST(Idx, WrongMagicSaysWhatWasFound) {
  kd::test::TempDir dir;
  kd::write_file_atomic(dir / "text.idx", "hello world");
  KD_EXPECT_ERROR(read_idx(dir / "text.idx"),
                  "text.idx: not an IDX file: expected magic 00 00 <type> <ndims>, found 68 65 6c 6c");
  kd::write_file_atomic(dir / "short.idx", bytes_of({0, 0}));
  KD_EXPECT_ERROR(read_idx(dir / "short.idx"), "expected magic 00 00 <type> <ndims>, found 00 00");
}

TEST(Idx, UnknownTypeCode) {
  kd::test::TempDir dir;
  kd::write_file_atomic(dir / "t.idx", bytes_of({0, 0, 0x0a, 1, 0, 0, 0, 1, 7}));
  KD_EXPECT_ERROR(read_idx(dir / "t.idx"), "t.idx: unknown IDX type code 0x0a, expected 0x08 (uint8)");
}

TEST(Idx, TruncatedHeader) {
  kd::test::TempDir dir;
  kd::write_file_atomic(dir / "t.idx", bytes_of({0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0}));
  KD_EXPECT_ERROR(read_idx(dir / "t.idx"),
                  "t.idx: truncated IDX header: 3 dims need 16 header bytes, found 10");
}

TEST(Idx, TruncatedRealLabels) {
  KD_FASHION_BYTES(labels, "train-labels-idx1-ubyte.gz");
  kd::test::TempDir dir;
  kd::write_file_atomic(dir / "labels.idx", labels.substr(0, 8 + 100));
  KD_EXPECT_ERROR(
      read_idx(dir / "labels.idx"),
      "labels.idx: truncated IDX data: expected 60000 bytes of uint8 for dims [60000], found 100");
}

TEST(Idx, TruncatedRealImages) {
  KD_FASHION_BYTES(images, "t10k-images-idx3-ubyte.gz");
  kd::test::TempDir dir;
  kd::write_file_atomic(dir / "images.idx", images.substr(0, images.size() - 1));
  KD_EXPECT_ERROR(
      read_idx(dir / "images.idx"),
      "truncated IDX data: expected 7840000 bytes of uint8 for dims [10000, 28, 28], found 7839999");
}

TEST(Idx, TruncatedGzip) {
  if (!fs::exists(kFashion / "t10k-labels-idx1-ubyte.gz"))
    KD_PEER_MISSING("dataset-fashion-mnist is not installed");
  const std::string gz = kd::read_file(kFashion / "t10k-labels-idx1-ubyte.gz");
  kd::test::TempDir dir;
  kd::write_file_atomic(dir / "labels.gz", gz.substr(0, gz.size() / 2));
  KD_EXPECT_ERROR(read_idx(dir / "labels.gz"), "labels.gz: truncated gzip data");
}

TEST(Idx, TrailingBytes) {
  KD_FASHION_BYTES(labels, "t10k-labels-idx1-ubyte.gz");
  kd::test::TempDir dir;
  kd::write_file_atomic(dir / "labels.idx", labels + "abc");
  KD_EXPECT_ERROR(read_idx(dir / "labels.idx"),
                  "labels.idx: 3 trailing bytes after the IDX data (dims [10000] of uint8 take 10000 bytes)");
}

TEST(Idx, WriteRefusesTypesIdxLacks) {
  kd::test::TempDir dir;
  KD_EXPECT_ERROR(
      write_idx(dir / "l.idx", torch::zeros({3}, torch::kInt64)),
      "l.idx: cannot write a Long tensor as IDX, expected uint8, int8, int16, int32, float32 or float64");
  EXPECT_FALSE(fs::exists(dir / "l.idx"));
}

}  // namespace
