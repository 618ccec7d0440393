#include "kd/data/csv.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <zlib.h>

#include "kd/util/fs.h"
#include "test_util.h"

namespace kd::data {
namespace {

using Rows = std::vector<std::vector<std::string>>;
using Names = std::vector<std::string>;
using Lines = std::vector<int64_t>;

const std::filesystem::path kSklearnData = "/usr/lib/python3/dist-packages/sklearn/datasets/data";

CsvTable parse(const std::string& text, const CsvOptions& options = CsvOptions()) {
  return parse_csv(text, "f.csv", options);
}

// Every cell of the table, row by row.
Rows rows_of(const CsvTable& t) {
  Rows rows(t.num_rows());
  for (size_t r = 0; r < t.num_rows(); ++r) {
    for (size_t j = 0; j < t.columns.size(); ++j) rows[r].emplace_back(t.cell(r, j));
  }
  return rows;
}

TEST(Csv, ReadsHeaderRowsAndLineNumbers) {
  test::TempDir dir;
  write_file_atomic(dir / "t.csv", "name,age,score\nann,31,1.5\nbob,42,2.5\n");
  CsvTable t = read_csv(dir / "t.csv");
  EXPECT_EQ(t.path, (dir / "t.csv").string());
  EXPECT_EQ(t.columns, (Names{"name", "age", "score"}));
  EXPECT_EQ(rows_of(t), (Rows{{"ann", "31", "1.5"}, {"bob", "42", "2.5"}}));
  EXPECT_EQ(t.line_numbers, (Lines{2, 3}));
  EXPECT_EQ(t.delimiter, ",");
  EXPECT_EQ(t.header_line, 1);
}

TEST(Csv, QuotedFieldsFollowRfc4180) {
  CsvTable t = parse(
      "id,text,x\n"
      "1,\"a, b\",2\n"
      "2,\"she said \"\"hi\"\"\",3\n"
      "3,\"two\nlines\",4\n"
      "4, \"spaced\" ,5\n"
      "5,\"\",6\n");
  EXPECT_EQ(rows_of(t), (Rows{{"1", "a, b", "2"},
                              {"2", "she said \"hi\"", "3"},
                              {"3", "two\nlines", "4"},
                              {"4", "spaced", "5"},
                              {"5", "", "6"}}));
  // The row after the two-line cell starts on line 6.
  EXPECT_EQ(t.line_numbers, (Lines{2, 3, 4, 6, 7}));
}

TEST(Csv, QuotedHeaderAndQuotesInsideUnquotedCells) {
  CsvTable t = parse("\"a\",\"b,c\"\n5 \"in\",6\n7,\"x\"y\n");
  EXPECT_EQ(t.columns, (Names{"a", "b,c"}));
  EXPECT_EQ(rows_of(t), (Rows{{"5 \"in\"", "6"}, {"7", "xy"}}));
}

TEST(Csv, CrlfBomAndLoneCrReadLikeLf) {
  CsvTable lf = parse("a,b\n1,\"x\ny\"\n3,4\n");
  CsvTable crlf = parse(
      "\xEF\xBB\xBF"
      "a,b\r\n1,\"x\r\ny\"\r\n3,4\r\n");
  CsvTable cr = parse("a,b\r1,\"x\ry\"\r3,4\r");
  for (const CsvTable* t : {&crlf, &cr}) {
    EXPECT_EQ(t->columns, lf.columns);
    EXPECT_EQ(rows_of(*t), rows_of(lf));
    EXPECT_EQ(t->line_numbers, lf.line_numbers);
  }
  EXPECT_EQ(crlf.columns[0], "a");  // no BOM left in the first name
  EXPECT_EQ(lf.line_numbers, (Lines{2, 4}));
}

TEST(Csv, BlankAndAllEmptyLinesAreSkipped) {
  CsvTable t = parse("\n\na,b\n\n1,2\n   \n,\n3,4\n\n");
  EXPECT_EQ(t.columns, (Names{"a", "b"}));
  EXPECT_EQ(rows_of(t), (Rows{{"1", "2"}, {"3", "4"}}));
  EXPECT_EQ(t.line_numbers, (Lines{5, 8}));
  EXPECT_EQ(t.header_line, 3);
}

TEST(Csv, UnquotedCellsAreTrimmedQuotedKept) {
  CsvTable t = parse("a , b\n 1 ,\" x \"\n");
  EXPECT_EQ(t.columns, (Names{"a", "b"}));
  EXPECT_EQ(rows_of(t), (Rows{{"1", " x "}}));
}

TEST(Csv, TrailingDelimiterOnEveryLineIsDropped) {
  CsvTable t = parse("a,b,c,\n1,2,3,\n4,5,6,\n");
  EXPECT_EQ(t.columns, (Names{"a", "b", "c"}));
  EXPECT_EQ(rows_of(t), (Rows{{"1", "2", "3"}, {"4", "5", "6"}}));
}

TEST(Csv, TrailingDelimiterOnDataLinesOnly) {
  CsvTable t = parse("a,b,c\n1,2,3,\n4,5,6\n");
  EXPECT_EQ(t.columns, (Names{"a", "b", "c"}));
  EXPECT_EQ(rows_of(t), (Rows{{"1", "2", "3"}, {"4", "5", "6"}}));
}

TEST(Csv, EmptyLastCellIsKeptWhenOtherRowsFillIt) {
  CsvTable t = parse("1,2,\n4,5,6\n7,8,9\n");
  EXPECT_EQ(t.columns, (Names{"0", "1", "2"}));
  EXPECT_EQ(rows_of(t), (Rows{{"1", "2", ""}, {"4", "5", "6"}, {"7", "8", "9"}}));
}

TEST(Csv, DetectsDelimiters) {
  struct Case {
    std::string text, delimiter;
    Names columns;
  };
  std::vector<Case> cases = {
      {"a,b\n1.5,2\n3,4\n", ",", {"a", "b"}},
      {"a;b;c\n1,5;2,25;3\n4,5;6,75;7\n", ";", {"a", "b", "c"}},  // decimal commas
      {"city\tpeople\nNew York\t8.3\nSan Jose\t1.0\n", "\t", {"city", "people"}},
      {"a|b\n1|2\n3|4\n", "|", {"a", "b"}},
      {"  a   b  c\n 1 2   3\n4\t5 6  \n", "whitespace", {"a", "b", "c"}},
      {"x\n1\n2\n", ",", {"x"}},  // one column
  };
  for (const auto& c : cases) {
    CsvTable t = parse(c.text);
    EXPECT_EQ(t.delimiter, c.delimiter) << c.text;
    EXPECT_EQ(t.columns, c.columns) << c.text;
    EXPECT_EQ(t.num_rows(), 2u) << c.text;
  }
  EXPECT_EQ(rows_of(parse("a b c\n 1 2   3\n")), (Rows{{"1", "2", "3"}}));
  EXPECT_EQ(rows_of(parse("city\tpeople\nNew York\t8.3\nSan Jose\t1.0\n"))[0], (Names{"New York", "8.3"}));
}

TEST(Csv, ExplicitDelimiter) {
  CsvTable t = parse("a;b,c\n1;2,3\n", CsvOptions().delimiter(";"));
  EXPECT_EQ(t.columns, (Names{"a", "b,c"}));
  EXPECT_EQ(rows_of(parse("a\tb\n1\t2\n", CsvOptions().delimiter("\t"))), (Rows{{"1", "2"}}));
  EXPECT_EQ(parse("a\tb\n1\t2\n", CsvOptions().delimiter("tab")).delimiter, "\t");
  EXPECT_EQ(rows_of(parse("a  b\n1   2\n", CsvOptions().delimiter("whitespace"))), (Rows{{"1", "2"}}));
  // With a fixed comma, a line of other text is one field and so ragged.
  KD_EXPECT_ERROR(parse("a,b\n1;2\n", CsvOptions().delimiter(",")),
                  "f.csv:2: expected 2 fields (as on line 1), found 1");
}

TEST(Csv, HeaderAutoDetection) {
  CsvTable numeric = parse("1,2,3\n4,5,6\n");
  EXPECT_EQ(numeric.columns, (Names{"0", "1", "2"}));
  EXPECT_EQ(numeric.num_rows(), 2u);
  EXPECT_EQ(numeric.header_line, 0);

  // A text first row above numbers is a header, even when a data row has text in a categorical column.
  CsvTable mixed = parse("color,size\nred,1\nblue,2\n");
  EXPECT_EQ(mixed.columns, (Names{"color", "size"}));
  CsvTable first_row_data = parse("red,1\nblue,2\n");
  EXPECT_EQ(first_row_data.columns, (Names{"0", "1"}));
  EXPECT_EQ(first_row_data.num_rows(), 2u);

  // Missing-value tokens in the first data row do not make it a header.
  CsvTable missing = parse("NA,NA,3\n1,2,3\n4,5,6\n");
  EXPECT_EQ(missing.header_line, 0);
  EXPECT_EQ(missing.num_rows(), 3u);

  // pandas writes an unnamed index column: its header cell is empty and takes the index as name.
  CsvTable pandas = parse(",a,b\n0,1.5,2\n1,3.5,4\n");
  EXPECT_EQ(pandas.columns, (Names{"0", "a", "b"}));

  // No numeric column: a header's cells do not recur below it.
  EXPECT_EQ(parse("color,size\nred,big\nblue,big\n").columns, (Names{"color", "size"}));
  EXPECT_EQ(parse("red,big\nblue,big\ngreen,small\n").columns, (Names{"0", "1"}));
}

TEST(Csv, HeaderNoneReadsEveryLineAsData) {
  CsvTable t = parse("a,b\n1,2\n", CsvOptions().header("none"));
  EXPECT_EQ(t.columns, (Names{"0", "1"}));
  EXPECT_EQ(rows_of(t), (Rows{{"a", "b"}, {"1", "2"}}));
  EXPECT_EQ(t.line_numbers, (Lines{1, 2}));
}

TEST(Csv, HeaderLineNumberSkipsTheLinesAbove) {
  // The lines above are skipped unread: their unbalanced quote and other delimiter do not matter.
  CsvTable t = parse("exported \"by tool\nsemi;colons;here\nx,y\n1,2\n3,4\n", CsvOptions().header("3"));
  EXPECT_EQ(t.columns, (Names{"x", "y"}));
  EXPECT_EQ(rows_of(t), (Rows{{"1", "2"}, {"3", "4"}}));
  EXPECT_EQ(t.line_numbers, (Lines{4, 5}));
  EXPECT_EQ(t.header_line, 3);
  EXPECT_EQ(t.delimiter, ",");
  // A numeric header line is still the header when asked for.
  EXPECT_EQ(parse("1,2\n3,4\n", CsvOptions().header("1")).columns, (Names{"1", "2"}));
}

TEST(Csv, SummaryLineWithOtherFieldCountIsSkipped) {
  // The shape of scikit-learn's breast_cancer.csv.
  CsvTable t = parse("3,2,malignant,benign,extra\n1.5,2,0\n3.5,4,1\n5.5,6,0\n");
  EXPECT_EQ(t.header_line, 0);
  EXPECT_EQ(t.columns, (Names{"0", "1", "2"}));
  EXPECT_EQ(t.num_rows(), 3u);
  EXPECT_EQ(t.line_numbers[0], 2);
}

TEST(Csv, SummaryLineAboveHeaderIsSkipped) {
  // The shape of boston_house_prices.csv: "506,13,,,," above the names.
  CsvTable t = parse("2,2,\n\"A\",\"B\",\"Y\"\n1,2,3\n4,5,6\n");
  EXPECT_EQ(t.columns, (Names{"A", "B", "Y"}));
  EXPECT_EQ(t.header_line, 2);
  EXPECT_EQ(rows_of(t), (Rows{{"1", "2", "3"}, {"4", "5", "6"}}));
}

TEST(Csv, HeaderWithOneNameLessThanTheRows) {
  // R's write.table: the row-name column has no name.
  CsvTable t = parse("\"a\" \"b\"\n\"1\" 1.5 2\n\"2\" 3.5 4\n");
  EXPECT_EQ(t.delimiter, "whitespace");
  EXPECT_EQ(t.columns, (Names{"0", "a", "b"}));
  EXPECT_EQ(rows_of(t), (Rows{{"1", "1.5", "2"}, {"2", "3.5", "4"}}));
}

TEST(Csv, KeepsAndAppendsRows) {
  CsvTable t = parse("a,b\n1,x\n2,\n3,\"z,z\"\n4,w\n");
  t.keep_rows({0, 2, 3});
  EXPECT_EQ(rows_of(t), (Rows{{"1", "x"}, {"3", "z,z"}, {"4", "w"}}));
  EXPECT_EQ(t.line_numbers, (Lines{2, 4, 5}));
  t.append_rows(parse("a,b\n5,\"\"\n6,v\n"));
  EXPECT_EQ(rows_of(t), (Rows{{"1", "x"}, {"3", "z,z"}, {"4", "w"}, {"5", ""}, {"6", "v"}}));
  EXPECT_EQ(t.line_numbers, (Lines{2, 4, 5, 2, 3}));
  t.keep_rows({1, 4});
  EXPECT_EQ(rows_of(t), (Rows{{"3", "z,z"}, {"6", "v"}}));
  EXPECT_EQ(t.line_numbers, (Lines{4, 3}));
}

TEST(Csv, ReadsGzipTransparently) {
  test::TempDir dir;
  std::string path = (dir / "t.csv.gz").string();
  gzFile out = gzopen(path.c_str(), "wb");
  ASSERT_NE(out, nullptr);
  std::string text = "a,b\n1,2\n";
  gzwrite(out, text.data(), static_cast<unsigned>(text.size()));
  gzclose(out);
  CsvTable t = read_csv(path);
  EXPECT_EQ(t.columns, (Names{"a", "b"}));
  EXPECT_EQ(rows_of(t), (Rows{{"1", "2"}}));
}

TEST(Csv, ErrorMissingFile) {
  KD_EXPECT_ERROR(read_csv("/nonexistent/kd/none.csv"), "/nonexistent/kd/none.csv: file does not exist");
}

TEST(Csv, ErrorEmptyFile) {
  KD_EXPECT_ERROR(parse(""), "f.csv: empty file (no data rows)");
  KD_EXPECT_ERROR(parse("\n \r\n\n"), "f.csv: empty file (no data rows)");
  KD_EXPECT_ERROR(parse("a,b,c\n"), "f.csv: no data rows after the header on line 1");
  KD_EXPECT_ERROR(parse("x,y\n\n", CsvOptions().header("1")),
                  "f.csv: no data rows after the header on line 1");
}

TEST(Csv, ErrorRaggedRow) {
  std::string text = "a,b,c,d,e\n";
  for (int i = 0; i < 14; ++i) text += "1,2,3,4,5\n";
  text += "1,2,3,4\n";  // line 16
  KD_EXPECT_ERROR(parse(text), "f.csv:16: expected 5 fields (as on line 1), found 4");
  KD_EXPECT_ERROR(parse("1,2,3,4,5\n1,2,3,4,5\n1,2,3,4,5,6\n"),
                  "f.csv:3: expected 5 fields (as on line 1), found 6");
  // Without a header the first data row sets the count; a summary line is not counted.
  KD_EXPECT_ERROR(parse("9,9\n1,2,3\n1,2,3\n1,2,3,4\n"),
                  "f.csv:4: expected 3 fields (as on line 2), found 4");
  // A ragged file with another delimiter is still split by it.
  KD_EXPECT_ERROR(parse("a;b;c\n1;2;3\n1;2\n1;2;3\n"), "f.csv:3: expected 3 fields (as on line 1), found 2");
}

TEST(Csv, ErrorUnterminatedQuoteNamesWhereItOpened) {
  KD_EXPECT_ERROR(parse("a,b\n1,2\n3,\"open\n4,5\n6,7\n"),
                  "f.csv:3: unterminated quoted field: the quote opened on line 3 is never closed");
  KD_EXPECT_ERROR(parse("a,b\n1,\"x\n", CsvOptions().delimiter(",")), "f.csv:2: unterminated quoted field");
}

TEST(Csv, ErrorHeaderLineBeyondTheFile) {
  KD_EXPECT_ERROR(parse("a,b\n1,2\n", CsvOptions().header("5")),
                  "f.csv: header line 5 is beyond the end of the file (2 lines)");
  KD_EXPECT_ERROR(parse("a,b\n1,2", CsvOptions().header("3")),
                  "f.csv: header line 3 is beyond the end of the file (2 lines)");
  KD_EXPECT_ERROR(parse("a,b\n\n1,2\n", CsvOptions().header("2")), "f.csv:2: header line is blank");
}

TEST(Csv, ErrorBadOptions) {
  KD_EXPECT_ERROR(parse("a\n1\n", CsvOptions().header("first")),
                  "f.csv: header \"first\" is not supported, expected auto, none or a 1-based line number");
  KD_EXPECT_ERROR(parse("a\n1\n", CsvOptions().header("0")), "header \"0\" is not supported");
  KD_EXPECT_ERROR(parse("a\n1\n", CsvOptions().delimiter("ab")), "f.csv: delimiter \"ab\" is not supported");
}

// The scikit-learn files, at the reader level (tabular_test.cpp checks their values against sklearn).
TEST(CsvSklearn, BreastCancerSkipsItsSummaryLine) {
  CsvTable t = read_csv(kSklearnData / "breast_cancer.csv");
  EXPECT_EQ(t.header_line, 0);
  EXPECT_EQ(t.columns.size(), 31u);
  EXPECT_EQ(t.num_rows(), 569u);
  EXPECT_EQ(t.line_numbers.front(), 2);
  EXPECT_EQ(t.cell(0, 0), "17.99");
}

TEST(CsvSklearn, IrisSummaryLineIsItsHeader) {
  CsvTable t = read_csv(kSklearnData / "iris.csv");
  EXPECT_EQ(t.header_line, 1);
  EXPECT_EQ(t.columns, (Names{"150", "4", "setosa", "versicolor", "virginica"}));
  EXPECT_EQ(t.num_rows(), 150u);
}

TEST(CsvSklearn, GzippedFilesWithoutHeader) {
  CsvTable digits = read_csv(kSklearnData / "digits.csv.gz");
  EXPECT_EQ(digits.header_line, 0);
  EXPECT_EQ(digits.delimiter, ",");
  EXPECT_EQ(digits.columns.size(), 65u);
  EXPECT_EQ(digits.num_rows(), 1797u);

  CsvTable diabetes = read_csv(kSklearnData / "diabetes_data_raw.csv.gz");
  EXPECT_EQ(diabetes.delimiter, "whitespace");
  EXPECT_EQ(diabetes.header_line, 0);
  EXPECT_EQ(diabetes.columns.size(), 10u);
  EXPECT_EQ(diabetes.num_rows(), 442u);

  CsvTable target = read_csv(kSklearnData / "diabetes_target.csv.gz");
  EXPECT_EQ(target.columns, (Names{"0"}));
  EXPECT_EQ(target.num_rows(), 442u);
  EXPECT_EQ(target.cell(0, 0), "1.510000000000000000e+02");
}

TEST(CsvSklearn, BostonHeaderBelowItsSummaryLine) {
  CsvTable t = read_csv(kSklearnData / "boston_house_prices.csv");
  EXPECT_EQ(t.header_line, 2);
  EXPECT_EQ(t.columns.front(), "CRIM");
  EXPECT_EQ(t.columns.back(), "MEDV");
  EXPECT_EQ(t.num_rows(), 506u);
}

// A large quote-free file is tokenized in pieces on several threads: the table (cells, columns, line
// numbers) is the one a single thread reads, with \r\n, \r and \n line ends, blank lines, a header line
// below a preamble, whitespace-delimited text and trailing delimiters; an error names the same line.
TEST(Csv, LargeFilesTokenizedInPiecesGiveTheSameTable) {
  auto big = [](const std::string& line_end, char delimiter, bool trailing) {
    std::string text = "preamble\nx" + std::string(1, delimiter) + "y" + std::string(1, delimiter) + "label" + line_end;
    for (int i = 0; text.size() < (size_t{9} << 20); ++i) {
      text += std::to_string(i * 0.37) + delimiter + " " + std::to_string(-i) + delimiter + (i % 3 ? "a" : "bb");
      if (trailing) text += delimiter;
      text += line_end;
      if (i % 1000 == 7) text += line_end;  // a blank line
    }
    return text;
  };
  struct Case {
    std::string line_end;
    char delimiter;
    bool trailing;
    CsvOptions options;
  };
  std::vector<Case> cases = {{"\n", ',', false, CsvOptions().header("2")},
                             {"\r\n", ';', true, CsvOptions().header("2")},
                             {"\r", ',', false, CsvOptions().header("2")},
                             {"\n", ' ', false, CsvOptions().header("2").delimiter("whitespace")}};
  int threads = at::get_num_threads();
  for (const Case& c : cases) {
    SCOPED_TRACE("delimiter '" + std::string(1, c.delimiter) + "' line end of " + std::to_string(c.line_end.size()));
    std::string text = big(c.line_end, c.delimiter, c.trailing);
    at::set_num_threads(4);
    CsvTable pieces = parse(text, c.options);
    at::set_num_threads(1);
    CsvTable whole = parse(text, c.options);
    at::set_num_threads(threads);
    EXPECT_EQ(pieces.columns, (Names{"x", "y", "label"}));
    EXPECT_EQ(pieces.columns, whole.columns);
    EXPECT_EQ(pieces.header_line, whole.header_line);
    ASSERT_EQ(pieces.num_rows(), whole.num_rows());
    EXPECT_GT(pieces.num_rows(), 100000u);
    EXPECT_EQ(pieces.line_numbers, whole.line_numbers);
    EXPECT_EQ(rows_of(pieces), rows_of(whole));
    EXPECT_EQ(pieces.line_numbers.back(), whole.line_numbers.back());
  }
  // A short row near the end: the same line number either way.
  std::string text = big("\n", ',', false) + "1,2\n";
  int64_t lines = std::count(text.begin(), text.end(), '\n');
  at::set_num_threads(4);
  KD_EXPECT_ERROR(parse(text, CsvOptions().header("2")),
                  "f.csv:" + std::to_string(lines) + ": expected 3 fields (as on line 2), found 2");
  at::set_num_threads(threads);
}

}  // namespace
}  // namespace kd::data
