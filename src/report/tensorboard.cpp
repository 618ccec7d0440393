#include "kd/report/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <map>

#include "kd/util/fs.h"

namespace kd::report {

namespace fs = std::filesystem;

namespace {

std::array<uint32_t, 256> crc_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected Castagnoli polynomial
    table[i] = c;
  }
  return table;
}

// Protobuf wire format: varints, tags, and the three value kinds the Event fields use.
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_tag(std::string& out, int field, int wire_type) { put_varint(out, (static_cast<uint64_t>(field) << 3) | wire_type); }
template <typename T>
void put_fixed(std::string& out, int field, T value) {
  put_tag(out, field, sizeof(T) == 8 ? 1 : 5);
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // little-endian hosts only (x86-64, arm64)
  out.append(bytes, sizeof(T));
}
void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_tag(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}

std::string event(double wall_time, int64_t step) {
  std::string e;
  put_fixed<double>(e, 1, wall_time);
  put_tag(e, 2, 0);
  put_varint(e, static_cast<uint64_t>(step));
  return e;
}

std::string record(const std::string& data) {
  std::string out;
  uint64_t length = data.size();
  std::string length_bytes(reinterpret_cast<const char*>(&length), 8);
  uint32_t length_crc = masked_crc32c(length_bytes), data_crc = masked_crc32c(data);
  out += length_bytes;
  out.append(reinterpret_cast<const char*>(&length_crc), 4);
  out += data;
  out.append(reinterpret_cast<const char*>(&data_crc), 4);
  return out;
}

}  // namespace

uint32_t crc32c(const std::string& bytes) {
  static const auto table = crc_table();
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : bytes) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const std::string& bytes) {
  uint32_t c = crc32c(bytes);
  return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

std::vector<fs::path> write_tensorboard_events(const fs::path& dir, const std::vector<Scalar>& scalars) {
  std::error_code ec;
  fs::remove_all(dir, ec);
  double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  std::map<std::string, std::string> files;  // run -> records
  for (const auto& s : scalars) {
    auto& bytes = files[s.run];
    if (bytes.empty()) {
      std::string first = event(now, 0);
      put_bytes(first, 3, "brain.Event:2");
      bytes += record(first);
    }
    std::string value;
    put_bytes(value, 1, s.tag);
    put_fixed<float>(value, 2, static_cast<float>(s.value));
    std::string summary;
    put_bytes(summary, 1, value);
    std::string e = event(now, s.step);
    put_bytes(e, 5, summary);
    bytes += record(e);
  }
  std::vector<fs::path> written;
  for (const auto& [run, bytes] : files) {
    fs::path folder = dir / run;
    fs::create_directories(folder);
    fs::path file = folder / ("events.out.tfevents." + std::to_string(static_cast<int64_t>(now)) + "." + host);
    write_file_atomic(file, bytes);
    written.push_back(file);
  }
  return written;
}

}  // namespace kd::report
