// CSV reader for users' tabular files: a table of unquoted text cells, one row per record, with the
// line each row starts on kept for error messages. Typing the cells (numbers, categories, labels) is
// the tabular encoder's job (kd/data/tabular.h).
//
// What it accepts:
// - RFC 4180 quoting: "a,b" / "say ""hi""" / newlines inside quotes; CRLF, LF or CR line ends; a UTF-8
//   byte-order mark; .gz files (recognised by their magic bytes, whatever the name).
// - Blank lines, and lines whose every cell is empty (",,,,"), are skipped. Unquoted cells lose their
//   surrounding spaces; quoted cells are kept exactly (a space before the opening quote is allowed).
// - A trailing delimiter: a record with one field too many whose last field is empty and unquoted
//   ("1,2,3,") is read as if the delimiter were not there. When every record ends in one, the empty
//   last column is dropped.
// - delimiter "auto" tries , ; \t | and then "whitespace" (runs of spaces and tabs, as in
//   diabetes_data_raw.csv) on the first records, and takes the one that splits them into a consistent
//   number of fields > 1 (the most fields if several do). A file where none does is one column.
// - header "auto":
//   * a leading "summary line" whose field count differs from every following record (scikit-learn's
//     breast_cancer.csv starts "569,30,malignant,benign" above 31-field rows) is skipped as a preamble;
//   * the first record is the header when, in most of the columns whose following cells are numbers,
//     its cell is not a number (so iris.csv's "150,4,setosa,versicolor,virginica" is read as the header:
//     the columns are named "150", "4", "setosa", ...); in a table with no numeric column, when none of
//     its cells occurs again in its column;
//   * if the first record is not a header but the second is, the first is a preamble
//     (boston_house_prices.csv: "506,13,,,,,,,,,,,," above the header line).
//   header "none": every record is data; "N": the header is the record starting on line N (1-based),
//   everything above it is skipped unread.
// Columns without a header, and empty header cells, are named by their index "0", "1", ...
//
// Example: CsvTable t = read_csv("iris.csv", CsvOptions().delimiter(",").header("auto"));
//          // t.num_rows() == 150, t.columns.size() == 5, t.line_numbers[0] == 2, t.cell(0, 4) == "0"
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace kd::data {

struct CsvOptions {
  // auto | "," | ";" | "\t" | "|" | "whitespace" (runs of spaces/tabs)
  TORCH_ARG(std::string, delimiter) = "auto";
  // auto | none | "N" = 1-based line number of the header line (lines before are skipped)
  TORCH_ARG(std::string, header) = "auto";
};

// The cells are stored back to back in one buffer, row-major, with where each one starts: a file takes
// about its own size plus 8 bytes a cell, not a heap string a cell.
class CsvTable {
 public:
  std::string path;
  std::vector<std::string> columns;   // header names, or "0".."K-1" when there is no header
  std::vector<int64_t> line_numbers;  // 1-based line in the file where each row starts; one per row
  std::string delimiter;              // the one in force: "," ";" "\t" "|" or "whitespace"
  int64_t header_line = 0;            // 1-based line of the header; 0 when there is none

  size_t num_rows() const { return line_numbers.size(); }
  // The unquoted text of a cell, valid until the table is changed; row < num_rows(), column < columns.size().
  std::string_view cell(size_t row, size_t column) const {
    size_t i = row * columns.size() + column;
    return std::string_view(cell_text_.data() + cell_offsets_[i], cell_offsets_[i + 1] - cell_offsets_[i]);
  }

  // Keeps the rows at `rows` (increasing indices), in order, in place: no second copy of the table.
  void keep_rows(const std::vector<size_t>& rows);
  // Appends the rows of `other`, which has as many columns, after this table's (its line numbers with them).
  void append_rows(const CsvTable& other);

 private:
  friend CsvTable parse_csv(std::string text, const std::string& path, const CsvOptions& options);
  void release_unused();  // gives back the buffers' room when most of it is unused

  std::string cell_text_;                  // every cell's text, back to back
  std::vector<uint64_t> cell_offsets_{0};  // cell i is [offsets[i], offsets[i + 1]); rows * columns + 1
};

// Reads a CSV file (gzipped or not). kd::Error with one line naming the file (and line) on a missing or
// empty file, a file without data rows, a ragged row ("f.csv:17: expected 5 fields (as on line 2),
// found 4"), an unterminated quote (naming the line it opened on), or a header line beyond the file.
CsvTable read_csv(const std::filesystem::path& path, const CsvOptions& options = CsvOptions());

// Parses CSV text held in memory; `path` only names it in messages.
CsvTable parse_csv(std::string text, const std::string& path, const CsvOptions& options = CsvOptions());

}  // namespace kd::data
