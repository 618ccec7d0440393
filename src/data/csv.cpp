#include "kd/data/csv.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/runtime.h"
#include "kd/util/strings.h"

namespace kd::data {

namespace {

struct Delimiter {
  char character = ',';
  bool whitespace = false;  // runs of spaces and tabs; leading and trailing ones ignored
  std::string name() const { return whitespace ? "whitespace" : std::string(1, character); }
};

// Records as the tokenizer reads them, before the field count is settled: the cell texts back to back,
// where each cell starts, and where each record's cells start. parse_csv() turns them into the table in
// place.
struct Records {
  std::string text;
  std::vector<uint64_t> cell_offsets{0};  // cell i is text[cell_offsets[i], cell_offsets[i + 1])
  std::vector<uint64_t> first_cells{0};   // record r's cells are first_cells[r] .. first_cells[r + 1] - 1
  std::vector<int64_t> lines;             // 1-based line each record starts on
  std::vector<bool> trailing_empty;       // more than one field and the last is empty and unquoted ("1,2,")

  size_t size() const { return lines.size(); }
  size_t fields(size_t r) const { return first_cells[r + 1] - first_cells[r]; }
  std::string_view cell(size_t r, size_t j) const {
    size_t i = first_cells[r] + j;
    return std::string_view(text).substr(cell_offsets[i], cell_offsets[i + 1] - cell_offsets[i]);
  }
  // The field counts record r fits: its own, and one less when it ends in a trailing delimiter.
  bool fits(size_t r, size_t count) const {
    return fields(r) == count || (trailing_empty[r] && fields(r) - 1 == count);
  }
};

bool is_space(char c) { return c == ' ' || c == '\t'; }
bool is_newline(char c) { return c == '\n' || c == '\r'; }

// Splits text into records, appending each one's cells to a Records: the cell texts to `cells` from
// position out.cell_offsets.back() on, the offsets and lines to `out`. Blank records (every cell empty)
// are skipped.
class Tokenizer {
 public:
  Tokenizer(std::string_view text, size_t offset, int64_t line, Delimiter delimiter, const std::string& path,
            std::string& cells, Records& out)
      : text_(text),
        pos_(offset),
        line_(line),
        delimiter_(delimiter),
        path_(path),
        cells_(cells),
        out_(out),
        end_(out.cell_offsets.back()) {}

  bool next() {
    while (pos_ < text_.size()) {
      if (read_record()) return true;
    }
    return false;
  }

  size_t position() const { return pos_; }
  // Where the cell text written so far ends in `cells`.
  size_t end() const { return end_; }
  // The line the next record would start on.
  int64_t line() const { return line_; }

 private:
  bool at_delimiter() const {
    if (pos_ >= text_.size()) return false;
    return delimiter_.whitespace ? is_space(text_[pos_]) : text_[pos_] == delimiter_.character;
  }

  // Consumes one line end (\r\n, \n or \r) at pos_.
  void consume_newline() {
    if (text_[pos_] == '\r' && pos_ + 1 < text_.size() && text_[pos_ + 1] == '\n') ++pos_;
    ++pos_;
    ++line_;
  }

  void skip_spaces() {
    while (pos_ < text_.size() && is_space(text_[pos_]) &&
           (delimiter_.whitespace || text_[pos_] != delimiter_.character)) {
      ++pos_;
    }
  }

  // Appends to the cell text. When that is the text being read, the write stays behind pos_: what a cell
  // writes is at most what it reads.
  void put(std::string_view part) {
    std::string& cells = cells_;
    if (end_ + part.size() > cells.size()) cells.resize(std::max(end_ + part.size(), 2 * cells.size()));
    std::memmove(cells.data() + end_, part.data(), part.size());
    end_ += part.size();
  }

  // Appends one record; false, leaving the records as they were, when the record is blank.
  bool read_record() {
    int64_t line = line_;
    size_t text_begin = end_;
    size_t cells_begin = out_.cell_offsets.size() - 1;
    bool trailing_empty = false;
    if (delimiter_.whitespace) skip_spaces();
    while (true) {
      size_t cell_begin = end_;
      bool quoted = read_field();
      out_.cell_offsets.push_back(end_);
      bool last_empty_unquoted = end_ == cell_begin && !quoted;
      if (at_delimiter()) {
        if (delimiter_.whitespace) {
          skip_spaces();
          if (pos_ >= text_.size() || is_newline(text_[pos_])) {
            if (pos_ < text_.size()) consume_newline();
            break;
          }
        } else {
          ++pos_;
        }
        continue;
      }
      trailing_empty = last_empty_unquoted && out_.cell_offsets.size() - 1 - cells_begin > 1;
      if (pos_ < text_.size()) consume_newline();
      break;
    }
    if (end_ == text_begin) {  // every cell empty
      out_.cell_offsets.resize(cells_begin + 1);
      return false;
    }
    out_.first_cells.push_back(out_.cell_offsets.size() - 1);
    out_.lines.push_back(line);
    out_.trailing_empty.push_back(trailing_empty);
    return true;
  }

  // Reads one field, leaving pos_ on the delimiter, the line end or the end of the text; true when it was
  // quoted.
  bool read_field() {
    size_t start = pos_;
    skip_spaces();
    if (pos_ < text_.size() && text_[pos_] == '"') {
      read_quoted();
      return true;
    }
    pos_ = start;
    while (pos_ < text_.size() && !is_newline(text_[pos_]) && !at_delimiter()) ++pos_;
    put(trim_view(text_.substr(start, pos_ - start)));
    return false;
  }

  void read_quoted() {
    int64_t opened_on = line_;
    ++pos_;  // the opening quote
    while (true) {
      size_t run = pos_;
      while (pos_ < text_.size() && text_[pos_] != '"' && !is_newline(text_[pos_])) ++pos_;
      put(text_.substr(run, pos_ - run));
      if (pos_ >= text_.size()) {
        fail("{}:{}: unterminated quoted field: the quote opened on line {} is never closed", path_,
             opened_on, opened_on);
      }
      if (is_newline(text_[pos_])) {
        consume_newline();  // a line end inside quotes is part of the cell; stored as \n whatever the file
                            // uses
        put("\n");
        continue;
      }
      if (pos_ + 1 < text_.size() && text_[pos_ + 1] == '"') {
        pos_ += 2;
        put("\"");
        continue;
      }
      ++pos_;  // the closing quote
      break;
    }
    // Text between the closing quote and the delimiter ("abc"def) is kept, as Python's csv module does;
    // spaces there are dropped.
    size_t rest = pos_;
    while (pos_ < text_.size() && !is_newline(text_[pos_]) && !at_delimiter()) ++pos_;
    put(trim_view(text_.substr(rest, pos_ - rest)));
  }

  std::string_view text_;
  size_t pos_;
  int64_t line_;
  Delimiter delimiter_;
  const std::string& path_;
  std::string& cells_;
  Records& out_;
  size_t end_;
};

constexpr size_t kAllRecords = std::numeric_limits<size_t>::max();

// Room in records' vectors for the rest of the text at the density of what the tokenizer has read so
// far (`read` bytes of `total`), and a margin: a vector that outgrows its room is copied, and room never
// written to takes no memory.
void reserve_for(Records& records, size_t read, size_t total) {
  double scale = 1.2 * static_cast<double>(total) / static_cast<double>(std::max<size_t>(1, read));
  auto room = [scale](size_t n) { return static_cast<size_t>(scale * static_cast<double>(n)) + 1; };
  records.cell_offsets.reserve( room(records.cell_offsets.size()));
  records.first_cells.reserve( room(records.size()));
  records.lines.reserve( room(records.size()));
  records.trailing_empty.reserve(room(records.size()));
}

constexpr size_t kSampleRecords = 1000;

// Reads up to max_records records of text[offset...] into `records`. `text` may be records.text itself:
// the cells are then written over the text they are read from, so that the file is held once.
void tokenize(const std::string& text, size_t offset, int64_t line, Delimiter delimiter,
              const std::string& path, size_t max_records, Records& records) {
  Tokenizer tokenizer(text, offset, line, delimiter, path, records.text, records);
  while (records.size() < max_records && tokenizer.next()) {
    if (records.size() == kSampleRecords && max_records == kAllRecords) {
      reserve_for(records, tokenizer.position() - offset, text.size() - offset);
    }
  }
  records.text.resize(tokenizer.end());
}

// The count all records from `begin` fit, trying the first one's own count (and one less when it ends in
// a trailing delimiter, preferred since that column would be empty everywhere).
std::optional<size_t> common_count(const Records& records, size_t begin) {
  if (begin >= records.size()) return std::nullopt;
  std::vector<size_t> candidates;
  if (records.trailing_empty[begin]) candidates.push_back(records.fields(begin) - 1);
  candidates.push_back(records.fields(begin));
  for (size_t count : candidates) {
    bool all = true;
    for (size_t r = begin; r < records.size() && all; ++r) all = records.fits(r, count);
    if (all) return count;
  }
  return std::nullopt;
}

// Whether records a and b fit a common field count.
bool fits_any(const Records& records, size_t a, size_t b) {
  size_t count = records.fields(b);
  return records.fits(a, count) || (records.trailing_empty[b] && records.fits(a, count - 1));
}

constexpr size_t kSniffRecords = 30;

Delimiter sniff_delimiter(const std::string& text, size_t offset, int64_t line, const std::string& path,
                          bool allow_preamble) {
  // Scores (tier, a, b), compared in that order. Tier 3: every sampled record has the same count a;
  // tier 2: all but the first do (a summary line above the data); tier 1: a ragged file, where a records
  // share the most common count b > 1, so that the real parse names the ragged line. Tier 0: unusable.
  using Score = std::tuple<int, size_t, size_t>;
  auto score = [&](Delimiter d) -> Score {
    Records records;
    try {
      tokenize(text, offset, line, d, path, kSniffRecords, records);
    } catch (const Error&) {
      return {0, 0, 0};  // an unterminated quote under this delimiter; the real parse reports it
    }
    if (auto k = common_count(records, 0); k && *k > 1) return {3, *k, 0};
    if (allow_preamble && records.size() >= 3) {
      if (auto k = common_count(records, 1); k && *k > 1) return {2, *k, 0};
    }
    std::map<size_t, size_t> counts;
    for (size_t r = 0; r < records.size(); ++r) ++counts[records.fields(r)];
    auto mode = std::max_element(counts.begin(), counts.end(),
                                 [](const auto& a, const auto& b) { return a.second < b.second; });
    if (mode != counts.end() && mode->first > 1) return {1, mode->second, mode->first};
    return {0, 0, 0};
  };
  std::optional<Delimiter> best;
  Score best_score{0, 0, 0};
  for (char c : {',', ';', '\t', '|'}) {
    Delimiter d;
    d.character = c;
    Score s = score(d);
    if (std::get<0>(s) > 0 && s > best_score) {
      best = d;
      best_score = s;
    }
  }
  if (best) return *best;
  Delimiter whitespace;
  whitespace.whitespace = true;
  if (std::get<0>(score(whitespace)) > 0) return whitespace;
  return Delimiter{};  // one column
}

Delimiter parse_delimiter(const std::string& text, const std::string& path) {
  Delimiter d;
  if (text == "whitespace") {
    d.whitespace = true;
    return d;
  }
  if (text == "tab" || text == "\\t") {
    d.character = '\t';
    return d;
  }
  if (text.size() == 1 && text[0] != '"' && text[0] != ' ' && !is_newline(text[0]) &&
      !std::isalnum(static_cast<unsigned char>(text[0]))) {
    d.character = text[0];
    return d;
  }
  fail("{}: delimiter {} is not supported, expected auto, \",\", \";\", \"\\t\", \"|\" or whitespace", path,
       quote(text));
}

bool is_number(std::string_view cell) { return parse_double(cell).has_value(); }

// Tokens that mean "no value" in the wild; a header never consists of them.
bool is_missing_token(std::string_view cell) {
  static const std::set<std::string, std::less<>> tokens = {"",  "NA",   "N/A",  "NaN",  "nan",
                                                            "?", "null", "NULL", "None", "-"};
  return tokens.count(cell) > 0;
}

// Whether records[i] reads as a header above records[i+1...]. With `numeric_evidence`, only a row of
// names above numeric columns counts.
bool is_header(const Records& records, size_t i, bool numeric_evidence = false) {
  const size_t width = records.fields(i);
  size_t sample_end = std::min(records.size(), i + 1 + 50);
  if (i + 1 >= sample_end) {
    bool numbers = false, filled = false;
    for (size_t j = 0; j < width; ++j) {
      numbers = numbers || is_number(records.cell(i, j));
      filled = filled || !records.cell(i, j).empty();
    }
    return !numbers && filled;
  }
  size_t numeric_columns = 0, text_cells = 0, counted_cells = 0;
  for (size_t j = 0; j < width; ++j) {
    size_t numbers = 0, filled = 0;
    for (size_t r = i + 1; r < sample_end; ++r) {
      if (j >= records.fields(r) || records.cell(r, j).empty()) continue;
      ++filled;
      if (is_number(records.cell(r, j))) ++numbers;
    }
    if (filled == 0 || numbers * 2 <= filled) continue;
    ++numeric_columns;
    if (is_missing_token(records.cell(i, j))) continue;
    ++counted_cells;
    if (!is_number(records.cell(i, j))) ++text_cells;
  }
  if (numeric_columns > 0) return text_cells * 2 > counted_cells;
  if (numeric_evidence) return false;
  // No numeric column: a header names its columns, so none of its cells recurs below it.
  for (size_t j = 0; j < width; ++j) {
    std::string_view name = records.cell(i, j);
    if (name.empty() || is_missing_token(name)) return false;
    for (size_t r = i + 1; r < sample_end; ++r) {
      if (j < records.fields(r) && records.cell(r, j) == name) return false;
    }
  }
  return true;
}

// Offset of the start of 1-based line `target`, or nothing when the text has fewer lines.
std::optional<size_t> line_offset(const std::string& text, int64_t target, int64_t& lines_seen) {
  size_t pos = 0;
  lines_seen = text.empty() ? 0 : 1;
  for (int64_t line = 1; line < target; ++line) {
    while (pos < text.size() && !is_newline(text[pos])) ++pos;
    if (pos >= text.size()) return std::nullopt;
    if (text[pos] == '\r' && pos + 1 < text.size() && text[pos + 1] == '\n') ++pos;
    ++pos;
    if (pos >= text.size()) return std::nullopt;  // the file ends with that line break
    ++lines_seen;
  }
  return pos;
}

int64_t count_lines(const std::string& text) {
  int64_t lines = 0;
  line_offset(text, std::numeric_limits<int64_t>::max(), lines);
  return lines;
}

}  // namespace

CsvTable parse_csv(std::string text, const std::string& path, const CsvOptions& options) {
  if (starts_with(text, "\xEF\xBB\xBF")) text.erase(0, 3);

  enum class HeaderMode { automatic, none, line } mode;
  int64_t header_line = 0;
  const std::string& header = options.header();
  if (header == "auto") {
    mode = HeaderMode::automatic;
  } else if (header == "none") {
    mode = HeaderMode::none;
  } else if (auto n = parse_int(header); n && *n >= 1) {
    mode = HeaderMode::line;
    header_line = *n;
  } else {
    fail("{}: header {} is not supported, expected auto, none or a 1-based line number", path, quote(header));
  }

  size_t offset = 0;
  int64_t first_line = 1;
  if (mode == HeaderMode::line) {
    int64_t lines = 0;
    auto found = line_offset(text, header_line, lines);
    if (!found) {
      fail("{}: header line {} is beyond the end of the file ({} lines)", path, header_line,
           count_lines(text));
    }
    offset = *found;
    first_line = header_line;
  }

  Delimiter delimiter = options.delimiter() == "auto"
                            ? sniff_delimiter(text, offset, first_line, path, mode == HeaderMode::automatic)
                            : parse_delimiter(options.delimiter(), path);
  Records records;
  records.text = std::move(text);
  tokenize(records.text, offset, first_line, delimiter, path, kAllRecords, records);
  if (records.size() == 0) fail("{}: empty file (no data rows)", path);

  size_t begin = 0;  // first record that is the header or data
  bool has_header = false;
  bool header_lacks_first_name = false;  // R's write.table: one name fewer than fields
  if (mode == HeaderMode::line) {
    if (records.lines[0] != header_line) fail("{}:{}: header line is blank", path, header_line);
    has_header = true;
  } else if (mode == HeaderMode::automatic) {
    // A summary line: its field count fits none of the records below it.
    size_t sample_end = std::min(records.size(), size_t{21});
    bool fits_none = records.size() >= 3;
    for (size_t r = 1; r < sample_end && fits_none; ++r) fits_none = !fits_any(records, 0, r);
    if (fits_none) {
      auto below = common_count(records, 1);
      bool names_filled = true;
      for (size_t j = 0; j < records.fields(0); ++j)
        names_filled = names_filled && !records.cell(0, j).empty();
      if (below && records.fields(0) + 1 == *below && is_header(records, 0) && names_filled) {
        has_header = true;
        header_lacks_first_name = true;
      } else {
        begin = 1;
      }
    }
    if (!has_header && begin < records.size()) {
      if (is_header(records, begin)) {
        has_header = true;
      } else if (records.size() - begin >= 3 && is_header(records, begin + 1, true) &&
                 fits_any(records, begin, begin + 1)) {
        begin += 1;  // a preamble line with the same field count (boston_house_prices.csv)
        has_header = true;
      }
    }
  }

  CsvTable table;
  table.path = path;
  table.delimiter = delimiter.name();
  size_t data_begin = begin + (has_header ? 1 : 0);
  if (data_begin >= records.size()) {
    if (has_header) fail("{}: no data rows after the header on line {}", path, records.lines[begin]);
    fail("{}: empty file (no data rows)", path);
  }

  // The field count: the header's (or first row's), or one less when it ends in a trailing delimiter and
  // that fits at least as many rows.
  size_t reference = header_lacks_first_name ? data_begin : begin;
  size_t count = records.fields(reference);
  if (records.trailing_empty[reference]) {
    size_t fit_full = 0, fit_less = 0;
    for (size_t r = begin; r < records.size(); ++r) {
      fit_full += records.fits(r, count);
      fit_less += records.fits(r, count - 1);
    }
    if (fit_less >= fit_full) count -= 1;
  }
  auto check_fields = [&](size_t r) {
    if (!records.fits(r, count)) {
      fail("{}:{}: expected {} fields (as on line {}), found {}", path, records.lines[r], count,
           records.lines[reference], records.fields(r));
    }
  };

  table.columns.resize(count);
  for (size_t j = 0; j < count; ++j) table.columns[j] = std::to_string(j);
  if (has_header) {
    table.header_line = records.lines[begin];
    if (header_lacks_first_name) {
      for (size_t j = 0; j < records.fields(begin); ++j) table.columns[j + 1] = records.cell(begin, j);
    } else {
      check_fields(begin);
      for (size_t j = 0; j < count; ++j) {
        if (!records.cell(begin, j).empty()) table.columns[j] = records.cell(begin, j);
      }
    }
  }

  // The data records become the table in place: the cells above them (header, preamble) and the empty
  // cells of trailing delimiters leave the offsets, which are rebased to the first data cell.
  std::vector<uint64_t>& offsets = records.cell_offsets;
  const uint64_t base = offsets[records.first_cells[data_begin]];
  size_t kept = 0;
  offsets[kept++] = 0;
  for (size_t r = data_begin; r < records.size(); ++r) {
    check_fields(r);
    uint64_t first = records.first_cells[r];
    for (uint64_t i = first; i < first + count; ++i) offsets[kept++] = offsets[i + 1] - base;
  }
  offsets.resize(kept);
  records.text.erase(0, base);
  records.lines.erase(records.lines.begin(), records.lines.begin() + static_cast<std::ptrdiff_t>(data_begin));
  table.cell_text_ = std::move(records.text);
  table.cell_offsets_ = std::move(offsets);
  table.line_numbers = std::move(records.lines);
  table.release_unused();
  return table;
}

CsvTable read_csv(const std::filesystem::path& path, const CsvOptions& options) {
  return parse_csv(read_file_maybe_gz(path), path.string(), options);
}

void CsvTable::keep_rows(const std::vector<size_t>& rows) {
  const size_t width = columns.size();
  size_t kept = 0;
  uint64_t text_end = 0;
  for (size_t r : rows) {
    KD_CHECK(r < num_rows() && (kept == 0 || r > rows[kept - 1]), "{}: keep_rows: row {} of {}", path, r,
             num_rows());
    // Rows move down only, so nothing is overwritten before it is read.
    uint64_t from = cell_offsets_[r * width], to = cell_offsets_[(r + 1) * width];
    std::copy(cell_text_.begin() + static_cast<std::ptrdiff_t>(from),
              cell_text_.begin() + static_cast<std::ptrdiff_t>(to),
              cell_text_.begin() + static_cast<std::ptrdiff_t>(text_end));
    for (size_t j = 1; j <= width; ++j) {
      cell_offsets_[kept * width + j] = cell_offsets_[r * width + j] - from + text_end;
    }
    line_numbers[kept++] = line_numbers[r];
    text_end += to - from;
  }
  cell_text_.resize(text_end);
  cell_offsets_.resize(kept * width + 1);
  line_numbers.resize(kept);
  release_unused();
}

// A copy of what is used costs less than holding twice its size (the cells are written over the file's
// text, and rows go in keep_rows()).
void CsvTable::release_unused() {
  if (cell_text_.size() < cell_text_.capacity() / 2) cell_text_.shrink_to_fit();
  if (cell_offsets_.size() < cell_offsets_.capacity() / 2) cell_offsets_.shrink_to_fit();
}

void CsvTable::append_rows(const CsvTable& other) {
  KD_CHECK(&other != this && other.columns.size() == columns.size(), "{}: append_rows: {} columns to {}",
           other.path, other.columns.size(), columns.size());
  uint64_t shift = cell_text_.size();
  cell_text_.reserve(cell_text_.size() + other.cell_text_.size());
  cell_text_ += other.cell_text_;
  cell_offsets_.reserve(cell_offsets_.size() + other.cell_offsets_.size() - 1);
  for (size_t i = 1; i < other.cell_offsets_.size(); ++i) {
    cell_offsets_.push_back(other.cell_offsets_[i] + shift);
  }
  line_numbers.insert(line_numbers.end(), other.line_numbers.begin(), other.line_numbers.end());
}

}  // namespace kd::data
