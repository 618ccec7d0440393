#include "kd/data/npy.h"

#include <fmt/format.h>
#include <zip.h>

#include <cctype>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "byte_order.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/strings.h"

namespace kd::data {

namespace fs = std::filesystem;

namespace {

const std::string kMagic = "\x93NUMPY";

// One value of the header's Python dict literal.
struct HeaderValue {
  enum class Kind { string, boolean, tuple, other } kind = Kind::other;
  std::string text;  // the string, or the source text for `other`
  bool flag = false;
  std::vector<int64_t> ints;
};

// Parses the dict literal numpy writes: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }.
// Values other than strings, booleans and tuples of ints (a structured dtype's list) are kept
// as source text so that the caller can name them in its message.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& context) : text_(text), context_(context) {}

  std::map<std::string, HeaderValue> parse_dict() {
    skip_space();
    expect('{');
    std::map<std::string, HeaderValue> dict;
    skip_space();
    while (peek() != '}') {
      const std::string key = parse_string();
      skip_space();
      expect(':');
      skip_space();
      dict[key] = parse_value();
      skip_space();
      if (peek() == ',') {
        ++pos_;
        skip_space();
      } else if (peek() != '}') {
        bad("',' or '}'");
      }
    }
    ++pos_;
    skip_space();
    if (pos_ != text_.size()) bad("the end of the header after '}'");
    return dict;
  }

 private:
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  [[noreturn]] void bad(const std::string& expected) const {
    fail("{}: header is not the Python dict numpy writes: expected {} at character {} of {}", context_,
         expected, pos_, quote(trim(text_)));
  }
  void expect(char c) {
    if (peek() != c) bad(fmt::format("'{}'", c));
    ++pos_;
  }
  std::string parse_string() {
    const char q = peek();
    if (q != '\'' && q != '"') bad("a quoted key");
    const size_t end = text_.find(q, pos_ + 1);
    if (end == std::string::npos) bad("a closing quote");
    std::string value = text_.substr(pos_ + 1, end - pos_ - 1);
    pos_ = end + 1;
    return value;
  }
  HeaderValue parse_value() {
    HeaderValue value;
    const char c = peek();
    if (c == '\'' || c == '"') {
      value.kind = HeaderValue::Kind::string;
      value.text = parse_string();
    } else if (text_.compare(pos_, 4, "True") == 0 || text_.compare(pos_, 5, "False") == 0) {
      value.kind = HeaderValue::Kind::boolean;
      value.flag = c == 'T';
      pos_ += value.flag ? 4 : 5;
    } else if (c == '(') {
      value.kind = HeaderValue::Kind::tuple;
      ++pos_;
      skip_space();
      while (peek() != ')') {
        const size_t start = pos_;
        while (std::isdigit(static_cast<unsigned char>(peek()))) ++pos_;
        if (pos_ == start) bad("a non-negative integer in the shape");
        const auto number = parse_int(text_.substr(start, pos_ - start));
        if (!number) bad("a shape entry that fits in 64 bits");
        value.ints.push_back(*number);
        if (peek() == 'L') ++pos_;  // Python 2 longs
        skip_space();
        if (peek() == ',') {
          ++pos_;
          skip_space();
        } else if (peek() != ')') {
          bad("',' or ')' in the shape");
        }
      }
      ++pos_;
    } else {
      // Anything else (a list for a structured dtype): skip to the matching close bracket.
      const size_t start = pos_;
      int depth = 0;
      do {
        const char d = peek();
        if (d == '\0') bad("a value");
        if (d == '[' || d == '(' || d == '{') ++depth;
        if (d == ']' || d == ')' || d == '}') --depth;
        if (d == '\'' || d == '"') {
          parse_string();
          continue;
        }
        ++pos_;
      } while (depth > 0 || (peek() != ',' && peek() != '}'));
      value.text = text_.substr(start, pos_ - start);
    }
    return value;
  }

  const std::string& text_;
  const std::string& context_;
  size_t pos_ = 0;
};

struct NpyType {
  char kind;                     // numpy's kind letter: b, u, i, f
  size_t width;                  // bytes per value in the file
  torch::ScalarType file_dtype;  // the dtype that holds the raw bytes
  torch::ScalarType dtype;       // the dtype returned (differs for widened unsigned types)
};

const std::vector<NpyType>& npy_types() {
  static const std::vector<NpyType> types = {
      {'b', 1, torch::kUInt8, torch::kBool},      {'u', 1, torch::kUInt8, torch::kUInt8},
      {'i', 1, torch::kInt8, torch::kInt8},       {'i', 2, torch::kInt16, torch::kInt16},
      {'i', 4, torch::kInt32, torch::kInt32},     {'i', 8, torch::kInt64, torch::kInt64},
      {'f', 2, torch::kFloat16, torch::kFloat16}, {'f', 4, torch::kFloat32, torch::kFloat32},
      {'f', 8, torch::kFloat64, torch::kFloat64}, {'u', 2, torch::kInt16, torch::kInt32},
      {'u', 4, torch::kInt32, torch::kInt64},
  };
  return types;
}

const char* kSupportedDtypes = "|b1, |u1, |i1, <i2, <i4, <i8, <f2, <f4, <f8, <u2, <u4 (or big-endian '>')";

std::string shape_text(const std::vector<int64_t>& shape) {
  std::vector<std::string> parts;
  for (int64_t d : shape) parts.push_back(std::to_string(d));
  return "(" + join(parts, ", ") + (shape.size() == 1 ? ",)" : ")");
}

// What a .npy header says: the array's type and shape, and where its data starts in the file.
struct NpyLayout {
  const NpyType* type;
  std::string descr;
  std::vector<int64_t> shape;
  size_t offset;
};

// The header at the start of `bytes` (a .npy file, or its first bytes); `context` names it in messages.
NpyLayout parse_npy_header(const std::string& bytes, const std::string& context) {
  if (bytes.size() < kMagic.size() + 2 || bytes.compare(0, kMagic.size(), kMagic) != 0) {
    std::string found;
    for (size_t i = 0; i < std::min<size_t>(bytes.size(), 6); ++i) {
      found += fmt::format("{}{:02x}", i ? " " : "", static_cast<unsigned char>(bytes[i]));
    }
    fail("{}: not a .npy file: expected magic 93 4e 55 4d 50 59 (\"\\x93NUMPY\"), found {}", context,
         bytes.empty() ? std::string("an empty file") : found);
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  const int minor = static_cast<unsigned char>(bytes[7]);
  size_t header_length = 0;
  size_t prefix = 0;
  if (major == 1) {
    prefix = 10;
  } else if (major == 2 || major == 3) {
    prefix = 12;
  } else {
    fail("{}: .npy format version {}.{} is not supported, expected 1.0, 2.0 or 3.0", context, major, minor);
  }
  if (bytes.size() < prefix) fail("{}: truncated .npy header", context);
  for (size_t i = prefix; i-- > 8;)
    header_length = (header_length << 8) | static_cast<unsigned char>(bytes[i]);
  if (bytes.size() < prefix + header_length) {
    fail("{}: truncated .npy header: expected {} header bytes, found {}", context, header_length,
         bytes.size() - prefix);
  }
  const std::string header = bytes.substr(prefix, header_length);
  const auto dict = HeaderParser(header, context).parse_dict();

  auto get = [&](const char* key, HeaderValue::Kind kind, const char* expected) -> const HeaderValue& {
    auto it = dict.find(key);
    if (it == dict.end()) {
      std::vector<std::string> keys;
      for (const auto& [k, v] : dict) keys.push_back(quote(k));
      fail("{}: .npy header has no '{}' key (found keys: {}), expected 'descr', 'fortran_order' and 'shape'",
           context, key, keys.empty() ? std::string("none") : join(keys, ", "));
    }
    if (it->second.kind != kind) {
      fail("{}: .npy header: '{}' is {}, expected {}", context, key,
           it->second.text.empty() ? std::string("of the wrong kind") : it->second.text, expected);
    }
    return it->second;
  };

  auto descr_it = dict.find("descr");
  if (descr_it != dict.end() && descr_it->second.kind == HeaderValue::Kind::other) {
    fail("{}: structured dtype {} is not supported, expected one of {}", context, descr_it->second.text,
         kSupportedDtypes);
  }
  const std::string descr = get("descr", HeaderValue::Kind::string, "a dtype string such as '<f4'").text;
  const bool fortran_order = get("fortran_order", HeaderValue::Kind::boolean, "True or False").flag;
  const std::vector<int64_t> shape = get("shape", HeaderValue::Kind::tuple, "a tuple of ints").ints;

  if (descr.size() >= 2 && descr[1] == 'O') {
    fail(
        "{}: dtype '{}' is an object array (Python objects), which cannot be read; save a numeric "
        "array instead, expected one of {}",
        context, descr, kSupportedDtypes);
  }
  const NpyType* type = nullptr;
  const auto width = descr.size() >= 3 ? parse_int(descr.substr(2)) : std::nullopt;
  if (width && std::string("<>|=").find(descr[0]) != std::string::npos) {
    for (const auto& candidate : npy_types()) {
      if (candidate.kind == descr[1] && static_cast<long long>(candidate.width) == *width) type = &candidate;
    }
  }
  if (type == nullptr)
    fail("{}: unsupported dtype '{}', expected one of {}", context, descr, kSupportedDtypes);
  if (fortran_order) {
    fail(
        "{}: array is in Fortran (column-major) order, expected C order; save it with "
        "np.save(path, np.ascontiguousarray(a))",
        context);
  }
  return {type, descr, shape, prefix + header_length};
}

// The array in `bytes` (a whole .npy file); `context` names it in messages.
torch::Tensor parse_npy(const std::string& bytes, const std::string& context) {
  const auto [type, descr, shape, offset] = parse_npy_header(bytes, context);
  // '|' (not applicable) and '=' (native) need no swap on the little-endian hosts libtorch runs on.
  const bool big_endian = descr[0] == '>';
  const bool swap = type->width > 1 && big_endian == detail::host_is_little_endian();

  int64_t data_size = static_cast<int64_t>(type->width);
  bool overflow = false;
  for (int64_t d : shape) overflow = overflow || __builtin_mul_overflow(data_size, d, &data_size);
  const auto found = static_cast<int64_t>(bytes.size() - offset);
  if (overflow || data_size > found) {
    fail("{}: data shorter than the shape needs: shape {} of '{}' needs {} bytes, found {}", context,
         shape_text(shape), descr, overflow ? std::string("more than 2^63") : std::to_string(data_size),
         found);
  }
  if (data_size < found) {
    fail("{}: {} trailing bytes after the data of shape {} of '{}' ({} bytes)", context, found - data_size,
         shape_text(shape), descr, data_size);
  }
  torch::Tensor raw = torch::empty(shape, torch::TensorOptions().dtype(type->file_dtype));
  if (data_size > 0) std::memcpy(raw.data_ptr(), bytes.data() + offset, data_size);
  if (swap) detail::swap_bytes(raw.data_ptr(), raw.numel(), type->width);
  if (type->dtype == torch::kBool) return raw.ne(0);
  if (type->file_dtype != type->dtype) {
    // Unsigned values held in the signed type of the same width: widen, then undo the sign extension.
    const int64_t mask = (int64_t{1} << (8 * type->width)) - 1;
    return raw.to(type->dtype).bitwise_and(mask);
  }
  return raw;
}

std::string npy_descr(torch::ScalarType dtype, const fs::path& path) {
  switch (dtype) {
    case torch::kBool:
      return "|b1";
    case torch::kUInt8:
      return "|u1";
    case torch::kInt8:
      return "|i1";
    case torch::kInt16:
      return "<i2";
    case torch::kInt32:
      return "<i4";
    case torch::kInt64:
      return "<i8";
    case torch::kFloat16:
      return "<f2";
    case torch::kFloat32:
      return "<f4";
    case torch::kFloat64:
      return "<f8";
    default:
      fail(
          "{}: cannot write a {} tensor as .npy, expected float32, float64, float16, int64, int32, int16, "
          "int8, uint8 or bool",
          path.string(), c10::toString(dtype));
  }
}

std::string zip_message(int code) {
  zip_error_t error;
  zip_error_init_with_code(&error, code);
  std::string message = zip_error_strerror(&error);
  zip_error_fini(&error);
  return message;
}

}  // namespace

torch::Tensor read_npy(const fs::path& path) { return parse_npy(read_file(path), path.string()); }

namespace {

// A header's bytes: the first MiB of the file or entry is more than any header holds.
constexpr size_t kHeaderBytes = size_t{1} << 20;

ArrayHeader header_of(const std::string& first_bytes, const std::string& context) {
  NpyLayout layout = parse_npy_header(first_bytes, context);
  return {layout.shape, static_cast<int64_t>(layout.type->width)};
}

}  // namespace

ArrayHeader read_npy_header(const fs::path& path) {
  require_file(path, ".npy file");
  std::ifstream in(path, std::ios::binary);
  std::string bytes(kHeaderBytes, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  bytes.resize(static_cast<size_t>(in.gcount()));
  return header_of(bytes, path.string());
}

void write_npy(const fs::path& path, const torch::Tensor& tensor) {
  const std::string descr = npy_descr(tensor.scalar_type(), path);
  if (!detail::host_is_little_endian()) fail("{}: writing .npy needs a little-endian host", path.string());
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", descr,
                                   shape_text(tensor.sizes().vec()));
  // numpy pads the header with spaces and a newline so that the data starts on a 64-byte boundary.
  size_t prefix = 10;
  if (header.size() + 1 + prefix > 65535) prefix = 12;
  const size_t total = ((prefix + header.size() + 1 + 63) / 64) * 64;
  header.append(total - prefix - header.size() - 1, ' ');
  header.push_back('\n');

  std::string out = kMagic;
  out.push_back(static_cast<char>(prefix == 10 ? 1 : 2));
  out.push_back(0);
  for (size_t i = 0; i < prefix - 8; ++i) out.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  out += header;
  const torch::Tensor values = tensor.detach().to(torch::kCPU).contiguous();
  out.append(static_cast<const char*>(values.data_ptr()), values.numel() * values.element_size());
  write_file_atomic(path, out);
}

namespace {

// Calls `use(key, context, bytes)` for each .npy entry of the archive, with its first `limit` bytes
// (all of them when 0); kd::Error for an archive or entry that cannot be read.
void for_each_npy_entry(const fs::path& path, size_t limit,
                        const std::function<void(const std::string&, const std::string&, const std::string&)>& use) {
  require_file(path, ".npz archive");
  const std::string name = path.string();
  int code = 0;
  std::unique_ptr<zip_t, decltype(&zip_discard)> archive(zip_open(name.c_str(), ZIP_RDONLY, &code),
                                                         &zip_discard);
  if (!archive) fail("{}: cannot open as a .npz (zip) archive: {}", name, zip_message(code));

  std::set<std::string> keys;
  const zip_int64_t count = zip_get_num_entries(archive.get(), 0);
  for (zip_int64_t index = 0; index < count; ++index) {
    zip_stat_t stat;
    zip_stat_init(&stat);
    if (zip_stat_index(archive.get(), index, 0, &stat) != 0) {
      fail("{}: cannot read entry {}: {}", name, index, zip_strerror(archive.get()));
    }
    const std::string entry = stat.name ? stat.name : "";
    const std::string context = name + ":" + entry;
    if (!ends_with(entry, ".npy")) {
      fail("{}: entry {} is not a .npy array, expected only .npy entries (as np.savez writes)", name,
           quote(entry));
    }
    if (!(stat.valid & ZIP_STAT_SIZE)) fail("{}: the archive does not give the entry's size", context);
    const std::string key = entry.substr(0, entry.size() - 4);
    if (!keys.insert(key).second) fail("{}: array {} appears twice in the archive", name, quote(key));
    std::unique_ptr<zip_file_t, decltype(&zip_fclose)> file(zip_fopen_index(archive.get(), index, 0),
                                                            &zip_fclose);
    if (!file) fail("{}: cannot open entry: {}", context, zip_strerror(archive.get()));
    const zip_uint64_t wanted = limit > 0 ? std::min<zip_uint64_t>(stat.size, limit) : stat.size;
    // The declared size is read in pieces, so that an entry claiming more than it holds fails at its
    // end rather than allocating the claim up front.
    std::string bytes;
    constexpr zip_uint64_t kPiece = zip_uint64_t{1} << 24;
    while (bytes.size() < wanted) {
      size_t done = bytes.size();
      bytes.resize(done + std::min<zip_uint64_t>(wanted - done, kPiece));
      const zip_int64_t got = zip_fread(file.get(), bytes.data() + done, bytes.size() - done);
      if (got < 0) fail("{}: corrupt entry: {}", context, zip_file_strerror(file.get()));
      if (got == 0) fail("{}: entry ends after {} of {} bytes", context, done, stat.size);
      bytes.resize(done + static_cast<size_t>(got));
    }
    // libzip checks the CRC when the entry is read to its end, so one more read reports corruption.
    char extra;
    if (wanted == stat.size && zip_fread(file.get(), &extra, 1) != 0) {
      fail("{}: corrupt entry: {}", context, zip_file_strerror(file.get()));
    }
    use(key, context, bytes);
  }
}

}  // namespace

std::map<std::string, torch::Tensor> read_npz(const fs::path& path) {
  std::map<std::string, torch::Tensor> arrays;
  for_each_npy_entry(path, 0, [&](const std::string& key, const std::string& context, const std::string& bytes) {
    arrays.emplace(key, parse_npy(bytes, context));
  });
  return arrays;
}

std::map<std::string, ArrayHeader> read_npz_headers(const fs::path& path) {
  std::map<std::string, ArrayHeader> headers;
  for_each_npy_entry(path, kHeaderBytes, [&](const std::string& key, const std::string& context, const std::string& bytes) {
    headers.emplace(key, header_of(bytes, context));
  });
  return headers;
}

}  // namespace kd::data
