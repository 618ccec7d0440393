#include "kd/data/tabular.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <set>

#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::data {

namespace {

enum class CellKind { number, non_finite, text };

// fit() and transform() read rows in blocks of 1024, in parallel: body(block, first row, end row) for
// each of block_count(rows) blocks, each block's results merged in block order afterwards.
constexpr size_t kBlockRows = 1024;

size_t block_count(size_t rows) { return (rows + kBlockRows - 1) / kBlockRows; }

template <typename Body>
void for_row_blocks(size_t rows, const Body& body) {
  at::parallel_for(0, static_cast<int64_t>(block_count(rows)), 1, [&](int64_t begin, int64_t end) {
    for (auto b = static_cast<size_t>(begin); b < static_cast<size_t>(end); ++b) {
      body(b, b * kBlockRows, std::min(rows, (b + 1) * kBlockRows));
    }
  });
}

// strtod, less its hexadecimal forms ("0x1f" in a CSV is an identifier, not 31). Out of range is
// non-finite, as strtod's HUGE_VAL.
CellKind classify(std::string_view cell, double& value) {
  std::string_view s = trim_view(cell);
  if (s.empty()) return CellKind::text;
  if (parse_decimal(s, value)) return std::isfinite(value) ? CellKind::number : CellKind::non_finite;
  size_t digits = (s[0] == '+' || s[0] == '-') ? 1 : 0;
  if (s.size() > digits + 1 && s[digits] == '0' && (s[digits + 1] == 'x' || s[digits + 1] == 'X')) {
    return CellKind::text;
  }
  std::string copy(s);
  char* end = nullptr;
  value = std::strtod(copy.c_str(), &end);
  if (end != copy.c_str() + copy.size()) return CellKind::text;
  return std::isfinite(value) ? CellKind::number : CellKind::non_finite;
}

std::string list_names(const std::vector<std::string>& names) {
  constexpr size_t kShown = 12;
  std::vector<std::string> shown(names.begin(), names.begin() + std::min(names.size(), kShown));
  std::string out = join(shown, ", ");
  if (names.size() > kShown) out += fmt::format(", ... ({} in all)", names.size());
  return out;
}

// A column by name, or by index (negative from the end) when no column has that name.
size_t resolve_column(const CsvTable& table, const std::string& spec, const std::string& what) {
  std::vector<size_t> matches;
  for (size_t j = 0; j < table.columns.size(); ++j) {
    if (table.columns[j] == spec) matches.push_back(j);
  }
  if (matches.size() == 1) return matches[0];
  if (matches.size() > 1) {
    fail("{}: {} {} is ambiguous: columns {} and {} have that name; give an index instead", table.path, what,
         quote(spec), matches[0], matches[1]);
  }
  auto count = static_cast<long long>(table.columns.size());
  if (auto index = parse_int(spec)) {
    long long j = *index < 0 ? count + *index : *index;
    if (j < 0 || j >= count) {
      fail("{}: {} index {} is out of range: the table has {} columns (0..{}, or -{}..-1)", table.path, what,
           *index, count, count - 1, count);
    }
    return static_cast<size_t>(j);
  }
  if (auto near = nearest(spec, table.columns)) {
    fail("{}: {} {} does not exist; did you mean {}?", table.path, what, quote(spec), quote(*near));
  }
  fail("{}: {} {} does not exist (columns: {})", table.path, what, quote(spec), list_names(table.columns));
}

void check_options(const TabularOptions& options) {
  const std::string& encoding = options.categorical_encoding();
  if (encoding != "onehot" && encoding != "index") {
    fail("data.categorical_encoding: {} is not supported, expected onehot or index", quote(encoding));
  }
  const std::string& missing = options.missing();
  if (missing != "error" && missing != "drop" && missing != "impute") {
    fail("data.missing: {} is not supported, expected error, drop or impute", quote(missing));
  }
}

// The missing-value tokens (data.missing_values) and the set of their lengths: most cells (numbers longer
// than any token) are told apart by their length alone, instead of compared with each token (~12 ms
// over the tabular benchmark's 2.4 million cells, in each of the three passes that ask).
class MissingTokens {
 public:
  explicit MissingTokens(const std::vector<std::string>& tokens) : tokens_(tokens) {
    for (const std::string& token : tokens_) {
      if (token.size() < 64) {
        lengths_ |= uint64_t{1} << token.size();
      } else {
        long_token_ = true;
      }
    }
  }
  bool contains(std::string_view cell) const {
    bool possible = cell.size() < 64 ? (lengths_ >> cell.size() & 1) != 0 : long_token_;
    return possible && std::find(tokens_.begin(), tokens_.end(), cell) != tokens_.end();
  }

 private:
  std::vector<std::string> tokens_;
  uint64_t lengths_ = 0;  // bit n: some token has n characters
  bool long_token_ = false;
};

// Integral numbers as integers ("1.0", "1e0" -> "1"), so that label files written by numpy or pandas
// agree with hand-written ones; anything else unchanged.
std::string canonical_label(std::string_view cell, bool& integral) {
  double value = 0;
  integral = classify(cell, value) == CellKind::number && std::floor(value) == value &&
             std::fabs(value) < 9007199254740992.0;
  return integral ? std::to_string(static_cast<long long>(value)) : std::string(cell);
}

torch::Tensor map_labels(const CsvTable& targets, size_t target_column, const std::vector<size_t>& rows,
                         const TabularOptions& options, const std::vector<std::string>& known_classes,
                         std::vector<std::string>& class_names) {
  const std::string& name = targets.columns[target_column];
  if (options.task() == Task::regression) {
    std::vector<float> values;
    values.reserve(rows.size());
    for (size_t r : rows) {
      std::string_view cell = targets.cell(r, target_column);
      double value = 0;
      CellKind kind = classify(cell, value);
      if (kind == CellKind::text) {
        fail("{}:{}: target column {}: {} is not a number (task regression needs a real-valued target)",
             targets.path, targets.line_numbers[r], quote(name), quote(cell));
      }
      if (kind == CellKind::non_finite) {
        fail("{}:{}: target column {}: {} is not finite", targets.path, targets.line_numbers[r], quote(name),
             quote(cell));
      }
      values.push_back(static_cast<float>(value));
    }
    return torch::tensor(values, torch::kFloat32);
  }

  std::vector<std::string> labels;
  labels.reserve(rows.size());
  bool all_integral = true;
  for (size_t r : rows) {
    bool integral = false;
    labels.push_back(canonical_label(targets.cell(r, target_column), integral));
    all_integral = all_integral && integral;
  }

  std::map<std::string, int64_t> index;
  if (!known_classes.empty()) {
    class_names = known_classes;
    for (size_t c = 0; c < known_classes.size(); ++c) {
      bool integral = false;
      index[canonical_label(known_classes[c], integral)] = static_cast<int64_t>(c);
    }
    for (size_t i = 0; i < labels.size(); ++i) {
      if (!index.count(labels[i])) {
        fail("{}:{}: target column {}: class {} is not one of the training classes ({})", targets.path,
             targets.line_numbers[rows[i]], quote(name), quote(labels[i]), list_names(known_classes));
      }
    }
  } else {
    std::set<std::string> distinct(labels.begin(), labels.end());
    std::vector<std::string> names(distinct.begin(), distinct.end());
    if (all_integral) {
      std::sort(names.begin(), names.end(),
                [](const std::string& a, const std::string& b) { return std::stoll(a) < std::stoll(b); });
    } else {
      // Real-valued numbers are a regression target, not class names.
      bool all_numbers = true;
      size_t first_fraction = labels.size();
      for (size_t i = 0; i < labels.size(); ++i) {
        double value = 0;
        if (classify(labels[i], value) != CellKind::number) {
          all_numbers = false;
          break;
        }
        if (std::floor(value) != value && first_fraction == labels.size()) first_fraction = i;
      }
      if (all_numbers && first_fraction < labels.size()) {
        fail(
            "{}:{}: target column {}: {} is not a class label; for a real-valued target set task: regression",
            targets.path, targets.line_numbers[rows[first_fraction]], quote(name),
            quote(labels[first_fraction]));
      }
    }
    if (names.size() < 2) {
      fail(
          "{}: target column {} holds a single class ({}); classification needs at least 2 (is data.target "
          "the "
          "right column?)",
          targets.path, quote(name), quote(names.empty() ? "" : names[0]));
    }
    class_names = names;
    for (size_t c = 0; c < names.size(); ++c) index[names[c]] = static_cast<int64_t>(c);
  }
  std::vector<int64_t> ids;
  ids.reserve(labels.size());
  for (const auto& label : labels) ids.push_back(index.at(label));
  return torch::tensor(ids, torch::kInt64);
}

// `targets` may be `features` itself. Rows are matched by position; `features` becomes the labelled
// table, less its dropped rows (a copy would double the table's memory).
LabeledTable label_columns(CsvTable& features, std::vector<size_t> feature_columns,
                           const CsvTable& targets, size_t target_column, const TabularOptions& options,
                           const std::vector<std::string>& known_classes) {
  const MissingTokens missing_values(options.missing_values());
  const std::string target_name = targets.columns[target_column];  // a copy: `targets` may move below
  std::vector<size_t> kept;
  kept.reserve(features.num_rows());
  for (size_t r = 0; r < features.num_rows(); ++r) {
    bool drop = false;
    std::string_view label = targets.cell(r, target_column);
    if (missing_values.contains(label)) {
      if (options.missing() != "drop") {
        fail(
            "{}:{}: target column {}: missing value ({}); rows without a label cannot be {}; set "
            "data.missing "
            "to drop",
            targets.path, targets.line_numbers[r], quote(target_name), quote(label),
            options.missing() == "impute" ? "imputed" : "used");
      }
      drop = true;
    }
    for (size_t j : feature_columns) {
      std::string_view cell = features.cell(r, j);
      if (!missing_values.contains(cell)) continue;
      if (options.missing() == "error") {
        fail("{}:{}: column {}: missing value ({}); set data.missing to drop or impute", features.path,
             features.line_numbers[r], quote(features.columns[j]), quote(cell));
      }
      if (options.missing() == "drop") drop = true;
    }
    if (!drop) kept.push_back(r);
  }
  if (kept.empty()) {
    fail("{}: every row has a missing value; no rows left after data.missing: drop", features.path);
  }

  LabeledTable out;
  out.labels = map_labels(targets, target_column, kept, options, known_classes, out.class_names);
  if (kept.size() < features.num_rows()) features.keep_rows(kept);
  out.table = std::move(features);
  out.feature_columns = std::move(feature_columns);
  out.target_column = target_name;
  return out;
}

std::set<size_t> resolve_drops(const CsvTable& table, const TabularOptions& options) {
  std::set<size_t> drops;
  for (const auto& spec : options.drop()) drops.insert(resolve_column(table, spec, "data.drop column"));
  // Checked here, even though step 2 uses them, so that a typo fails before any work.
  for (const auto& spec : options.categorical()) resolve_column(table, spec, "data.categorical column");
  return drops;
}

}  // namespace

LabeledTable label_table(CsvTable table, const TabularOptions& options,
                         const std::vector<std::string>& known_classes) {
  check_options(options);
  KD_CHECK(!table.columns.empty(), "{}: a table without columns", table.path);
  size_t target = options.target().empty() ? table.columns.size() - 1
                                           : resolve_column(table, options.target(), "target column");
  std::set<size_t> drops = resolve_drops(table, options);
  if (drops.count(target)) {
    fail("{}: column {} is both the target (data.target) and in data.drop", table.path,
         quote(table.columns[target]));
  }
  std::vector<size_t> features;
  for (size_t j = 0; j < table.columns.size(); ++j) {
    if (j != target && !drops.count(j)) features.push_back(j);
  }
  if (features.empty()) {
    fail("{}: no feature columns left: the table has {} column(s), the target {} and {} dropped", table.path,
         table.columns.size(), quote(table.columns[target]), drops.size());
  }
  return label_columns(table, std::move(features), table, target, options, known_classes);
}

LabeledTable label_table(CsvTable features, const CsvTable& targets, const TabularOptions& options,
                         const std::vector<std::string>& known_classes) {
  check_options(options);
  KD_CHECK(!features.columns.empty() && !targets.columns.empty(), "{}, {}: a table without columns",
           features.path, targets.path);
  if (features.num_rows() != targets.num_rows()) {
    fail("{}: {} rows, but the feature file {} has {}; the target file needs one row per feature row",
         targets.path, targets.num_rows(), features.path, features.num_rows());
  }
  size_t target = options.target().empty() ? targets.columns.size() - 1
                                           : resolve_column(targets, options.target(), "target column");
  std::set<size_t> drops = resolve_drops(features, options);
  std::vector<size_t> columns;
  for (size_t j = 0; j < features.columns.size(); ++j) {
    if (!drops.count(j)) columns.push_back(j);
  }
  if (columns.empty()) {
    fail("{}: no feature columns left: all {} are in data.drop", features.path, features.columns.size());
  }
  return label_columns(features, std::move(columns), targets, target, options, known_classes);
}

// fit() and transform() read the table row by row, the order its cells are stored in, and report a bad
// cell afterwards as a column-by-column reading would meet it: the first column with one, its first row.
TabularEncoder TabularEncoder::fit(const LabeledTable& data, const std::vector<int64_t>& train_rows,
                                   const TabularOptions& options) {
  check_options(options);
  const CsvTable& table = data.table;
  const size_t rows = table.num_rows();
  if (train_rows.empty()) fail("{}: no training rows to fit the feature encoding on", table.path);
  for (int64_t r : train_rows) {
    KD_CHECK(r >= 0 && static_cast<size_t>(r) < rows, "training row {} of {}", r, rows);
  }
  std::set<size_t> forced;
  for (const auto& spec : options.categorical())
    forced.insert(resolve_column(table, spec, "data.categorical column"));

  TabularEncoder encoder;
  encoder.categorical_encoding_ = options.categorical_encoding();
  encoder.missing_ = options.missing();
  encoder.missing_values_ = options.missing_values();
  encoder.task_ = options.task();
  encoder.target_column_ = data.target_column;
  encoder.class_names_ = data.class_names;
  const MissingTokens missing_values(options.missing_values());
  const std::vector<size_t>& features = data.feature_columns;

  // The kinds, from every row, and the sums of the training rows' numbers: each cell read once, blocks of
  // rows in parallel, merged in block order (the same sums on any number of threads).
  struct Kinds {
    size_t numbers = 0, texts = 0;
    size_t first_number = 0, first_text = 0, first_non_finite = 0;
  };
  struct Block {
    std::vector<Kinds> kinds;
    std::vector<double> sums;
    std::vector<size_t> filled;
  };
  std::vector<uint32_t> train_count(rows, 0);
  for (int64_t r : train_rows) ++train_count[static_cast<size_t>(r)];
  std::vector<Block> blocks(block_count(rows));
  for_row_blocks(rows, [&](size_t b, size_t first, size_t end) {
    Block& block = blocks[b];
    block.kinds.assign(features.size(), Kinds{0, 0, 0, 0, rows});
    block.sums.assign(features.size(), 0.0);
    block.filled.assign(features.size(), 0);
    for (size_t r = first; r < end; ++r) {
      for (size_t i = 0; i < features.size(); ++i) {
        std::string_view cell = table.cell(r, features[i]);
        if (missing_values.contains(cell)) continue;
        double value = 0;
        CellKind kind = classify(cell, value);
        Kinds& k = block.kinds[i];
        if (kind == CellKind::text) {
          if (k.texts++ == 0) k.first_text = r;
          continue;
        }
        if (k.numbers++ == 0) k.first_number = r;
        if (kind == CellKind::non_finite) {
          if (k.first_non_finite == rows) k.first_non_finite = r;
          continue;
        }
        for (uint32_t copy = 0; copy < train_count[r]; ++copy) {
          block.sums[i] += value;
          ++block.filled[i];
        }
      }
    }
  });
  std::vector<Kinds> kinds(features.size(), Kinds{0, 0, 0, 0, rows});
  std::vector<double> sums(features.size(), 0.0);
  std::vector<size_t> filled(features.size(), 0);
  for (const Block& block : blocks) {
    for (size_t i = 0; i < features.size(); ++i) {
      const Kinds& part = block.kinds[i];
      Kinds& k = kinds[i];
      if (k.numbers == 0 && part.numbers > 0) k.first_number = part.first_number;
      if (k.texts == 0 && part.texts > 0) k.first_text = part.first_text;
      k.first_non_finite = std::min(k.first_non_finite, part.first_non_finite);
      k.numbers += part.numbers;
      k.texts += part.texts;
      sums[i] += block.sums[i];
      filled[i] += block.filled[i];
    }
  }
  std::vector<bool> categorical(features.size());
  for (size_t i = 0; i < features.size(); ++i) {
    categorical[i] = forced.count(features[i]) > 0 || kinds[i].numbers == 0;
  }

  // The categories, from the training rows.
  std::vector<std::map<std::string, size_t, std::less<>>> counts(features.size());
  if (std::find(categorical.begin(), categorical.end(), true) != categorical.end()) {
    for (int64_t r : train_rows) {
      for (size_t i = 0; i < features.size(); ++i) {
        if (!categorical[i]) continue;
        std::string_view cell = table.cell(static_cast<size_t>(r), features[i]);
        if (missing_values.contains(cell)) continue;
        auto found = counts[i].find(cell);
        if (found == counts[i].end()) found = counts[i].emplace(cell, 0).first;
        ++found->second;
      }
    }
  }

  for (size_t i = 0; i < features.size(); ++i) {
    size_t j = features[i];
    const Kinds& k = kinds[i];
    Column column;
    column.name = table.columns[j];
    column.categorical = categorical[i];
    if (!column.categorical) {
      if (k.texts > 0 && k.texts <= k.numbers) {
        fail(
            "{}:{}: column {}: {} is not a number (the column's other cells are numbers; if the column is "
            "categorical, add it to data.categorical)",
            table.path, table.line_numbers[k.first_text], quote(column.name),
            quote(table.cell(k.first_text, j)));
      }
      if (k.texts > k.numbers) {
        fail(
            "{}:{}: column {}: {} is a number among text cells; add {} to data.categorical to read the "
            "column "
            "as categories",
            table.path, table.line_numbers[k.first_number], quote(column.name),
            quote(table.cell(k.first_number, j)), quote(column.name));
      }
      if (k.first_non_finite < rows) {
        fail("{}:{}: column {}: {} is not finite", table.path, table.line_numbers[k.first_non_finite],
             quote(column.name), quote(table.cell(k.first_non_finite, j)));
      }
    }
    bool nothing_to_impute = column.categorical ? counts[i].empty() : filled[i] == 0;
    if (nothing_to_impute && options.missing() == "impute") {
      fail("{}: column {}: every training value is missing, nothing to impute from (add it to data.drop)",
           table.path, quote(column.name));
    }
    if (column.categorical) {
      size_t best = 0;
      for (const auto& [category, count] : counts[i]) {
        column.categories.push_back(category);
        if (count > best) {
          best = count;
          column.mode = category;
        }
      }
    } else {
      column.mean = filled[i] > 0 ? sums[i] / static_cast<double>(filled[i]) : 0.0;
    }
    encoder.columns_.push_back(std::move(column));
  }
  return encoder;
}

std::vector<std::string> TabularEncoder::feature_names() const {
  std::vector<std::string> names;
  for (const auto& column : columns_) {
    if (column.categorical && categorical_encoding_ == "onehot") {
      for (const auto& category : column.categories) names.push_back(column.name + "=" + category);
    } else {
      names.push_back(column.name);
    }
  }
  return names;
}

std::vector<bool> TabularEncoder::categorical_features() const {
  std::vector<bool> categorical;
  for (const auto& column : columns_) {
    size_t width = column.categorical && categorical_encoding_ == "onehot" ? column.categories.size() : 1;
    categorical.insert(categorical.end(), width, column.categorical);
  }
  return categorical;
}

torch::Tensor TabularEncoder::transform(const LabeledTable& data) const {
  const CsvTable& table = data.table;
  if (data.feature_columns.size() != columns_.size()) {
    fail("{}: {} feature columns, but the encoder was fitted on {} ({})", table.path,
         data.feature_columns.size(), columns_.size(), list_names(feature_names()));
  }
  for (size_t i = 0; i < columns_.size(); ++i) {
    const std::string& name = table.columns[data.feature_columns[i]];
    if (name != columns_[i].name) {
      fail("{}: feature column {} is {}, but the encoder was fitted with {} there", table.path, i + 1,
           quote(name), quote(columns_[i].name));
    }
  }
  const size_t width = feature_names().size();
  const size_t rows = table.num_rows();
  const bool onehot = categorical_encoding_ == "onehot";
  std::vector<size_t> offsets;  // each column's first feature in a row
  size_t offset = 0;
  for (const Column& column : columns_) {
    offsets.push_back(offset);
    offset += column.categorical && onehot ? column.categories.size() : 1;
  }

  enum class Problem { none, missing, text, non_finite };
  const MissingTokens missing_tokens(missing_values_);
  auto encode = [&](const Column& column, std::string_view text, float* features) {
    bool missing = missing_tokens.contains(text);
    if (missing && missing_ != "impute") return Problem::missing;
    std::string_view cell = missing && column.categorical ? std::string_view(column.mode) : text;
    if (column.categorical) {
      auto found = std::lower_bound(column.categories.begin(), column.categories.end(), cell);
      bool seen = found != column.categories.end() && *found == cell;
      auto position = static_cast<size_t>(found - column.categories.begin());
      if (onehot) {
        if (seen) features[position] = 1.0f;
      } else {
        features[0] = static_cast<float>(seen ? position : column.categories.size());
      }
      return Problem::none;
    }
    double value = column.mean;
    if (!missing) {
      CellKind kind = classify(cell, value);
      if (kind == CellKind::text) return Problem::text;
      if (kind == CellKind::non_finite) return Problem::non_finite;
    }
    features[0] = static_cast<float>(value);
    return Problem::none;
  };

  torch::Tensor x = torch::zeros({static_cast<int64_t>(rows), static_cast<int64_t>(width)}, torch::kFloat32);
  float* values = x.data_ptr<float>();
  // Rows in parallel blocks; each block's first problem per column, the earliest kept.
  std::vector<std::pair<size_t, Problem>> first_problem(columns_.size(), {rows, Problem::none});
  std::vector<std::vector<std::pair<size_t, Problem>>> block_problems(block_count(rows));
  for_row_blocks(rows, [&](size_t b, size_t first, size_t end) {
    auto& problems = block_problems[b];
    problems.assign(columns_.size(), {rows, Problem::none});
    for (size_t r = first; r < end; ++r) {
      float* row = values + r * width;
      for (size_t i = 0; i < columns_.size(); ++i) {
        Problem problem = encode(columns_[i], table.cell(r, data.feature_columns[i]), row + offsets[i]);
        if (problem != Problem::none && problems[i].first == rows) problems[i] = {r, problem};
      }
    }
  });
  for (const auto& problems : block_problems) {
    for (size_t i = 0; i < columns_.size(); ++i) {
      if (first_problem[i].first == rows) first_problem[i] = problems[i];
    }
  }
  for (size_t i = 0; i < columns_.size(); ++i) {
    auto [r, problem] = first_problem[i];
    if (problem == Problem::none) continue;
    std::string_view cell = table.cell(r, data.feature_columns[i]);
    const std::string& name = columns_[i].name;
    if (problem == Problem::missing) {
      fail("{}:{}: column {}: missing value ({}); set data.missing to drop or impute", table.path,
           table.line_numbers[r], quote(name), quote(cell));
    }
    if (problem == Problem::text) {
      fail("{}:{}: column {}: {} is not a number (if the column is categorical, add it to data.categorical)",
           table.path, table.line_numbers[r], quote(name), quote(cell));
    }
    fail("{}:{}: column {}: {} is not finite", table.path, table.line_numbers[r], quote(name), quote(cell));
  }
  return x;
}

nlohmann::json TabularEncoder::to_json() const {
  nlohmann::json columns = nlohmann::json::array();
  for (const auto& column : columns_) {
    nlohmann::json c = {{"name", column.name}, {"kind", column.categorical ? "categorical" : "numeric"}};
    if (column.categorical) {
      c["categories"] = column.categories;
      c["mode"] = column.mode;
    } else {
      c["mean"] = column.mean;
    }
    columns.push_back(std::move(c));
  }
  return {{"format", "kd.tabular_encoder"},
          {"version", 1},
          {"task", to_string(task_)},
          {"target", target_column_},
          {"class_names", class_names_},
          {"categorical_encoding", categorical_encoding_},
          {"missing", missing_},
          {"missing_values", missing_values_},
          {"columns", std::move(columns)}};
}

TabularEncoder TabularEncoder::from_json(const nlohmann::json& json) {
  const std::string where = "tabular encoder JSON";
  try {
    if (!json.is_object() || json.value("format", "") != "kd.tabular_encoder") {
      fail("{}: not a tabular encoder (expected \"format\": \"kd.tabular_encoder\")", where);
    }
    if (json.at("version").get<int>() != 1) {
      fail("{}: version {} is not supported, expected 1", where, json.at("version").dump());
    }
    TabularEncoder encoder;
    encoder.task_ = parse_task(json.at("task").get<std::string>(), where + ": task");
    encoder.target_column_ = json.at("target").get<std::string>();
    encoder.class_names_ = json.at("class_names").get<std::vector<std::string>>();
    encoder.categorical_encoding_ = json.at("categorical_encoding").get<std::string>();
    encoder.missing_ = json.at("missing").get<std::string>();
    encoder.missing_values_ = json.at("missing_values").get<std::vector<std::string>>();
    check_options(
        TabularOptions().categorical_encoding(encoder.categorical_encoding_).missing(encoder.missing_));
    for (const auto& c : json.at("columns")) {
      Column column;
      column.name = c.at("name").get<std::string>();
      std::string kind = c.at("kind").get<std::string>();
      if (kind != "numeric" && kind != "categorical") {
        fail("{}: column {}: kind {} is not numeric or categorical", where, quote(column.name), quote(kind));
      }
      column.categorical = kind == "categorical";
      if (column.categorical) {
        column.categories = c.at("categories").get<std::vector<std::string>>();
        column.mode = c.at("mode").get<std::string>();
        if (!std::is_sorted(column.categories.begin(), column.categories.end())) {
          fail("{}: column {}: categories are not sorted", where, quote(column.name));
        }
      } else {
        column.mean = c.at("mean").get<double>();
      }
      encoder.columns_.push_back(std::move(column));
    }
    return encoder;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: {}", where, e.what());
  }
}

}  // namespace kd::data
