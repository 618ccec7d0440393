#include "kd/util/strings.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kd/util/fs.h"
#include "test_util.h"

namespace kd {
namespace {

TEST(Strings, ParseNumbers) {
  EXPECT_DOUBLE_EQ(*parse_double(" 1.5e2 "), 150.0);
  EXPECT_FALSE(parse_double("1.5x"));
  EXPECT_FALSE(parse_double(""));
  // The from_chars fast path and strtod agree: a leading '+', hexadecimal, out of range.
  EXPECT_DOUBLE_EQ(*parse_double("+2.5"), 2.5);
  EXPECT_FALSE(parse_double("+-1"));
  EXPECT_FALSE(parse_double("+"));
  EXPECT_DOUBLE_EQ(*parse_double("0x10"), 16.0);
  EXPECT_FALSE(parse_double("1e999"));
  EXPECT_DOUBLE_EQ(*parse_double("1e-400"), 0.0);
  double value = 0;
  EXPECT_TRUE(parse_decimal("-inf", value) && std::isinf(value) && value < 0);
  EXPECT_TRUE(parse_decimal(".5", value) && value == 0.5);
  EXPECT_FALSE(parse_decimal("0x10", value));
  EXPECT_FALSE(parse_decimal("1e999", value));
  EXPECT_FALSE(parse_decimal(" 1", value));  // the caller trims
  EXPECT_EQ(*parse_int("-42"), -42);
  EXPECT_FALSE(parse_int("4.2"));
}

TEST(Strings, NearestSuggestsTyposOnly) {
  std::vector<std::string> keys = {"epochs", "batch_size", "optimizer"};
  EXPECT_EQ(*nearest("epoch", keys), "epochs");
  EXPECT_EQ(*nearest("batchsize", keys), "batch_size");
  EXPECT_FALSE(nearest("temperature", keys));
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
}

TEST(Files, AtomicWriteAndGzipRead) {
  test::TempDir dir;
  auto path = dir / "out/file.txt";
  write_file_atomic(path, "hello");
  EXPECT_EQ(read_file(path), "hello");
  EXPECT_EQ(read_file_maybe_gz(path), "hello");
  int status = std::system(("printf 'zipped' | gzip > " + (dir / "z.gz").string()).c_str());
  ASSERT_EQ(status, 0);
  EXPECT_EQ(read_file_maybe_gz(dir / "z.gz"), "zipped");
  write_file_atomic(dir / "bad.gz", std::string("\x1f\x8b\x08\x00\x00", 5));
  KD_EXPECT_ERROR(read_file_maybe_gz(dir / "bad.gz"), "bad.gz: ");
  KD_EXPECT_ERROR(read_file(dir / "missing.txt"), "missing.txt: file does not exist");
}

TEST(Files, FailedWriterLeavesNothingBehind) {
  test::TempDir dir;
  auto path = dir / "result.json";
  write_file_atomic(path, "old");
  EXPECT_THROW(write_atomic_with(path, [](const std::filesystem::path& tmp) {
                 write_file_atomic(tmp, "half");
                 throw std::runtime_error("writer died");
               }),
               std::runtime_error);
  EXPECT_EQ(read_file(path), "old");
  int files = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 1);
}

}  // namespace
}  // namespace kd
