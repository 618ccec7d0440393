#include "kd/util/fs.h"

#include <fcntl.h>
#include <unistd.h>
#include <zip.h>
#include <zlib.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <fstream>
#include <memory>
#include <random>
#include <vector>

#include "kd/util/error.h"
#include "kd/util/runtime.h"

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
  // One buffer of the file's size, filled by one read (a stringstream copied it twice).
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  std::string out;
  if (!ec) {
    out.resize(size);
    in.read(out.data(), static_cast<std::streamsize>(size));
    out.resize(static_cast<size_t>(in.gcount()));
  }
  // Whatever the size did not cover (a pipe, a file that grew): read to the end.
  char chunk[1 << 16];
  while (in.read(chunk, sizeof(chunk)) || in.gcount() > 0) out.append(chunk, static_cast<size_t>(in.gcount()));
  if (in.bad()) fail("{}: read error", path.string());
  return out;
}

namespace {

void check_zip(zip_t* archive, const std::string& name) {
  std::unique_ptr<zip_t, decltype(&zip_discard)> owned(archive, &zip_discard);
  const zip_int64_t count = zip_get_num_entries(archive, 0);
  std::vector<char> buffer(size_t{1} << 20);
  for (zip_int64_t index = 0; index < count; ++index) {
    const char* entry = zip_get_name(archive, static_cast<zip_uint64_t>(index), 0);
    std::string where = fmt::format("{}: entry {}", name, entry ? entry : std::to_string(index));
    std::unique_ptr<zip_file_t, decltype(&zip_fclose)> file(zip_fopen_index(archive, static_cast<zip_uint64_t>(index), 0),
                                                            &zip_fclose);
    if (!file) fail("{}: {}: the archive is damaged or truncated", where, zip_strerror(archive));
    zip_int64_t got = 0;
    zip_uint64_t total = 0;
    // libzip checks the entry's CRC-32 when it reads its end.
    while ((got = zip_fread(file.get(), buffer.data(), buffer.size())) > 0) total += static_cast<zip_uint64_t>(got);
    if (got < 0) fail("{}: {}: the archive is damaged or truncated", where, zip_file_strerror(file.get()));
    // Not the size it declares: libtorch's reader would allocate the declared size (gigabytes, from a
    // damaged header) before reading it.
    zip_stat_t stat;
    zip_stat_init(&stat);
    if (zip_stat_index(archive, static_cast<zip_uint64_t>(index), 0, &stat) == 0 && (stat.valid & ZIP_STAT_SIZE) &&
        stat.size != total) {
      fail("{}: declares {} bytes but holds {}: the archive is damaged", where, stat.size, total);
    }
  }
}

}  // namespace

void check_zip_archive(const fs::path& path) {
  require_file(path, "file");
  int code = 0;
  zip_t* archive = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code);
  if (archive == nullptr) {
    zip_error_t error;
    zip_error_init_with_code(&error, code);
    std::string message = zip_error_strerror(&error);
    zip_error_fini(&error);
    fail("{}: not a readable zip archive ({}): the file is damaged, truncated or of another format", path.string(), message);
  }
  check_zip(archive, path.string());
}

void check_zip_bytes(const std::string& bytes, const std::string& name) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* source = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  zip_t* archive = source ? zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error) : nullptr;
  if (archive == nullptr) {
    std::string message = zip_error_strerror(&error);
    if (source) zip_source_free(source);
    zip_error_fini(&error);
    fail("{}: not a readable zip archive ({}): the file is damaged, truncated or of another format", name, message);
  }
  zip_error_fini(&error);
  check_zip(archive, name);
}

std::string read_head_maybe_gz(const fs::path& path, size_t count) {
  require_file(path, "file");
  std::unique_ptr<gzFile_s, decltype(&gzclose)> file(gzopen(path.c_str(), "rb"), &gzclose);
  if (!file) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
  std::string bytes(count, '\0');
  size_t done = 0;
  while (done < count) {  // gzread reads a file without the gzip magic as it is
    int got = gzread(file.get(), bytes.data() + done, static_cast<unsigned>(std::min<size_t>(count - done, 1u << 30)));
    if (got < 0) fail("{}: corrupt or truncated gzip data", path.string());
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  bytes.resize(done);
  return bytes;
}

int64_t size_maybe_gz(const fs::path& path) {
  require_file(path, "file");
  std::error_code ec;
  auto size = static_cast<int64_t>(fs::file_size(path, ec));
  if (ec) fail("{}: cannot read its size: {}", path.string(), ec.message());
  std::ifstream in(path, std::ios::binary);
  unsigned char magic[2] = {0, 0};
  in.read(reinterpret_cast<char*>(magic), 2);
  if (size < 18 || magic[0] != 0x1f || magic[1] != 0x8b) return size;
  unsigned char trailer[4];
  in.seekg(size - 4);
  in.read(reinterpret_cast<char*>(trailer), 4);
  int64_t inflated = 0;
  for (int i = 3; i >= 0; --i) inflated = (inflated << 8) | trailer[i];
  return std::max(size, inflated);
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
  // The gzip trailer's last 4 bytes are the uncompressed size mod 2^32: the output is sized once
  // and inflated in place, growing only if the hint was short (a multi-member file, over 4 GiB).
  size_t hint = 0;
  if (raw.size() >= 18) {
    for (int i = 0; i < 4; ++i) hint |= static_cast<size_t>(static_cast<unsigned char>(raw[raw.size() - 1 - i])) << (24 - 8 * i);
  }
  // Deflate expands at most ~1032:1, so a larger hint is a corrupt trailer: not trusted for the size.
  hint = std::min(hint, raw.size() * 1032);
  std::string out(std::max<size_t>(hint, 1 << 16), '\0');
  size_t used = 0;
  int status = Z_OK;
  while (status != Z_STREAM_END) {
    if (used == out.size()) out.resize(out.size() * 2);
    size_t room = std::min<size_t>(out.size() - used, 1u << 30);
    stream.next_out = reinterpret_cast<Bytef*>(out.data() + used);
    stream.avail_out = static_cast<uInt>(room);
    status = inflate(&stream, Z_NO_FLUSH);
    if (status != Z_OK && status != Z_STREAM_END) {
      inflateEnd(&stream);
      fail("{}: corrupt or truncated gzip data (zlib: {})", path.string(),
           stream.msg ? stream.msg : "unexpected end of data");
    }
    used += room - stream.avail_out;
    if (status == Z_OK && stream.avail_in == 0 && stream.avail_out != 0) {
      inflateEnd(&stream);
      fail("{}: truncated gzip data", path.string());
    }
  }
  inflateEnd(&stream);
  out.resize(used);
  return out;
}

namespace {

// `bytes` into a new file `temporary` (for `path`); returns its open descriptor. kd::Error naming `path`
// and the reason (a full disk, a file-size limit), with the descriptor closed.
int write_all(const fs::path& temporary, const std::string& bytes, const fs::path& path) {
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("{}: cannot open {} for writing: {}", path.string(), temporary.string(), std::strerror(errno));
  for (size_t done = 0; done < bytes.size();) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::string why = n < 0 ? std::strerror(errno) : "no space written";
      ::close(fd);
      fail("{}: write failed ({}); the earlier {} is left as it was", path.string(), why, path.filename().string());
    }
    done += static_cast<size_t>(n);
  }
  return fd;
}

void sync_or_fail(int fd, const fs::path& path) {
  if (::fsync(fd) != 0) {
    std::string why = std::strerror(errno);
    ::close(fd);
    fail("{}: cannot sync to disk: {}", path.string(), why);
  }
}

}  // namespace

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
  } catch (const Error&) {
    std::error_code ec;
    fs::remove(temporary, ec);
    throw;
  } catch (const std::exception& e) {  // a library's writer (libtorch's archive, protobuf): name the file
    std::error_code ec;
    fs::remove(temporary, ec);
    fail("{}: cannot write it ({}); the earlier {} is left as it was", path.string(), first_line(e),
         path.filename().string());
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
    if (::close(write_all(temporary, bytes, path)) != 0) fail("{}: write failed ({})", path.string(), std::strerror(errno));
  });
}

void write_file_durable(const fs::path& path, const std::string& bytes, const fs::path& keep) {
  write_atomic_with(path, [&](const fs::path& temporary) {
    int fd = write_all(temporary, bytes, path);
    sync_or_fail(fd, path);
    ::close(fd);
    std::error_code ec;
    if (!keep.empty() && fs::exists(path, ec)) {
      fs::rename(path, keep, ec);
      if (ec) fail("{}: cannot keep it as {}: {}", path.string(), keep.string(), ec.message());
    }
  });
  fs::path folder = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    sync_or_fail(dir, folder);
    ::close(dir);
  }
}

}  // namespace kd
