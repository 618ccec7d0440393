#include "kd/data/tabular.h"

#include <gtest/gtest.h>

#include <numeric>

#include "test_util.h"

namespace kd::data {
namespace {

using Names = std::vector<std::string>;

const std::filesystem::path kSklearnData = "/usr/lib/python3/dist-packages/sklearn/datasets/data";

CsvTable parse(const std::string& text) { return parse_csv(text, "f.csv"); }

std::vector<int64_t> all_rows(const LabeledTable& data) {
  std::vector<int64_t> rows(data.table.num_rows());
  std::iota(rows.begin(), rows.end(), 0);
  return rows;
}

void expect_row(const torch::Tensor& x, int64_t row, const std::vector<double>& expected) {
  ASSERT_EQ(x.size(1), static_cast<int64_t>(expected.size()));
  auto values = x[row].contiguous();
  const float* v = values.data_ptr<float>();
  for (size_t j = 0; j < expected.size(); ++j) {
    EXPECT_FLOAT_EQ(v[j], static_cast<float>(expected[j])) << "row " << row << ", feature " << j;
  }
}

std::vector<int64_t> to_vector(const torch::Tensor& labels) {
  auto l = labels.contiguous();
  return std::vector<int64_t>(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + l.numel());
}

// Categorical, numeric and quoted cells (a header with a comma, a category with a comma, doubled quotes),
// missing values in two kinds of column, and categories that occur only in the test rows (4 and 5).
const char* kShapes =
    "id,color,\"size, cm\",shape,label\n"
    "1,red,10,\"round, small\",yes\n"
    "2,blue,NA,square,no\n"
    "3,red,30,\"round, small\",yes\n"
    "4,,40,square,no\n"
    "5,green,50,\"tri \"\"angle\"\"\",yes\n"
    "6,purple,60,square,no\n";
const std::vector<int64_t> kShapesTrain = {0, 1, 2, 3};

TabularOptions shapes_options() { return TabularOptions().drop({"id"}).missing("impute"); }

TEST(Tabular, OneHotRoundTripFittedOnTrainRowsOnly) {
  LabeledTable data = label_table(parse(kShapes), shapes_options());
  EXPECT_EQ(data.class_names, (Names{"no", "yes"}));
  EXPECT_EQ(to_vector(data.labels), (std::vector<int64_t>{1, 0, 1, 0, 1, 0}));
  EXPECT_EQ(data.feature_columns, (std::vector<size_t>{1, 2, 3}));
  EXPECT_EQ(data.target_column, "label");

  TabularEncoder encoder = TabularEncoder::fit(data, kShapesTrain, shapes_options());
  EXPECT_EQ(encoder.feature_names(),
            (Names{"color=blue", "color=red", "size, cm", "shape=round, small", "shape=square"}));
  EXPECT_EQ(encoder.categorical_features(), (std::vector<bool>{true, true, false, true, true}));
  torch::Tensor x = encoder.transform(data);
  ASSERT_EQ(x.sizes(), (std::vector<int64_t>{6, 5}));
  EXPECT_EQ(x.dtype(), torch::kFloat32);
  // Imputed: the mean of the training sizes (10 + 30 + 40) / 3 (not 50, 60 from the test rows), and the
  // most frequent training color, red. green, purple and tri "angle" occur only in test rows: all zeros.
  expect_row(x, 0, {0, 1, 10, 1, 0});
  expect_row(x, 1, {1, 0, 80.0 / 3.0, 0, 1});
  expect_row(x, 2, {0, 1, 30, 1, 0});
  expect_row(x, 3, {0, 1, 40, 0, 1});
  expect_row(x, 4, {0, 0, 50, 0, 0});
  expect_row(x, 5, {0, 0, 60, 0, 1});

  // Stored and restored, the encoder gives the same features.
  nlohmann::json json = encoder.to_json();
  TabularEncoder restored = TabularEncoder::from_json(nlohmann::json::parse(json.dump()));
  EXPECT_EQ(restored.feature_names(), encoder.feature_names());
  EXPECT_EQ(restored.class_names(), (Names{"no", "yes"}));
  EXPECT_TRUE(torch::equal(restored.transform(data), x));
  EXPECT_EQ(json["columns"][1]["mean"].get<double>(), 80.0 / 3.0);
  EXPECT_EQ(json["columns"][0]["mode"].get<std::string>(), "red");
}

TEST(Tabular, IndexEncodingReservesAnIndexForUnseenCategories) {
  TabularOptions options = shapes_options().categorical_encoding("index");
  LabeledTable data = label_table(parse(kShapes), options);
  TabularEncoder encoder = TabularEncoder::fit(data, kShapesTrain, options);
  EXPECT_EQ(encoder.feature_names(), (Names{"color", "size, cm", "shape"}));
  EXPECT_EQ(TabularEncoder::from_json(encoder.to_json()).categorical_features(), (std::vector<bool>{true, false, true}));
  torch::Tensor x = encoder.transform(data);
  expect_row(x, 0, {1, 10, 0});
  expect_row(x, 1, {0, 80.0 / 3.0, 1});
  expect_row(x, 3, {1, 40, 1});
  expect_row(x, 4, {2, 50, 2});  // 2 = the number of training categories
  expect_row(x, 5, {2, 60, 1});
  EXPECT_TRUE(torch::equal(TabularEncoder::from_json(encoder.to_json()).transform(data), x));
}

TEST(Tabular, MissingDropRemovesRowsAndKeepsLineNumbers) {
  TabularOptions options = TabularOptions().drop({"id"}).missing("drop");
  LabeledTable data = label_table(parse(kShapes), options);
  EXPECT_EQ(data.table.line_numbers, (std::vector<int64_t>{2, 4, 6, 7}));
  EXPECT_EQ(to_vector(data.labels), (std::vector<int64_t>{1, 1, 1, 0}));
  TabularEncoder encoder = TabularEncoder::fit(data, {0, 1}, options);
  torch::Tensor x = encoder.transform(data);
  // Training categories: red only; shape: "round, small" only.
  EXPECT_EQ(encoder.feature_names(), (Names{"color=red", "size, cm", "shape=round, small"}));
  expect_row(x, 0, {1, 10, 1});
  expect_row(x, 2, {0, 50, 0});
  expect_row(x, 3, {0, 60, 0});
}

TEST(Tabular, ErrorMissingValueWithPolicyError) {
  KD_EXPECT_ERROR(label_table(parse(kShapes), TabularOptions().drop({"id"})),
                  "f.csv:3: column \"size, cm\": missing value (\"NA\"); set data.missing to drop or impute");
  KD_EXPECT_ERROR(label_table(parse("age,y\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n7,0\nNA,1\n"), TabularOptions()),
                  "f.csv:9: column \"age\": missing value (\"NA\"); set data.missing to drop or impute");
  // An encoder fitted without imputation refuses missing cells in a table labelled more leniently.
  LabeledTable clean = label_table(parse("a,y\n1,0\n2,1\n"), TabularOptions());
  TabularEncoder encoder = TabularEncoder::fit(clean, all_rows(clean), TabularOptions());
  LabeledTable with_gap = label_table(parse("a,y\n1,0\n?,1\n"), TabularOptions().missing("impute"));
  KD_EXPECT_ERROR(encoder.transform(with_gap), "f.csv:3: column \"a\": missing value (\"?\")");
}

TEST(Tabular, ErrorMissingTarget) {
  const char* text = "a,y\n1,0\n2,\n3,1\n";
  KD_EXPECT_ERROR(label_table(parse(text), TabularOptions()),
                  "f.csv:3: target column \"y\": missing value (\"\"); rows without a label cannot be used");
  KD_EXPECT_ERROR(label_table(parse(text), TabularOptions().missing("impute")),
                  "cannot be imputed; set data.missing to drop");
  EXPECT_EQ(label_table(parse(text), TabularOptions().missing("drop")).table.line_numbers,
            (std::vector<int64_t>{2, 4}));
}

TEST(Tabular, SeparateTestFileUsesTrainingClassesAndEncoder) {
  TabularOptions options = shapes_options();
  LabeledTable train = label_table(parse(kShapes), options);
  TabularEncoder encoder = TabularEncoder::fit(train, all_rows(train), options);
  // The test file holds only class "yes": still class 1, as in training.
  LabeledTable test = label_table(parse("id,color,\"size, cm\",shape,label\n9,green,5,square,yes\n"), options,
                                  train.class_names);
  EXPECT_EQ(to_vector(test.labels), (std::vector<int64_t>{1}));
  EXPECT_EQ(test.class_names, (Names{"no", "yes"}));
  // Fitted on every row this time, so green is a training category.
  EXPECT_EQ(encoder.feature_names(),
            (Names{"color=blue", "color=green", "color=purple", "color=red", "size, cm", "shape=round, small",
                   "shape=square", "shape=tri \"angle\""}));
  expect_row(encoder.transform(test), 0, {0, 1, 0, 0, 5, 0, 1, 0});

  KD_EXPECT_ERROR(
      label_table(parse("id,color,\"size, cm\",shape,label\n9,red,5,square,maybe\n"), options,
                  train.class_names),
      "f.csv:2: target column \"label\": class \"maybe\" is not one of the training classes (no, yes)");
  LabeledTable other = label_table(parse("id,colour,\"size, cm\",shape,label\n9,red,5,square,yes\n"), options,
                                   train.class_names);
  KD_EXPECT_ERROR(encoder.transform(other),
                  "f.csv: feature column 1 is \"colour\", but the encoder was fitted with \"color\" there");
  LabeledTable narrower =
      label_table(parse("color,shape,label\nred,square,yes\nred,square,no\n"), TabularOptions());
  KD_EXPECT_ERROR(encoder.transform(narrower), "f.csv: 2 feature columns, but the encoder was fitted on 3");
}

TEST(Tabular, ClassLabels) {
  // Integers in numeric order, whatever their spelling.
  LabeledTable ints = label_table(parse("x,y\n1,10\n2,9\n3,2\n4,9.0\n5,1e1\n"), TabularOptions());
  EXPECT_EQ(ints.class_names, (Names{"2", "9", "10"}));
  EXPECT_EQ(to_vector(ints.labels), (std::vector<int64_t>{2, 1, 0, 1, 2}));
  // Text sorted.
  LabeledTable text = label_table(parse("x,y\n1,cat\n2,ant\n3,bee\n4,ant\n"), TabularOptions());
  EXPECT_EQ(text.class_names, (Names{"ant", "bee", "cat"}));
  EXPECT_EQ(to_vector(text.labels), (std::vector<int64_t>{2, 0, 1, 0}));
  EXPECT_EQ(text.labels.dtype(), torch::kInt64);
}

TEST(Tabular, TargetByNameOrIndex) {
  const char* text = "a,b,c\n1,2,0\n3,4,1\n";
  EXPECT_EQ(label_table(parse(text), TabularOptions().target("a")).feature_columns,
            (std::vector<size_t>{1, 2}));
  EXPECT_EQ(label_table(parse(text), TabularOptions().target("0")).target_column, "a");
  EXPECT_EQ(label_table(parse(text), TabularOptions().target("-3")).target_column, "a");
  EXPECT_EQ(label_table(parse(text), TabularOptions().target("-1")).target_column, "c");
  EXPECT_EQ(label_table(parse(text), TabularOptions().drop({"1"})).feature_columns, (std::vector<size_t>{0}));
}

TEST(Tabular, RegressionTargetsAreFloats) {
  LabeledTable data = label_table(parse("x,y\n1,0.5\n2,-1e2\n"), TabularOptions().task(Task::regression));
  ASSERT_EQ(data.labels.dtype(), torch::kFloat32);
  EXPECT_FLOAT_EQ(data.labels[0].item<float>(), 0.5f);
  EXPECT_FLOAT_EQ(data.labels[1].item<float>(), -100.0f);
  EXPECT_TRUE(data.class_names.empty());
}

TEST(Tabular, ForcedCategoricalNumericColumn) {
  TabularOptions options = TabularOptions().categorical({"zip"});
  LabeledTable data = label_table(parse("zip,n,y\n1000,1,a\n2000,2,b\n1000,3,a\n"), options);
  TabularEncoder encoder = TabularEncoder::fit(data, all_rows(data), options);
  EXPECT_EQ(encoder.feature_names(), (Names{"zip=1000", "zip=2000", "n"}));
  expect_row(encoder.transform(data), 1, {0, 1, 2});
}

TEST(Tabular, ErrorTargetDoesNotExist) {
  const char* text = "sepal,petal,species\n1,2,a\n3,4,b\n";
  KD_EXPECT_ERROR(label_table(parse(text), TabularOptions().target("specis")),
                  "f.csv: target column \"specis\" does not exist; did you mean \"species\"?");
  KD_EXPECT_ERROR(label_table(parse(text), TabularOptions().target("weight")),
                  "f.csv: target column \"weight\" does not exist (columns: sepal, petal, species)");
  KD_EXPECT_ERROR(label_table(parse(text), TabularOptions().target("7")),
                  "f.csv: target column index 7 is out of range: the table has 3 columns (0..2, or -3..-1)");
  KD_EXPECT_ERROR(label_table(parse(text), TabularOptions().target("-4")),
                  "target column index -4 is out of range");
}

TEST(Tabular, ErrorDropAndCategoricalColumns) {
  const char* text = "color,n,y\nred,1,0\nblue,2,1\n";
  KD_EXPECT_ERROR(label_table(parse(text), TabularOptions().drop({"colr"})),
                  "f.csv: data.drop column \"colr\" does not exist; did you mean \"color\"?");
  KD_EXPECT_ERROR(label_table(parse(text), TabularOptions().drop({"y"})),
                  "f.csv: column \"y\" is both the target (data.target) and in data.drop");
  KD_EXPECT_ERROR(
      label_table(parse(text), TabularOptions().drop({"color", "n"})),
      "f.csv: no feature columns left: the table has 3 column(s), the target \"y\" and 2 dropped");
  KD_EXPECT_ERROR(label_table(parse("y\n0\n1\n"), TabularOptions()), "f.csv: no feature columns left");
  KD_EXPECT_ERROR(label_table(parse(text), TabularOptions().categorical({"nn"})),
                  "f.csv: data.categorical column \"nn\" does not exist; did you mean \"n\"?");
  KD_EXPECT_ERROR(
      label_table(parse("a,a,y\n1,2,0\n3,4,1\n"), TabularOptions().target("a")),
      "f.csv: target column \"a\" is ambiguous: columns 0 and 1 have that name; give an index instead");
}

TEST(Tabular, ErrorBadLabels) {
  KD_EXPECT_ERROR(label_table(parse("x,y\n1,a\n2,a\n"), TabularOptions()),
                  "f.csv: target column \"y\" holds a single class (\"a\"); classification needs at least 2");
  KD_EXPECT_ERROR(
      label_table(parse("x,y\n1,0.5\n2,1\n"), TabularOptions()),
      "f.csv:2: target column \"y\": \"0.5\" is not a class label; for a real-valued target set task: "
      "regression");
  KD_EXPECT_ERROR(
      label_table(parse("x,y\n1,0.5\n2,high\n"), TabularOptions().task(Task::regression)),
      "f.csv:3: target column \"y\": \"high\" is not a number (task regression needs a real-valued target)");
  KD_EXPECT_ERROR(label_table(parse("x,y\n1,0.5\n2,inf\n"), TabularOptions().task(Task::regression)),
                  "f.csv:3: target column \"y\": \"inf\" is not finite");
}

TEST(Tabular, ErrorNumericColumnWithText) {
  LabeledTable data = label_table(parse("age,y\n31,0\n42,1\nabc,0\n50,1\n"), TabularOptions());
  KD_EXPECT_ERROR(
      TabularEncoder::fit(data, all_rows(data), TabularOptions()),
      "f.csv:4: column \"age\": \"abc\" is not a number (the column's other cells are numbers; if the "
      "column is categorical, add it to data.categorical)");
  // Even when the text cell is in a test row: the kind of a column comes from every row.
  KD_EXPECT_ERROR(TabularEncoder::fit(data, {0, 1}, TabularOptions()),
                  "f.csv:4: column \"age\": \"abc\" is not a number");
  LabeledTable mostly_text = label_table(parse("color,y\nred,0\n3,1\nblue,0\n"), TabularOptions());
  KD_EXPECT_ERROR(
      TabularEncoder::fit(mostly_text, all_rows(mostly_text), TabularOptions()),
      "f.csv:3: column \"color\": \"3\" is a number among text cells; add \"color\" to data.categorical");
  // Forcing the column categorical accepts it.
  TabularOptions forced = TabularOptions().categorical({"age"});
  EXPECT_EQ(TabularEncoder::fit(data, all_rows(data), forced).feature_names().size(), 4u);
}

TEST(Tabular, ErrorNonFiniteNumbers) {
  for (std::string cell : {"inf", "-Infinity", "1e999"}) {
    LabeledTable data = label_table(parse("x,y\n1,0\n" + cell + ",1\n"), TabularOptions());
    KD_EXPECT_ERROR(TabularEncoder::fit(data, all_rows(data), TabularOptions()),
                    "f.csv:3: column \"x\": \"" + cell + "\" is not finite");
  }
  // "nan" is a missing value by default; without that it is not finite either.
  TabularOptions strict = TabularOptions().missing_values({""});
  LabeledTable data = label_table(parse("x,y\n1,0\nnan,1\n"), strict);
  KD_EXPECT_ERROR(TabularEncoder::fit(data, all_rows(data), strict),
                  "f.csv:3: column \"x\": \"nan\" is not finite");
}

// Custom missing-value tokens, short and long (over 63 characters), are recognised exactly: a cell of a
// token's length that is not the token stays a value.
TEST(Tabular, CustomMissingTokensOfAnyLength) {
  std::string long_token(70, 'm');
  TabularOptions options = TabularOptions().missing("impute").missing_values({"-", long_token});
  LabeledTable data = label_table(parse("x,y\n1,0\n-,1\n" + long_token + ",0\n5,1\n"), options);
  auto encoder = TabularEncoder::fit(data, all_rows(data), options);
  auto x = encoder.transform(data);
  ASSERT_EQ(x.size(0), 4);
  // Both tokens imputed with the mean of 1 and 5.
  expect_row(x, 0, {1});
  expect_row(x, 1, {3});
  expect_row(x, 2, {3});
  expect_row(x, 3, {5});
  TabularOptions strict = TabularOptions().missing_values({"-", long_token});
  LabeledTable other = label_table(parse("x,y\n1,0\n" + std::string(70, 'n') + ",1\n"), strict);
  KD_EXPECT_ERROR(TabularEncoder::fit(other, all_rows(other), strict), "f.csv:3: column \"x\": \"nnn");
}

TEST(Tabular, ErrorImputeFromNothing) {
  TabularOptions options = TabularOptions().missing("impute");
  LabeledTable data = label_table(parse("x,z,y\n1,,0\n2,,1\n3,5,0\n"), options);
  KD_EXPECT_ERROR(
      TabularEncoder::fit(data, {0, 1}, options),
      "f.csv: column \"z\": every training value is missing, nothing to impute from (add it to data.drop)");
}

TEST(Tabular, ErrorNamesTheFirstBadColumnThenItsFirstRow) {
  // Column b's bad cell is on an earlier line than column a's; the error names a, the earlier column.
  LabeledTable data =
      label_table(parse("a,b,y\n1,2,0\n2,x,1\n3,4,0\n4,5,1\nz,6,0\n7,8,1\n"), TabularOptions());
  KD_EXPECT_ERROR(TabularEncoder::fit(data, all_rows(data), TabularOptions()),
                  "f.csv:6: column \"a\": \"z\" is not a number");
  TabularOptions impute = TabularOptions().missing("impute");
  LabeledTable gaps = label_table(parse("a,b,y\n,1,0\n,2,1\n5,x,0\n6,3,1\n7,4,0\n"), impute);
  KD_EXPECT_ERROR(TabularEncoder::fit(gaps, {0, 1}, impute),
                  "f.csv: column \"a\": every training value is missing");

  LabeledTable clean = label_table(parse("a,b,y\n1,2,0\n3,4,1\n"), TabularOptions());
  TabularEncoder encoder = TabularEncoder::fit(clean, all_rows(clean), TabularOptions());
  LabeledTable bad = label_table(parse("a,b,y\n1,x,0\n3,4,1\ninf,5,0\n"), TabularOptions());
  KD_EXPECT_ERROR(encoder.transform(bad), "f.csv:4: column \"a\": \"inf\" is not finite");
}

TEST(Tabular, ErrorBadOptions) {
  CsvTable table = parse("x,y\n1,0\n2,1\n");
  KD_EXPECT_ERROR(label_table(table, TabularOptions().missing("fill")),
                  "data.missing: \"fill\" is not supported, expected error, drop or impute");
  KD_EXPECT_ERROR(label_table(table, TabularOptions().categorical_encoding("ordinal")),
                  "data.categorical_encoding: \"ordinal\" is not supported, expected onehot or index");
}

TEST(Tabular, ErrorBadEncoderJson) {
  KD_EXPECT_ERROR(TabularEncoder::from_json(nlohmann::json::object()),
                  "tabular encoder JSON: not a tabular encoder");
  LabeledTable data = label_table(parse(kShapes), shapes_options());
  nlohmann::json json = TabularEncoder::fit(data, kShapesTrain, shapes_options()).to_json();
  json["columns"][0].erase("categories");
  KD_EXPECT_ERROR(TabularEncoder::from_json(json), "tabular encoder JSON: ");
  json = TabularEncoder::fit(data, kShapesTrain, shapes_options()).to_json();
  json["columns"][1]["kind"] = "ordinal";
  KD_EXPECT_ERROR(
      TabularEncoder::from_json(json),
      "tabular encoder JSON: column \"size, cm\": kind \"ordinal\" is not numeric or categorical");
}

TEST(Tabular, ErrorTargetFileRowCount) {
  KD_EXPECT_ERROR(
      label_table(parse("1,2\n3,4\n5,6\n"), parse_csv("1\n2\n", "t.csv"), TabularOptions()),
      "t.csv: 2 rows, but the feature file f.csv has 3; the target file needs one row per feature row");
}

// The scikit-learn CSV files, loaded as sklearn loads them. Expected numbers: printed by
// /usr/bin/python3 tests/fixtures/sklearn_first_rows.py (scikit-learn 1.2.1, sklearn.datasets.load_*).
struct Loaded {
  torch::Tensor x;
  LabeledTable data;
};

Loaded load(const CsvTable& table, const TabularOptions& options) {
  Loaded out{torch::Tensor(), label_table(table, options)};
  out.x = TabularEncoder::fit(out.data, all_rows(out.data), options).transform(out.data);
  return out;
}

void expect_sum(const torch::Tensor& x, double expected) {
  EXPECT_NEAR(x.to(torch::kFloat64).sum().item<double>(), expected, std::abs(expected) * 1e-6);
}

TEST(TabularSklearn, Iris) {
  Loaded iris = load(read_csv(kSklearnData / "iris.csv"), TabularOptions());
  ASSERT_EQ(iris.x.sizes(), (std::vector<int64_t>{150, 4}));
  EXPECT_EQ(iris.data.class_names, (Names{"0", "1", "2"}));
  expect_row(iris.x, 0, {5.1, 3.5, 1.4, 0.2});
  expect_row(iris.x, 149, {5.9, 3.0, 5.1, 1.8});
  EXPECT_EQ(iris.data.labels[0].item<int64_t>(), 0);
  EXPECT_EQ(iris.data.labels[149].item<int64_t>(), 2);
  expect_sum(iris.x, 2078.7);
  EXPECT_EQ(iris.data.labels.sum().item<int64_t>(), 150);
}

TEST(TabularSklearn, BreastCancer) {
  Loaded bc = load(read_csv(kSklearnData / "breast_cancer.csv"), TabularOptions());
  ASSERT_EQ(bc.x.sizes(), (std::vector<int64_t>{569, 30}));
  EXPECT_EQ(bc.data.class_names, (Names{"0", "1"}));
  expect_row(bc.x, 0, {17.99, 10.38,  122.8, 1001.0, 0.1184,   0.2776,  0.3001,  0.1471,  0.2419,  0.07871,
                       1.095, 0.9053, 8.589, 153.4,  0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193,
                       25.38, 17.33,  184.6, 2019.0, 0.1622,   0.6656,  0.7119,  0.2654,  0.4601,  0.1189});
  expect_row(bc.x, 568, {7.76,   24.54, 47.92, 181.0, 0.05263,  0.04362, 0.0, 0.0, 0.1587,  0.05884,
                         0.3857, 1.428, 2.548, 19.15, 0.007189, 0.00466, 0.0, 0.0, 0.02676, 0.002783,
                         9.456,  30.37, 59.16, 268.6, 0.08996,  0.06444, 0.0, 0.0, 0.2871,  0.07039});
  EXPECT_EQ(bc.data.labels[0].item<int64_t>(), 0);
  EXPECT_EQ(bc.data.labels[568].item<int64_t>(), 1);
  expect_sum(bc.x, 1056474.4596356);
  EXPECT_EQ(bc.data.labels.sum().item<int64_t>(), 357);
}

TEST(TabularSklearn, Digits) {
  Loaded digits = load(read_csv(kSklearnData / "digits.csv.gz"), TabularOptions());
  ASSERT_EQ(digits.x.sizes(), (std::vector<int64_t>{1797, 64}));
  EXPECT_EQ(digits.data.class_names.size(), 10u);
  expect_row(digits.x, 0, {0, 0,  5, 13, 9,  1, 0,  0, 0,  0,  13, 15, 10, 15, 5, 0,  0,  3, 15, 2, 0,  11,
                           8, 0,  0, 4,  12, 0, 0,  8, 8,  0,  0,  5,  8,  0,  0, 9,  8,  0, 0,  4, 11, 0,
                           1, 12, 7, 0,  0,  2, 14, 5, 10, 12, 0,  0,  0,  0,  6, 13, 10, 0, 0,  0});
  expect_row(digits.x, 1796,
             {0, 0,  10, 14, 8, 1,  0,  0,  0, 2,  16, 14, 6,  1,  0,  0,  0,  0,  15, 15, 8,  15,
              0, 0,  0,  0,  5, 16, 16, 10, 0, 0,  0,  0,  12, 15, 15, 12, 0,  0,  0,  4,  16, 6,
              4, 16, 6,  0,  0, 8,  16, 10, 8, 16, 8,  0,  0,  1,  8,  12, 14, 12, 1,  0});
  EXPECT_EQ(digits.data.labels[0].item<int64_t>(), 0);
  EXPECT_EQ(digits.data.labels[1796].item<int64_t>(), 8);
  expect_sum(digits.x, 561718.0);
  EXPECT_EQ(digits.data.labels.sum().item<int64_t>(), 8070);
}

TEST(TabularSklearn, DiabetesWithSeparateTargetFile) {
  TabularOptions options = TabularOptions().task(Task::regression);
  CsvTable features = read_csv(kSklearnData / "diabetes_data_raw.csv.gz");
  CsvTable targets = read_csv(kSklearnData / "diabetes_target.csv.gz");
  LabeledTable data = label_table(features, targets, options);
  EXPECT_EQ(data.feature_columns.size(), 10u);
  TabularEncoder encoder = TabularEncoder::fit(data, all_rows(data), options);
  torch::Tensor x = encoder.transform(data);
  ASSERT_EQ(x.sizes(), (std::vector<int64_t>{442, 10}));
  expect_row(x, 0, {59.0, 2.0, 32.1, 101.0, 157.0, 93.2, 38.0, 4.0, 4.8598, 87.0});
  expect_row(x, 441, {36.0, 1.0, 19.6, 71.0, 250.0, 133.2, 97.0, 3.0, 4.5951, 92.0});
  expect_sum(x, 276404.2336);
  ASSERT_EQ(data.labels.dtype(), torch::kFloat32);
  EXPECT_FLOAT_EQ(data.labels[0].item<float>(), 151.0f);
  EXPECT_FLOAT_EQ(data.labels[441].item<float>(), 57.0f);
  EXPECT_NEAR(data.labels.to(torch::kFloat64).sum().item<double>(), 67243.0, 1e-3);
}

}  // namespace
}  // namespace kd::data
