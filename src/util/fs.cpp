#include "kd/util/fs.h"

#include <zlib.h>

#include <fstream>
#include <random>
#include <sstream>

#include "kd/util/error.h"

namespace kd {

namespace fs = std::filesystem;

void require_file(const fs::path& path, const std::string& what) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("{}: {} does not exist", path.string(), what);
  if (fs::is_directory(path, ec)) fail("{}: {} is a directory, expected a file", path.string(), what);
}

std::string read_file(const fs::path& path) {
  require_file(path, "file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open for reading", path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail("{}: read error", path.string());
  return buffer.str();
}

std::string read_file_maybe_gz(const fs::path& path) {
  std::string raw = read_file(path);
  if (raw.size() < 2 || static_cast<unsigned char>(raw[0]) != 0x1f ||
      static_cast<unsigned char>(raw[1]) != 0x8b) {
    return raw;
  }
  z_stream stream{};
  if (inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK) fail("{}: cannot start gzip decoder", path.string());
  stream.next_in = reinterpret_cast<Bytef*>(raw.data());
  stream.avail_in = static_cast<uInt>(raw.size());
  std::string out;
  char chunk[1 << 16];
  int status = Z_OK;
  while (status != Z_STREAM_END) {
    stream.next_out = reinterpret_cast<Bytef*>(chunk);
    stream.avail_out = sizeof(chunk);
    status = inflate(&stream, Z_NO_FLUSH);
    if (status != Z_OK && status != Z_STREAM_END) {
      inflateEnd(&stream);
      fail("{}: corrupt or truncated gzip data (zlib: {})", path.string(),
           stream.msg ? stream.msg : "unexpected end of data");
    }
    out.append(chunk, sizeof(chunk) - stream.avail_out);
    if (status == Z_OK && stream.avail_in == 0 && stream.avail_out != 0) {
      inflateEnd(&stream);
      fail("{}: truncated gzip data", path.string());
    }
  }
  inflateEnd(&stream);
  return out;
}

void write_atomic_with(const fs::path& path, const std::function<void(const fs::path&)>& write) {
  fs::path parent = path.parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) fail("{}: cannot create folder {}: {}", path.string(), parent.string(), ec.message());
  }
  std::random_device device;
  fs::path temporary = path;
  temporary += ".tmp" + std::to_string(device() % 1000000);
  try {
    write(temporary);
  } catch (...) {
    std::error_code ec;
    fs::remove(temporary, ec);
    throw;
  }
  std::error_code ec;
  fs::rename(temporary, path, ec);
  if (ec) {
    fs::remove(temporary, ec);
    fail("{}: cannot write: {}", path.string(), ec.message());
  }
}

void write_file_atomic(const fs::path& path, const std::string& bytes) {
  write_atomic_with(path, [&](const fs::path& temporary) {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) fail("{}: cannot open for writing", temporary.string());
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) fail("{}: write failed (disk full?)", temporary.string());
  });
}

}  // namespace kd
