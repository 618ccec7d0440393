// File helpers: reading whole files with clear errors, and atomic writes
// (a temporary name in the same folder, then rename) so that no reader ever
// sees a half-written output.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

namespace kd {

// The whole file; kd::Error naming the path if it is missing or unreadable.
std::string read_file(const std::filesystem::path& path);
// The file, gunzipped when it starts with the gzip magic (whatever its name).
std::string read_file_maybe_gz(const std::filesystem::path& path);
// The first `count` bytes of the file (fewer when it is shorter), gunzipped like read_file_maybe_gz.
std::string read_head_maybe_gz(const std::filesystem::path& path, size_t count);
// The bytes read_file_maybe_gz would return, from the gzip trailer without inflating (at least the
// file's own size; the trailer holds the size modulo 4 GiB).
int64_t size_maybe_gz(const std::filesystem::path& path);

// A zip archive whose every entry reads back whole with its CRC-32 (libtorch's own reader checks
// none, and its TorchScript parser can crash on a damaged entry): call before handing a .pt, .kdm or
// checkpoint to libtorch. kd::Error naming `name`, the entry and what is wrong. `bytes`: the archive
// in memory.
void check_zip_archive(const std::filesystem::path& path);
void check_zip_bytes(const std::string& bytes, const std::string& name);

// Fails with a kd::Error naming `what` and the path if the file does not exist.
void require_file(const std::filesystem::path& path, const std::string& what);

// Writes `bytes` to `path` atomically.
void write_file_atomic(const std::filesystem::path& path, const std::string& bytes);
// Calls `write` with a temporary path beside `path`, then renames it into place;
// the temporary is removed if `write` throws. For writers that need a file name
// (torch::save, protobuf) rather than bytes.
void write_atomic_with(const std::filesystem::path& path,
                       const std::function<void(const std::filesystem::path& temporary)>& write);

// `bytes` under `path` so that it survives a crash of the machine too: a temporary beside it, fsync,
// the file now at `path` renamed to `keep` (when `keep` is given and `path` exists), the temporary
// renamed to `path`, and the folder fsynced. kd::Error naming the path on any failure (a full disk),
// with the earlier files left as they were.
void write_file_durable(const std::filesystem::path& path, const std::string& bytes,
                        const std::filesystem::path& keep = {});

}  // namespace kd
