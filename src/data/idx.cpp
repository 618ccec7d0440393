#include "kd/data/idx.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <zlib.h>

#include <cstring>
#include <vector>

#include "byte_order.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/strings.h"

namespace kd::data {

namespace fs = std::filesystem;

namespace {

struct IdxType {
  uint8_t code;
  torch::ScalarType dtype;
  size_t width;
  const char* name;
};

const std::vector<IdxType>& idx_types() {
  static const std::vector<IdxType> types = {
      {0x08, torch::kUInt8, 1, "uint8"},     {0x09, torch::kInt8, 1, "int8"},
      {0x0B, torch::kInt16, 2, "int16"},     {0x0C, torch::kInt32, 4, "int32"},
      {0x0D, torch::kFloat32, 4, "float32"}, {0x0E, torch::kFloat64, 8, "float64"},
  };
  return types;
}

std::string hex_bytes(const std::string& bytes, size_t count) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < std::min(count, bytes.size()); ++i) {
    parts.push_back(fmt::format("{:02x}", static_cast<unsigned char>(bytes[i])));
  }
  return join(parts, " ");
}

uint32_t read_big_endian_u32(const std::string& bytes, size_t offset) {
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) value = (value << 8) | static_cast<unsigned char>(bytes[offset + i]);
  return value;
}

void append_big_endian_u32(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((value >> shift) & 0xff));
}

std::string gzip(const std::string& raw, const fs::path& path) {
  z_stream stream{};
  // 16 + MAX_WBITS asks zlib for a gzip wrapper rather than a bare zlib stream.
  if (deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    fail("{}: cannot start gzip encoder", path.string());
  }
  std::string out(deflateBound(&stream, static_cast<uLong>(raw.size())) + 64, '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  stream.avail_in = static_cast<uInt>(raw.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  const int status = deflate(&stream, Z_FINISH);
  deflateEnd(&stream);
  if (status != Z_STREAM_END) fail("{}: gzip compression failed (zlib status {})", path.string(), status);
  out.resize(stream.total_out);
  return out;
}

// The header at the start of `bytes`: the type, the dims and the data's size in bytes (-1 past 2^63).
struct IdxLayout {
  const IdxType* type;
  std::vector<int64_t> dims;
  size_t header_size;
  int64_t data_size;
};

IdxLayout parse_idx_header(const std::string& bytes, const std::string& name) {
  if (bytes.empty()) fail("{}: empty file, expected an IDX header (magic 00 00 <type> <ndims>)", name);
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0) {
    fail("{}: not an IDX file: expected magic 00 00 <type> <ndims>, found {}", name, hex_bytes(bytes, 4));
  }
  const auto code = static_cast<uint8_t>(bytes[2]);
  const IdxType* type = nullptr;
  for (const auto& candidate : idx_types()) {
    if (candidate.code == code) type = &candidate;
  }
  if (type == nullptr) {
    fail(
        "{}: unknown IDX type code 0x{:02x}, expected 0x08 (uint8), 0x09 (int8), 0x0b (int16), "
        "0x0c (int32), 0x0d (float32) or 0x0e (float64)",
        name, code);
  }
  const size_t ndims = static_cast<unsigned char>(bytes[3]);
  const size_t header_size = 4 + 4 * ndims;
  if (bytes.size() < header_size) {
    fail("{}: truncated IDX header: {} dims need {} header bytes, found {}", name, ndims, header_size,
         bytes.size());
  }
  std::vector<int64_t> dims(ndims);
  int64_t data_size = static_cast<int64_t>(type->width);
  bool overflow = false;
  for (size_t i = 0; i < ndims; ++i) {
    dims[i] = read_big_endian_u32(bytes, 4 + 4 * i);
    overflow = overflow || __builtin_mul_overflow(data_size, dims[i], &data_size);
  }
  return {type, dims, header_size, overflow ? -1 : data_size};
}

// The tensor is a view of the decompressed buffer (no copy of the data): its deleter owns `holder`.
torch::Tensor parse_idx(const std::shared_ptr<std::string>& holder, const fs::path& path) {
  std::string& bytes = *holder;
  const std::string name = path.string();
  const auto [type, dims, header_size, data_size] = parse_idx_header(bytes, name);
  const bool overflow = data_size < 0;
  const auto found = static_cast<int64_t>(bytes.size() - header_size);
  if (overflow || data_size > found) {
    fail("{}: truncated IDX data: expected {} bytes of {} for dims [{}], found {}", name,
         overflow ? std::string("more than 2^63") : std::to_string(data_size), type->name,
         fmt::join(dims, ", "), found);
  }
  if (data_size < found) {
    fail("{}: {} trailing bytes after the IDX data (dims [{}] of {} take {} bytes)", name, found - data_size,
         fmt::join(dims, ", "), type->name, data_size);
  }
  char* data = bytes.data() + header_size;
  if (detail::host_is_little_endian()) detail::swap_bytes(data, data_size / static_cast<int64_t>(type->width), type->width);
  return torch::from_blob(data, dims, [holder](void*) {}, torch::TensorOptions().dtype(type->dtype));
}

}  // namespace

torch::Tensor read_idx(const fs::path& path) {
  return parse_idx(std::make_shared<std::string>(read_file_maybe_gz(path)), path);
}

ArrayHeader read_idx_header(const fs::path& path) {
  IdxLayout layout = parse_idx_header(read_head_maybe_gz(path, 4 + 4 * 255), path.string());
  if (layout.data_size < 0) fail("{}: IDX dims [{}] hold more than 2^63 bytes", path.string(), fmt::join(layout.dims, ", "));
  return {layout.dims, static_cast<int64_t>(layout.type->width)};
}

void write_idx(const fs::path& path, const torch::Tensor& tensor) {
  const IdxType* type = nullptr;
  for (const auto& candidate : idx_types()) {
    if (candidate.dtype == tensor.scalar_type()) type = &candidate;
  }
  if (type == nullptr) {
    fail("{}: cannot write a {} tensor as IDX, expected uint8, int8, int16, int32, float32 or float64",
         path.string(), c10::toString(tensor.scalar_type()));
  }
  if (tensor.dim() > 255)
    fail("{}: IDX holds at most 255 dims, the tensor has {}", path.string(), tensor.dim());
  std::string out;
  out.push_back(0);
  out.push_back(0);
  out.push_back(static_cast<char>(type->code));
  out.push_back(static_cast<char>(tensor.dim()));
  for (int64_t size : tensor.sizes()) {
    if (size > static_cast<int64_t>(UINT32_MAX)) {
      fail("{}: dim {} does not fit an IDX header (at most 2^32 - 1)", path.string(), size);
    }
    append_big_endian_u32(out, static_cast<uint32_t>(size));
  }
  const torch::Tensor values = tensor.detach().to(torch::kCPU).contiguous();
  const size_t header_size = out.size();
  out.append(static_cast<const char*>(values.data_ptr()), values.numel() * type->width);
  if (detail::host_is_little_endian())
    detail::swap_bytes(out.data() + header_size, values.numel(), type->width);
  if (ends_with(to_lower(path.filename().string()), ".gz")) out = gzip(out, path);
  write_file_atomic(path, out);
}

}  // namespace kd::data
