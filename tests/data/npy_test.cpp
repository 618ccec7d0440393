#include "kd/data/npy.h"

#include <gtest/gtest.h>

#include "data/python_helper.h"
#include "kd/util/fs.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using kd::data::read_npy;
using kd::data::read_npz;
using kd::data::write_npy;

#define KD_REQUIRE_NUMPY() \
  if (!kd::test::python_has("numpy")) KD_PEER_MISSING("/usr/bin/python3 has no numpy")

// Runs `body` in Python after `import numpy as np` with `d` = the folder; fails the test on error.
void numpy_run(const kd::test::TempDir& dir, const std::string& body) {
  const auto result =
      kd::test::run_python("import numpy as np, os\nd = '" + dir.path().string() + "/'\n" + body);
  ASSERT_EQ(result.status, 0) << result.output;
}

// The values every fixture holds: -6 .. 5 times 1.5, shape [3, 4] (exact in every float type).
torch::Tensor reference(torch::ScalarType dtype) {
  const torch::Tensor values = torch::arange(-6, 6, torch::kFloat64).reshape({3, 4});
  return (dtype == torch::kFloat16 || dtype == torch::kFloat32 || dtype == torch::kFloat64 ? values * 1.5
                                                                                           : values)
      .to(dtype);
}

TEST(Npy, ReadsWhatNumpyWrites) {
  KD_REQUIRE_NUMPY();
  kd::test::TempDir dir;
  numpy_run(dir, R"(
a = np.arange(-6, 6).reshape(3, 4)
for name in ['<f2', '<f4', '<f8', '>f4', '>f8']:
    np.save(d + name[1:] + ('be' if name[0] == '>' else '') + '.npy', (a * 1.5).astype(name))
for name in ['<i2', '<i4', '<i8', '|i1', '>i2', '>i4', '>i8']:
    np.save(d + name[1:] + ('be' if name[0] == '>' else '') + '.npy', a.astype(name))
)");
  const std::vector<std::pair<std::string, torch::ScalarType>> cases = {
      {"f2", torch::kFloat16},   {"f4", torch::kFloat32}, {"f8", torch::kFloat64}, {"f4be", torch::kFloat32},
      {"f8be", torch::kFloat64}, {"i2", torch::kInt16},   {"i4", torch::kInt32},   {"i8", torch::kInt64},
      {"i1", torch::kInt8},      {"i2be", torch::kInt16}, {"i4be", torch::kInt32}, {"i8be", torch::kInt64}};
  for (const auto& [name, dtype] : cases) {
    const torch::Tensor tensor = read_npy(dir / (name + ".npy"));
    EXPECT_EQ(tensor.scalar_type(), dtype) << name;
    EXPECT_TRUE(torch::equal(tensor, reference(dtype))) << name << "\n" << tensor;
  }
}

TEST(Npy, ReadsBytesBoolsAndWidenedUnsigned) {
  KD_REQUIRE_NUMPY();
  kd::test::TempDir dir;
  numpy_run(dir, R"(
np.save(d + 'u1.npy', np.array([0, 1, 127, 128, 255], dtype=np.uint8))
np.save(d + 'b1.npy', np.array([[True, False], [False, True]]))
np.save(d + 'u2.npy', np.array([0, 1, 65535], dtype='<u2'))
np.save(d + 'u4.npy', np.array([0, 4294967295], dtype='>u4'))
)");
  const torch::Tensor u1 = read_npy(dir / "u1.npy");
  EXPECT_EQ(u1.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(u1, torch::tensor({0, 1, 127, 128, 255}, torch::kUInt8)));
  const torch::Tensor b1 = read_npy(dir / "b1.npy");
  EXPECT_EQ(b1.scalar_type(), torch::kBool);
  EXPECT_TRUE(torch::equal(b1, torch::tensor({true, false, false, true}).reshape({2, 2})));
  const torch::Tensor u2 = read_npy(dir / "u2.npy");
  EXPECT_EQ(u2.scalar_type(), torch::kInt32);
  EXPECT_TRUE(torch::equal(u2, torch::tensor({0, 1, 65535}, torch::kInt32)));
  const torch::Tensor u4 = read_npy(dir / "u4.npy");
  EXPECT_EQ(u4.scalar_type(), torch::kInt64);
  EXPECT_TRUE(torch::equal(u4, torch::tensor({int64_t{0}, int64_t{4294967295}}, torch::kInt64)));
}

TEST(Npy, ReadsFormatVersions2And3ScalarsAndEmptyArrays) {
  KD_REQUIRE_NUMPY();
  kd::test::TempDir dir;
  numpy_run(dir, R"(
a = (np.arange(-6, 6).reshape(3, 4) * 1.5).astype('<f4')
for v in [(1, 0), (2, 0), (3, 0)]:
    with open(d + 'v%d.npy' % v[0], 'wb') as f:
        np.lib.format.write_array(f, a, version=v)
np.save(d + 'scalar.npy', np.float64(2.5))
np.save(d + 'empty.npy', np.zeros((0, 3), dtype=np.int64))
)");
  for (const char* name : {"v1.npy", "v2.npy", "v3.npy"}) {
    EXPECT_TRUE(torch::equal(read_npy(dir / name), reference(torch::kFloat32))) << name;
  }
  const std::string v2 = kd::read_file(dir / "v2.npy");
  EXPECT_EQ(v2[6], 2);  // the fixture really is version 2.0
  const torch::Tensor scalar = read_npy(dir / "scalar.npy");
  EXPECT_EQ(scalar.dim(), 0);
  EXPECT_EQ(scalar.item<double>(), 2.5);
  EXPECT_EQ(read_npy(dir / "empty.npy").sizes(), (std::vector<int64_t>{0, 3}));
}

TEST(Npy, WriteReadsBackInNumpy) {
  KD_REQUIRE_NUMPY();
  kd::test::TempDir dir;
  const std::vector<std::pair<std::string, torch::ScalarType>> cases = {
      {"f4", torch::kFloat32}, {"f8", torch::kFloat64}, {"i8", torch::kInt64},
      {"i4", torch::kInt32},   {"u1", torch::kUInt8},   {"f2", torch::kFloat16}};
  for (const auto& [name, dtype] : cases) {
    torch::Tensor tensor = reference(dtype);
    if (dtype == torch::kUInt8) tensor = (reference(torch::kInt64) + 6).to(dtype);
    write_npy(dir / (name + ".npy"), tensor);
    EXPECT_TRUE(torch::equal(read_npy(dir / (name + ".npy")), tensor)) << name;
    EXPECT_EQ(kd::read_file(dir / (name + ".npy")).find('\n') + 1, 128u)
        << "data starts on a 64-byte boundary";
  }
  write_npy(dir / "b1.npy", torch::tensor({true, false, true}));
  write_npy(dir / "scalar.npy", torch::tensor(7.25, torch::kFloat64));
  write_npy(dir / "vector.npy", torch::arange(5, torch::kInt32));
  write_npy(dir / "strided.npy", torch::arange(12, torch::kFloat32).reshape({3, 4}).t());
  numpy_run(dir, R"(
a = np.arange(-6, 6).reshape(3, 4)
for name in ['f4', 'f8', 'f2']:
    x = np.load(d + name + '.npy')
    assert x.dtype == np.dtype(name) and np.array_equal(x, a * 1.5), (name, x)
for name in ['i8', 'i4']:
    x = np.load(d + name + '.npy')
    assert x.dtype == np.dtype(name) and np.array_equal(x, a), (name, x)
x = np.load(d + 'u1.npy'); assert x.dtype == np.uint8 and np.array_equal(x, a + 6), x
x = np.load(d + 'b1.npy'); assert x.dtype == np.bool_ and x.tolist() == [True, False, True], x
x = np.load(d + 'scalar.npy'); assert x.shape == () and x == 7.25, x
x = np.load(d + 'vector.npy'); assert x.shape == (5,) and x.tolist() == [0, 1, 2, 3, 4], x
x = np.load(d + 'strided.npy'); assert np.array_equal(x, np.arange(12, dtype=np.float32).reshape(3, 4).T), x
)");
}

TEST(Npy, ReadsNpzStoredAndCompressed) {
  KD_REQUIRE_NUMPY();
  kd::test::TempDir dir;
  numpy_run(dir, R"(
a = np.arange(-6, 6).reshape(3, 4)
np.savez(d + 'plain.npz', x=(a * 1.5).astype(np.float32), y=a.astype(np.int64))
np.savez_compressed(d + 'packed.npz', np.zeros(1000, dtype=np.float64), labels=np.array([3, 1, 2], dtype=np.uint8))
)");
  const auto plain = read_npz(dir / "plain.npz");
  ASSERT_EQ(plain.size(), 2u);
  EXPECT_TRUE(torch::equal(plain.at("x"), reference(torch::kFloat32)));
  EXPECT_TRUE(torch::equal(plain.at("y"), reference(torch::kInt64)));
  const auto packed = read_npz(dir / "packed.npz");
  ASSERT_EQ(packed.size(), 2u);
  EXPECT_TRUE(torch::equal(packed.at("arr_0"), torch::zeros({1000}, torch::kFloat64)));
  EXPECT_TRUE(torch::equal(packed.at("labels"), torch::tensor({3, 1, 2}, torch::kUInt8)));
}

TEST(Npy, BadMagic) {
  kd::test::TempDir dir;
  kd::write_file_atomic(dir / "x.npy", "PK\x03\x04 not numpy");
  KD_EXPECT_ERROR(
      read_npy(dir / "x.npy"),
      "x.npy: not a .npy file: expected magic 93 4e 55 4d 50 59 (\"\\x93NUMPY\"), found 50 4b 03 04 20 6e");
  kd::write_file_atomic(dir / "empty.npy", "");
  KD_EXPECT_ERROR(read_npy(dir / "empty.npy"),
                  "empty.npy: not a .npy file: expected magic 93 4e 55 4d 50 59 "
                  "(\"\\x93NUMPY\"), found an empty file");
}

// A .npy file with the given version byte and header text (v1 layout).
std::string npy_with_header(const std::string& header, char major = 1) {
  std::string out = "\x93NUMPY";
  out.push_back(major);
  out.push_back(0);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  return out + header;
}

TEST(Npy, HeaderNotADict) {
  kd::test::TempDir dir;
  kd::write_file_atomic(dir / "x.npy", npy_with_header("[1, 2, 3]\n"));
  KD_EXPECT_ERROR(
      read_npy(dir / "x.npy"),
      "x.npy: header is not the Python dict numpy writes: expected '{' at character 0 of \"[1, 2, 3]\"");
  kd::write_file_atomic(dir / "y.npy", npy_with_header("{'descr': '<f4', 'shape': (2, x)}\n"));
  KD_EXPECT_ERROR(read_npy(dir / "y.npy"),
                  "y.npy: header is not the Python dict numpy writes: expected a non-negative "
                  "integer in the shape at character 30");
}

TEST(Npy, HeaderMissingKey) {
  kd::test::TempDir dir;
  kd::write_file_atomic(dir / "x.npy", npy_with_header("{'descr': '<f4', 'fortran_order': False, }\n"));
  KD_EXPECT_ERROR(read_npy(dir / "x.npy"),
                  "x.npy: .npy header has no 'shape' key (found keys: \"descr\", "
                  "\"fortran_order\"), expected 'descr', 'fortran_order' and 'shape'");
}

TEST(Npy, UnsupportedVersion) {
  kd::test::TempDir dir;
  kd::write_file_atomic(dir / "x.npy", npy_with_header("{}", 4));
  KD_EXPECT_ERROR(read_npy(dir / "x.npy"),
                  "x.npy: .npy format version 4.0 is not supported, expected 1.0, 2.0 or 3.0");
}

TEST(Npy, UnsupportedDtypesAreNamed) {
  KD_REQUIRE_NUMPY();
  kd::test::TempDir dir;
  numpy_run(dir, R"(
np.save(d + 'complex.npy', np.zeros(3, dtype=np.complex64))
np.save(d + 'text.npy', np.array(['ab', 'cde']))
np.save(d + 'u8.npy', np.zeros(2, dtype=np.uint64))
np.save(d + 'object.npy', np.array([{'a': 1}, None], dtype=object), allow_pickle=True)
np.save(d + 'record.npy', np.zeros(2, dtype=[('x', '<f4'), ('y', '<i4')]))
)");
  KD_EXPECT_ERROR(read_npy(dir / "complex.npy"),
                  "complex.npy: unsupported dtype '<c8', expected one of |b1, |u1");
  KD_EXPECT_ERROR(read_npy(dir / "text.npy"), "text.npy: unsupported dtype '<U3'");
  KD_EXPECT_ERROR(read_npy(dir / "u8.npy"), "u8.npy: unsupported dtype '<u8'");
  KD_EXPECT_ERROR(read_npy(dir / "object.npy"),
                  "object.npy: dtype '|O' is an object array (Python objects), which cannot be read");
  KD_EXPECT_ERROR(read_npy(dir / "record.npy"),
                  "record.npy: structured dtype [('x', '<f4'), ('y', '<i4')] is not supported");
}

TEST(Npy, FortranOrderSuggestsAscontiguousarray) {
  KD_REQUIRE_NUMPY();
  kd::test::TempDir dir;
  numpy_run(dir, "np.save(d + 'f.npy', np.asfortranarray(np.arange(6.0).reshape(2, 3)))\n");
  KD_EXPECT_ERROR(read_npy(dir / "f.npy"),
                  "f.npy: array is in Fortran (column-major) order, expected C order; "
                  "save it with np.save(path, np.ascontiguousarray(a))");
}

TEST(Npy, DataShorterThanShapeAndTrailingBytes) {
  KD_REQUIRE_NUMPY();
  kd::test::TempDir dir;
  numpy_run(dir, "np.save(d + 'x.npy', np.zeros((3, 4), dtype=np.float32))\n");
  const std::string bytes = kd::read_file(dir / "x.npy");
  kd::write_file_atomic(dir / "short.npy", bytes.substr(0, bytes.size() - 8));
  KD_EXPECT_ERROR(
      read_npy(dir / "short.npy"),
      "short.npy: data shorter than the shape needs: shape (3, 4) of '<f4' needs 48 bytes, found 40");
  kd::write_file_atomic(dir / "long.npy", bytes + "xy");
  KD_EXPECT_ERROR(read_npy(dir / "long.npy"),
                  "long.npy: 2 trailing bytes after the data of shape (3, 4) of '<f4'");
  kd::write_file_atomic(dir / "cut.npy", bytes.substr(0, 40));
  KD_EXPECT_ERROR(read_npy(dir / "cut.npy"),
                  "cut.npy: truncated .npy header: expected 118 header bytes, found 30");
}

TEST(Npy, NpzEntryThatIsNotNpy) {
  KD_REQUIRE_NUMPY();
  kd::test::TempDir dir;
  numpy_run(dir, R"(
import io, zipfile
buffer = io.BytesIO(); np.save(buffer, np.zeros(2))
with zipfile.ZipFile(d + 'mixed.npz', 'w') as z:
    z.writestr('x.npy', buffer.getvalue())
    z.writestr('notes.txt', 'hello')
with zipfile.ZipFile(d + 'badnpy.npz', 'w', zipfile.ZIP_DEFLATED) as z:
    z.writestr('x.npy', b'not an array')
)");
  KD_EXPECT_ERROR(read_npz(dir / "mixed.npz"), "mixed.npz: entry \"notes.txt\" is not a .npy array");
  KD_EXPECT_ERROR(read_npz(dir / "badnpy.npz"), "badnpy.npz:x.npy: not a .npy file");
}

TEST(Npy, NpzThatIsNotAZip) {
  kd::test::TempDir dir;
  kd::write_file_atomic(dir / "x.npz", "just text, no zip here");
  KD_EXPECT_ERROR(read_npz(dir / "x.npz"), "x.npz: cannot open as a .npz (zip) archive: Not a zip archive");
  KD_EXPECT_ERROR(read_npz(dir / "missing.npz"), "missing.npz: .npz archive does not exist");
}

TEST(Npy, NpzCorruptEntry) {
  KD_REQUIRE_NUMPY();
  kd::test::TempDir dir;
  numpy_run(dir, "np.savez_compressed(d + 'c.npz', x=np.arange(1000.0))\n");
  std::string bytes = kd::read_file(dir / "c.npz");
  bytes[200] = static_cast<char>(bytes[200] ^ 0x55);  // inside the deflated data of the only entry
  kd::write_file_atomic(dir / "c.npz", bytes);
  KD_EXPECT_ERROR(read_npz(dir / "c.npz"), "c.npz:x.npy: corrupt entry");
}

TEST(Npy, WriteRefusesUnsupportedDtypes) {
  kd::test::TempDir dir;
  KD_EXPECT_ERROR(write_npy(dir / "c.npy", torch::zeros({2}, torch::kComplexFloat)),
                  "c.npy: cannot write a ComplexFloat tensor as .npy");
  EXPECT_FALSE(fs::exists(dir / "c.npy"));
}

}  // namespace
