#include "kd/data/csv.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/strings.h"

namespace kd::data {

namespace {

struct Delimiter {
  char character = ',';
  bool whitespace = false;  // runs of spaces and tabs; leading and trailing ones ignored
  std::string name() const { return whitespace ? "whitespace" : std::string(1, character); }
};

struct Record {
  std::vector<std::string> cells;
  int64_t line = 0;
  bool trailing_empty = false;  // more than one field and the last is empty and unquoted ("1,2,")

  size_t size() const { return cells.size(); }
  // The field counts this record fits: its own, and one less when it ends in a trailing delimiter.
  bool fits(size_t count) const {
    return cells.size() == count || (trailing_empty && cells.size() - 1 == count);
  }
};

bool is_space(char c) { return c == ' ' || c == '\t'; }
bool is_newline(char c) { return c == '\n' || c == '\r'; }

// Splits text into records, one call to next() each. Blank records (every cell empty) are skipped.
class Tokenizer {
 public:
  Tokenizer(const std::string& text, size_t offset, int64_t line, Delimiter delimiter,
            const std::string& path)
      : text_(text), pos_(offset), line_(line), delimiter_(delimiter), path_(path) {}

  bool next(Record& record) {
    while (pos_ < text_.size()) {
      read_record(record);
      bool blank = std::all_of(record.cells.begin(), record.cells.end(),
                               [](const std::string& cell) { return cell.empty(); });
      if (!blank) return true;
    }
    return false;
  }

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

  void read_record(Record& record) {
    record.cells.clear();
    record.line = line_;
    record.trailing_empty = false;
    if (delimiter_.whitespace) skip_spaces();
    while (true) {
      bool quoted = false;
      record.cells.push_back(read_field(quoted));
      bool last_empty_unquoted = record.cells.back().empty() && !quoted;
      if (at_delimiter()) {
        if (delimiter_.whitespace) {
          skip_spaces();
          if (pos_ >= text_.size() || is_newline(text_[pos_])) {
            if (pos_ < text_.size()) consume_newline();
            return;
          }
        } else {
          ++pos_;
        }
        continue;
      }
      record.trailing_empty = last_empty_unquoted && record.cells.size() > 1;
      if (pos_ < text_.size()) consume_newline();
      return;
    }
  }

  // Reads one field and leaves pos_ on the delimiter, the line end or the end of the text.
  std::string read_field(bool& quoted) {
    size_t start = pos_;
    skip_spaces();
    if (pos_ < text_.size() && text_[pos_] == '"') {
      quoted = true;
      return read_quoted();
    }
    pos_ = start;
    while (pos_ < text_.size() && !is_newline(text_[pos_]) && !at_delimiter()) ++pos_;
    return trim(std::string_view(text_).substr(start, pos_ - start));
  }

  std::string read_quoted() {
    int64_t opened_on = line_;
    ++pos_;  // the opening quote
    std::string cell;
    while (true) {
      if (pos_ >= text_.size()) {
        fail("{}:{}: unterminated quoted field: the quote opened on line {} is never closed", path_,
             opened_on, opened_on);
      }
      char c = text_[pos_];
      if (c == '"') {
        if (pos_ + 1 < text_.size() && text_[pos_ + 1] == '"') {
          cell += '"';
          pos_ += 2;
          continue;
        }
        ++pos_;
        break;
      }
      if (is_newline(c)) {
        consume_newline();  // a line end inside quotes is part of the cell; stored as \n whatever the file
                            // uses
        cell += '\n';
        continue;
      }
      cell += c;
      ++pos_;
    }
    // Text between the closing quote and the delimiter ("abc"def) is kept, as Python's csv module does;
    // spaces there are dropped.
    size_t rest = pos_;
    while (pos_ < text_.size() && !is_newline(text_[pos_]) && !at_delimiter()) ++pos_;
    cell += trim(std::string_view(text_).substr(rest, pos_ - rest));
    return cell;
  }

  const std::string& text_;
  size_t pos_;
  int64_t line_;
  Delimiter delimiter_;
  const std::string& path_;
};

std::vector<Record> tokenize(const std::string& text, size_t offset, int64_t line, Delimiter delimiter,
                             const std::string& path, size_t max_records) {
  Tokenizer tokenizer(text, offset, line, delimiter, path);
  std::vector<Record> records;
  Record record;
  while (records.size() < max_records && tokenizer.next(record)) {
    size_t width = record.cells.size();
    records.push_back(std::move(record));
    record = Record();
    record.cells.reserve(width);
  }
  return records;
}

// The count all records from `begin` fit, trying the first one's own count (and one less when it ends in
// a trailing delimiter, preferred since that column would be empty everywhere).
std::optional<size_t> common_count(const std::vector<Record>& records, size_t begin) {
  if (begin >= records.size()) return std::nullopt;
  const Record& first = records[begin];
  std::vector<size_t> candidates;
  if (first.trailing_empty) candidates.push_back(first.size() - 1);
  candidates.push_back(first.size());
  for (size_t count : candidates) {
    bool all = std::all_of(records.begin() + static_cast<std::ptrdiff_t>(begin), records.end(),
                           [&](const Record& r) { return r.fits(count); });
    if (all) return count;
  }
  return std::nullopt;
}

bool fits_any(const Record& a, const Record& b) {
  return a.fits(b.size()) || (b.trailing_empty && a.fits(b.size() - 1));
}

constexpr size_t kSniffRecords = 30;

Delimiter sniff_delimiter(const std::string& text, size_t offset, int64_t line, const std::string& path,
                          bool allow_preamble) {
  // Scores (tier, a, b), compared in that order. Tier 3: every sampled record has the same count a;
  // tier 2: all but the first do (a summary line above the data); tier 1: a ragged file, where a records
  // share the most common count b > 1, so that the real parse names the ragged line. Tier 0: unusable.
  using Score = std::tuple<int, size_t, size_t>;
  auto score = [&](Delimiter d) -> Score {
    std::vector<Record> records;
    try {
      records = tokenize(text, offset, line, d, path, kSniffRecords);
    } catch (const Error&) {
      return {0, 0, 0};  // an unterminated quote under this delimiter; the real parse reports it
    }
    if (auto k = common_count(records, 0); k && *k > 1) return {3, *k, 0};
    if (allow_preamble && records.size() >= 3) {
      if (auto k = common_count(records, 1); k && *k > 1) return {2, *k, 0};
    }
    std::map<size_t, size_t> counts;
    for (const Record& r : records) ++counts[r.size()];
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

bool is_number(const std::string& cell) { return parse_double(cell).has_value(); }

// Tokens that mean "no value" in the wild; a header never consists of them.
bool is_missing_token(const std::string& cell) {
  static const std::set<std::string> tokens = {"",  "NA",   "N/A",  "NaN",  "nan",
                                               "?", "null", "NULL", "None", "-"};
  return tokens.count(cell) > 0;
}

// Whether records[i] reads as a header above records[i+1...]. With `numeric_evidence`, only a row of
// names above numeric columns counts.
bool is_header(const std::vector<Record>& records, size_t i, bool numeric_evidence = false) {
  const Record& row = records[i];
  size_t sample_end = std::min(records.size(), i + 1 + 50);
  if (i + 1 >= sample_end) {
    return std::none_of(row.cells.begin(), row.cells.end(), is_number) &&
           std::any_of(row.cells.begin(), row.cells.end(), [](const std::string& c) { return !c.empty(); });
  }
  size_t numeric_columns = 0, text_cells = 0, counted_cells = 0;
  for (size_t j = 0; j < row.size(); ++j) {
    size_t numbers = 0, filled = 0;
    for (size_t r = i + 1; r < sample_end; ++r) {
      if (j >= records[r].size() || records[r].cells[j].empty()) continue;
      ++filled;
      if (is_number(records[r].cells[j])) ++numbers;
    }
    if (filled == 0 || numbers * 2 <= filled) continue;
    ++numeric_columns;
    if (is_missing_token(row.cells[j])) continue;
    ++counted_cells;
    if (!is_number(row.cells[j])) ++text_cells;
  }
  if (numeric_columns > 0) return text_cells * 2 > counted_cells;
  if (numeric_evidence) return false;
  // No numeric column: a header names its columns, so none of its cells recurs below it.
  for (size_t j = 0; j < row.size(); ++j) {
    if (row.cells[j].empty() || is_missing_token(row.cells[j])) return false;
    for (size_t r = i + 1; r < sample_end; ++r) {
      if (j < records[r].size() && records[r].cells[j] == row.cells[j]) return false;
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
  std::vector<Record> records =
      tokenize(text, offset, first_line, delimiter, path, std::numeric_limits<size_t>::max());
  if (records.empty()) fail("{}: empty file (no data rows)", path);

  size_t begin = 0;  // first record that is the header or data
  bool has_header = false;
  bool header_lacks_first_name = false;  // R's write.table: one name fewer than fields
  if (mode == HeaderMode::line) {
    if (records[0].line != header_line) fail("{}:{}: header line is blank", path, header_line);
    has_header = true;
  } else if (mode == HeaderMode::automatic) {
    // A summary line: its field count fits none of the records below it.
    size_t sample_end = std::min(records.size(), size_t{21});
    bool fits_none = records.size() >= 3;
    for (size_t r = 1; r < sample_end && fits_none; ++r) fits_none = !fits_any(records[0], records[r]);
    if (fits_none) {
      auto below = common_count(records, 1);
      if (below && records[0].size() + 1 == *below && is_header(records, 0) &&
          std::none_of(records[0].cells.begin(), records[0].cells.end(),
                       [](const std::string& c) { return c.empty(); })) {
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
                 fits_any(records[begin], records[begin + 1])) {
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
    if (has_header) fail("{}: no data rows after the header on line {}", path, records[begin].line);
    fail("{}: empty file (no data rows)", path);
  }

  // The field count: the header's (or first row's), or one less when it ends in a trailing delimiter and
  // that fits at least as many rows.
  const Record& reference = header_lacks_first_name ? records[data_begin] : records[begin];
  size_t count = reference.size();
  if (reference.trailing_empty) {
    size_t fit_full = 0, fit_less = 0;
    for (size_t r = begin; r < records.size(); ++r) {
      fit_full += records[r].fits(reference.size());
      fit_less += records[r].fits(reference.size() - 1);
    }
    if (fit_less >= fit_full) count = reference.size() - 1;
  }
  int64_t reference_line = reference.line;
  auto conform = [&](Record& record) {
    if (record.size() == count) return;
    if (record.trailing_empty && record.size() - 1 == count) {
      record.cells.pop_back();
      return;
    }
    fail("{}:{}: expected {} fields (as on line {}), found {}", path, record.line, count, reference_line,
         record.size());
  };

  table.columns.resize(count);
  for (size_t j = 0; j < count; ++j) table.columns[j] = std::to_string(j);
  if (has_header) {
    Record& names = records[begin];
    table.header_line = names.line;
    if (header_lacks_first_name) {
      for (size_t j = 0; j < names.size(); ++j) table.columns[j + 1] = names.cells[j];
    } else {
      conform(names);
      for (size_t j = 0; j < count; ++j) {
        if (!names.cells[j].empty()) table.columns[j] = names.cells[j];
      }
    }
  }
  table.rows.reserve(records.size() - data_begin);
  table.line_numbers.reserve(records.size() - data_begin);
  for (size_t r = data_begin; r < records.size(); ++r) {
    conform(records[r]);
    table.rows.push_back(std::move(records[r].cells));
    table.line_numbers.push_back(records[r].line);
  }
  return table;
}

CsvTable read_csv(const std::filesystem::path& path, const CsvOptions& options) {
  return parse_csv(read_file_maybe_gz(path), path.string(), options);
}

}  // namespace kd::data
