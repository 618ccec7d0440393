#include "kd/data/dataset.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

#include "kd/data/idx.h"
#include "kd/data/npy.h"
#include "kd/data/split.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/runtime.h"
#include "kd/util/shape.h"
#include "kd/util/strings.h"

namespace kd::data {

namespace fs = std::filesystem;

namespace {

// Everything read from the files, train and test rows pooled, before anything is fitted.
struct Pool {
  torch::Tensor x;            // array formats: float32 [N, ...], or uint8 pixels (float_inputs)
  LabeledTable table;         // csv
  bool tabular = false;
  std::vector<std::string> texts;  // text: one per row
  bool text = false;
  torch::Tensor y;            // int64 [N] or float32 [N, K]
  std::vector<int64_t> test_rows;   // rows from the test files (empty: hold out a fraction)
  std::vector<int64_t> train_rows;  // rows from the train files
  std::vector<std::string> class_names;
  std::string source;
};

// Inputs with a channel axis for images: [N, H, W] -> [N, 1, H, W]. Pixel data (uint8) stays uint8
// here, a quarter of the memory, and becomes float32 in [0, 1] when a split is taken (float_inputs);
// everything else becomes float32 now.
torch::Tensor as_inputs(torch::Tensor x, const std::string& file) {
  if (x.dim() < 2) fail("{}: inputs have shape {}, expected [examples, features...]", file, shape_text(x.sizes()));
  if (x.dim() == 3) x = x.unsqueeze(1);
  if (x.scalar_type() == torch::kByte) return x;
  bool integral = !torch::isFloatingType(x.scalar_type());
  x = x.to(torch::kFloat);
  if (!integral && !torch::isfinite(x).all().item<bool>()) {
    auto flat = torch::isfinite(x.reshape({x.size(0), -1})).all(1).logical_not().nonzero();
    fail("{}: example {} has a NaN or infinite value, expected finite numbers", file, flat[0][0].item<int64_t>());
  }
  return x;
}

std::pair<torch::Tensor, torch::Tensor> read_pair(const std::string& format, const DataFiles& files,
                                                  const std::string& field) {
  if (format == "arrays") {
    if (!files.x.defined() || !files.y.defined()) fail("{}: arrays data needs both x and y", field);
    if (files.x.dim() == 0 || files.y.dim() == 0 || files.x.size(0) != files.y.size(0)) {
      fail("{}: x has shape {} and y {}, expected one label (row) of y per example of x", field,
           shape_text(files.x.sizes()), shape_text(files.y.sizes()));
    }
    // Arrays from another library may be strided views or on another device: one CPU copy at most.
    return {as_inputs(files.x.to(torch::kCPU).contiguous(), field + ".x"), files.y.to(torch::kCPU).contiguous()};
  }
  if (format == "npz") {
    if (files.path.empty()) fail("{}: npz data needs path: file.npz (with arrays x and y)", field);
    auto arrays = read_npz(files.path);
    std::vector<std::string> names;
    for (const auto& item : arrays) names.push_back(item.first);
    if (!arrays.count("x") || !arrays.count("y")) {
      fail("{}: expected arrays named x and y, found {}", files.path, join(names, ", "));
    }
    return {as_inputs(arrays.at("x"), files.path), arrays.at("y")};
  }
  if (files.inputs.empty() || files.labels.empty()) {
    fail("{}: {} data needs inputs: and labels: files", field, format);
  }
  auto read = format == "idx" ? read_idx : read_npy;
  torch::Tensor x = read(files.inputs);
  torch::Tensor y = read(files.labels);
  if (x.size(0) != y.size(0)) {
    fail("{}: {} has {} examples but {} has {} labels", field, files.inputs, x.size(0), files.labels, y.size(0));
  }
  return {as_inputs(x, files.inputs), y};
}

// What the training data is called in messages: its file, or "arrays in memory".
std::string train_name(const DataSpec& spec) {
  const DataFiles& train = spec.train();
  if (train.x.defined()) return "arrays in memory";
  return train.path.empty() ? train.inputs : train.path;
}

// Class ids 0..C-1 from integer labels (numeric order), names the label values.
torch::Tensor map_classes(const torch::Tensor& raw, const std::string& file, std::vector<std::string>& names) {
  auto y = raw.reshape({-1});
  if (raw.dim() > 1 && raw.numel() != raw.size(0)) {
    fail("{}: labels have shape {}, expected one class per example", file, shape_text(raw.sizes()));
  }
  if (y.is_floating_point()) {
    auto bad = (y != y.round()).nonzero();
    if (bad.size(0) > 0) {
      fail("{}: label {} is {}, expected an integer class", file, bad[0][0].item<int64_t>(),
           y[bad[0][0]].item<double>());
    }
  }
  auto values = y.to(torch::kLong);
  auto unique = std::get<0>(torch::_unique(values, /*sorted=*/true));
  if (unique.size(0) < 2) {
    fail("{}: every label is {}, expected at least two classes", file, unique.size(0) ? unique[0].item<int64_t>() : 0);
  }
  names.clear();
  for (int64_t i = 0; i < unique.size(0); ++i) names.push_back(std::to_string(unique[i].item<int64_t>()));
  return torch::searchsorted(unique, values);
}

Pool read_arrays(const DataSpec& spec, const std::string& format) {
  Pool pool;
  torch::Tensor x, y, x_test, y_test;
  if (format == "images") {
    auto train = read_image_folder(spec.train().path, spec.images());
    x = as_inputs(train.images, spec.train().path);
    y = train.labels;
    pool.class_names = train.class_names;
    if (!spec.test().empty()) {
      auto test = read_image_folder(spec.test().path, spec.images());
      if (test.class_names != train.class_names) {
        fail("data.test: {} has classes [{}], expected the training classes [{}]", spec.test().path,
             join(test.class_names, ", "), join(train.class_names, ", "));
      }
      x_test = as_inputs(test.images, spec.test().path);
      y_test = test.labels;
    }
  } else {
    std::tie(x, y) = read_pair(format, spec.train(), "data.train");
    if (!spec.test().empty()) std::tie(x_test, y_test) = read_pair(format, spec.test(), "data.test");
  }
  int64_t train_count = x.size(0);
  if (x_test.defined()) {
    if (x_test.sizes().slice(1) != x.sizes().slice(1)) {
      fail("data.test: examples have shape {}, expected the training shape {}", shape_text(x_test.sizes().slice(1)),
           shape_text(x.sizes().slice(1)));
    }
    if (x.scalar_type() != x_test.scalar_type()) {  // pixels in one file, numbers in the other
      x = float_inputs(x);
      x_test = float_inputs(x_test);
    }
    x = torch::cat({x, x_test});
    y = torch::cat({y.reshape({y.size(0), -1}).to(torch::kDouble), y_test.reshape({y_test.size(0), -1}).to(torch::kDouble)});
    x_test = torch::Tensor();
  }
  pool.x = x;
  std::string label_file = format == "arrays"            ? "data.train.y"
                           : spec.train().labels.empty() ? spec.train().path
                                                         : spec.train().labels;
  if (spec.task() == Task::classification) {
    if (format == "images") {
      pool.y = y.to(torch::kLong).reshape({-1});
    } else {
      pool.y = map_classes(y, label_file, pool.class_names);
    }
  } else {
    auto values = y.to(torch::kFloat);
    pool.y = values.dim() == 1 ? values.unsqueeze(1) : values.reshape({values.size(0), -1});
    if (!torch::isfinite(pool.y).all().item<bool>()) fail("{}: a target is NaN or infinite", label_file);
  }
  pool.train_rows.resize(static_cast<size_t>(train_count));
  std::iota(pool.train_rows.begin(), pool.train_rows.end(), 0);
  for (int64_t i = train_count; i < x.size(0); ++i) pool.test_rows.push_back(i);
  return pool;
}

// Reads and labels one split's CSV (and its separate target file, when given). `known_classes`
// maps a test file's labels onto the training file's classes.
LabeledTable read_labeled(const DataFiles& files, const DataSpec& spec, const TabularOptions& options,
                          const std::vector<std::string>& known_classes, const std::string& field) {
  if (files.path.empty()) fail("{}: csv data needs path: file.csv", field);
  CsvTable table = read_csv(files.path, spec.csv());
  if (files.labels.empty()) return label_table(std::move(table), options, known_classes);
  CsvTable targets = read_csv(files.labels, CsvOptions());
  return label_table(std::move(table), targets, options, known_classes);
}

Pool read_tabular(const DataSpec& spec) {
  Pool pool;
  pool.tabular = true;
  TabularOptions options = spec.tabular();
  options.task(spec.task());
  pool.table = read_labeled(spec.train(), spec, options, {}, "data.train");
  pool.class_names = pool.table.class_names;
  auto train_rows = static_cast<int64_t>(pool.table.table.num_rows());
  auto& labels = pool.table.labels;
  if (!spec.test().empty()) {
    LabeledTable test = read_labeled(spec.test(), spec, options, pool.class_names, "data.test");
    if (test.table.columns != pool.table.table.columns) {
      fail("data.test: {} has columns [{}], expected [{}] as in {}", spec.test().path, join(test.table.columns, ", "),
           join(pool.table.table.columns, ", "), spec.train().path);
    }
    pool.table.table.append_rows(test.table);
    labels = torch::cat({labels, test.labels});
  }
  pool.y = labels.is_floating_point() && labels.dim() == 1 ? labels.unsqueeze(1) : labels;
  auto total = static_cast<int64_t>(pool.table.table.num_rows());
  for (int64_t i = 0; i < total; ++i) (i < train_rows ? pool.train_rows : pool.test_rows).push_back(i);
  return pool;
}

// Class ids from label cells: integer labels in numeric order, others in sorted order; a test file's
// labels must be training classes (`known`).
torch::Tensor text_labels(const TextTable& table, std::vector<std::string>& names, const std::vector<std::string>& known,
                          Task task) {
  if (task == Task::regression) {
    std::vector<float> values;
    for (size_t i = 0; i < table.targets.size(); ++i) {
      auto value = parse_double(table.targets[i]);
      if (!value || !std::isfinite(*value)) {
        fail("{}:{}: target {}: {} is not a finite number (task regression)", table.path, table.line_numbers[i],
             quote(table.target_name), quote(table.targets[i]));
      }
      values.push_back(static_cast<float>(*value));
    }
    return torch::tensor(values, torch::kFloat).unsqueeze(1);
  }
  if (known.empty()) {
    std::set<std::string> distinct(table.targets.begin(), table.targets.end());
    names.assign(distinct.begin(), distinct.end());
    bool integral = std::all_of(names.begin(), names.end(), [](const std::string& n) { return parse_int(n).has_value(); });
    if (integral) {
      std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) { return *parse_int(a) < *parse_int(b); });
    }
    if (names.size() < 2) {
      fail("{}: every label ({}) is {}, expected at least two classes", table.path, quote(table.target_name),
           quote(names.empty() ? "" : names[0]));
    }
  } else {
    names = known;
  }
  std::map<std::string, int64_t> index;
  for (size_t c = 0; c < names.size(); ++c) index[names[c]] = static_cast<int64_t>(c);
  std::vector<int64_t> ids;
  for (size_t i = 0; i < table.targets.size(); ++i) {
    auto it = index.find(table.targets[i]);
    if (it == index.end()) {
      fail("{}:{}: label {} is not one of the training classes ({})", table.path, table.line_numbers[i],
           quote(table.targets[i]), join(names, ", "));
    }
    ids.push_back(it->second);
  }
  return torch::tensor(ids, torch::kLong);
}

Pool read_texts(const DataSpec& spec) {
  Pool pool;
  pool.text = true;
  if (spec.train().path.empty()) fail("data.train: text data needs path: file.csv, .tsv or .jsonl");
  TextTable train = read_text_table(spec.train().path, spec.text(), spec.csv());
  pool.y = text_labels(train, pool.class_names, {}, spec.task());
  pool.texts = std::move(train.texts);
  auto train_count = static_cast<int64_t>(pool.texts.size());
  if (!spec.test().empty()) {
    TextTable test = read_text_table(spec.test().path, spec.text(), spec.csv());
    std::vector<std::string> names;
    pool.y = torch::cat({pool.y, text_labels(test, names, pool.class_names, spec.task())});
    pool.texts.insert(pool.texts.end(), test.texts.begin(), test.texts.end());
  }
  for (int64_t i = 0; i < static_cast<int64_t>(pool.texts.size()); ++i) {
    (i < train_count ? pool.train_rows : pool.test_rows).push_back(i);
  }
  return pool;
}

std::vector<int64_t> pick(const std::vector<int64_t>& rows, const std::vector<int64_t>& positions) {
  std::vector<int64_t> out;
  out.reserve(positions.size());
  for (auto p : positions) out.push_back(rows[static_cast<size_t>(p)]);
  return out;
}

torch::Tensor labels_of(const Pool& pool, const std::vector<int64_t>& rows) {
  return pool.y.index_select(0, to_index(rows));
}

// A seeded stratified subset of `rows` of size `limit` (all when limit <= 0).
std::vector<int64_t> limit_rows(const Pool& pool, const std::vector<int64_t>& rows, int64_t limit, uint64_t seed) {
  if (limit <= 0 || limit >= static_cast<int64_t>(rows.size())) return rows;
  auto y = pool.y.scalar_type() == torch::kLong ? labels_of(pool, rows) : torch::Tensor();
  return pick(rows, subsample(static_cast<int64_t>(rows.size()), y, limit, seed));
}

void fail_over_memory(const DataSpec& spec, int64_t bytes, const std::string& what) {
  fail("{}: the data set needs about {} in memory ({}), more than --max-memory {}; read fewer rows "
       "(data.train_limit), use fewer folds, or raise --max-memory",
       train_name(spec), bytes_text(static_cast<double>(bytes)), what,
       bytes_text(static_cast<double>(spec.max_memory())));
}

DataFold make_fold(const Pool& pool, const DataSpec& spec, const std::vector<int64_t>& train,
                   const std::vector<int64_t>& val, const std::vector<int64_t>& test,
                   torch::Tensor transfer_raw, const std::vector<std::string>& transfer_texts, uint64_t seed) {
  DataFold fold;
  torch::Tensor x_all;
  nlohmann::json preprocessing;
  NormalizeOptions normalize = spec.normalize();
  if (pool.text) {
    // The tokenizer is the file's, or trained on this fold's training texts only.
    std::vector<std::string> train_texts;
    for (int64_t r : train) train_texts.push_back(pool.texts[static_cast<size_t>(r)]);
    text::TokenizerPtr tokenizer = make_tokenizer(spec.text().tokenizer(), train_texts, seed);
    int64_t length = spec.text().max_length() > 0 ? spec.text().max_length() : fitting_max_length(*tokenizer, train_texts);
    x_all = text::encode_batch(*tokenizer, pool.texts, length);
    if (!transfer_texts.empty()) transfer_raw = text::encode_batch(*tokenizer, transfer_texts, length);
    preprocessing["text"] = {{"tokenizer", tokenizer->to_json()}, {"max_length", length},
                             {"vocab", tokenizer->vocab_size()}, {"pad_id", tokenizer->pad_id()}};
    normalize.mode("none");  // token ids are not numbers to scale
  } else if (pool.tabular) {
    auto encoder = TabularEncoder::fit(pool.table, train, spec.tabular());
    // One-hot columns of many categories can make a small file a large matrix: checked exactly here.
    auto features = static_cast<int64_t>(encoder.feature_names().size());
    auto rows = static_cast<int64_t>(pool.table.table.num_rows());
    int64_t folds = std::max<int64_t>(1, spec.folds());
    if (spec.max_memory() > 0 && rows * features * 4 * folds > spec.max_memory()) {
      fail_over_memory(spec, rows * features * 4 * folds,
                       fmt::format("{} rows x {} features once encoded, as float32 in each of {} fold{}", rows, features,
                                   folds, folds > 1 ? "s" : ""));
    }
    x_all = encoder.transform(pool.table);
    preprocessing["tabular"] = encoder.to_json();
    fold.categorical = encoder.categorical_features();
  } else {
    x_all = pool.x;
  }
  // Each split is one copy of its rows, normalised in place (no full-size temporaries: Fashion-MNIST's
  // training rows are 170 MB as float32).
  auto select = [&](const std::vector<int64_t>& rows) {
    auto index = to_index(rows);
    torch::Tensor x = x_all.index_select(0, index);
    return Examples{float_inputs(x), pool.y.index_select(0, index)};
  };
  fold.train = select(train);
  auto normalizer = Normalizer::fit(fold.train.x, normalize);
  preprocessing["normalize"] = normalizer.to_json();
  normalizer.apply_(fold.train.x);
  fold.val = select(val);
  normalizer.apply_(fold.val.x);
  fold.test = select(test);
  normalizer.apply_(fold.test.x);
  if (spec.task() == Task::regression && spec.normalize_target()) {
    fold.target_normalizer = Normalizer::fit(fold.train.y, NormalizeOptions().mode("standard").scope("feature"));
    for (Examples* e : {&fold.train, &fold.val, &fold.test}) e->y = fold.target_normalizer.apply(e->y);
    preprocessing["target_normalize"] = fold.target_normalizer.to_json();
  }
  fold.labeled = torch::ones({fold.train.size()}, torch::kBool);
  if (spec.labeled() > 0) {
    if (spec.labeled() >= fold.train.size()) {
      fail("data.labeled: {} labels asked for, but the training split has only {} rows", spec.labeled(),
           fold.train.size());
    }
    auto y = spec.task() == Task::classification ? fold.train.y : torch::Tensor();
    auto keep = subsample(fold.train.size(), y, spec.labeled(), seed + 2);
    fold.labeled = torch::zeros({fold.train.size()}, torch::kBool);
    fold.labeled.index_fill_(0, to_index(keep), true);
  }
  if (transfer_raw.defined()) {
    fold.transfer_x = float_inputs(transfer_raw);
    if (fold.transfer_x.is_same(transfer_raw)) fold.transfer_x = fold.transfer_x.clone();  // every fold's own
    normalizer.apply_(fold.transfer_x);
  }
  fold.preprocessing = preprocessing;
  return fold;
}

torch::Tensor read_transfer(const DataSpec& spec, const std::string& format, const Pool& pool) {
  if (spec.transfer().empty() || pool.text) return {};
  if (pool.tabular) fail("data.transfer: unlabeled transfer inputs are read from .npy or IDX files, not CSV");
  std::string name = to_lower(spec.transfer());
  torch::Tensor x;
  if (ends_with(name, ".npy")) {
    x = read_npy(spec.transfer());
  } else if (name.find("ubyte") != std::string::npos || ends_with(name, ".idx") || ends_with(name, ".idx.gz")) {
    x = read_idx(spec.transfer());
  } else {
    fail("data.transfer: {}: expected a .npy or IDX file of inputs", spec.transfer());
  }
  x = as_inputs(x, spec.transfer());
  if (x.sizes().slice(1) != pool.x.sizes().slice(1)) {
    fail("data.transfer: {}: examples have shape {}, expected the training shape {}", spec.transfer(),
         shape_text(x.sizes().slice(1)), shape_text(pool.x.sizes().slice(1)));
  }
  return x;
}

// The data readers, one table: a format's name, whether a file name (lower case, without .gz) or a
// folder says it, and the reader of the whole pool. Adding a format is a reader and a line here.
struct DataReader {
  std::string name;
  bool (*named)(const std::string& name);  // the training file's name says this format
  bool folder;                             // a folder of training data says this format
  Pool (*read)(const DataSpec& spec);
};

const std::vector<DataReader>& data_readers() {
  static const std::vector<DataReader> readers = {
      {"idx", [](const std::string& n) { return n.find("ubyte") != std::string::npos || ends_with(n, ".idx"); }, false,
       [](const DataSpec& spec) { return read_arrays(spec, "idx"); }},
      {"csv", [](const std::string& n) {
         return ends_with(n, ".csv") || ends_with(n, ".tsv") || ends_with(n, ".txt") || ends_with(n, ".data");
       }, false, read_tabular},
      {"npy", [](const std::string& n) { return ends_with(n, ".npy"); }, false,
       [](const DataSpec& spec) { return read_arrays(spec, "npy"); }},
      {"npz", [](const std::string& n) { return ends_with(n, ".npz"); }, false,
       [](const DataSpec& spec) { return read_arrays(spec, "npz"); }},
      {"images", [](const std::string&) { return false; }, true,
       [](const DataSpec& spec) { return read_arrays(spec, "images"); }},
      {"text", [](const std::string& n) { return ends_with(n, ".jsonl") || ends_with(n, ".ndjson"); }, false,
       read_texts},
      {"arrays", [](const std::string&) { return false; }, false,
       [](const DataSpec& spec) { return read_arrays(spec, "arrays"); }},
  };
  return readers;
}

std::vector<std::string> format_names() {
  std::vector<std::string> names;
  for (const auto& reader : data_readers()) names.push_back(reader.name);
  return names;
}

// "idx, csv, npy, npz or images"
std::string format_list() {
  std::vector<std::string> names = format_names();
  std::string last = names.back();
  names.pop_back();
  return join(names, ", ") + " or " + last;
}

const DataReader& detect_format(const DataSpec& spec) {
  const auto& readers = data_readers();
  const DataFiles& train = spec.train();
  // Arrays in memory have no file name to tell their format by.
  const std::string format = spec.format().empty() && train.x.defined() ? "arrays" : spec.format();
  if (!format.empty()) {
    for (const auto& reader : readers) {
      if (reader.name == format) return reader;
    }
    auto suggestion = nearest(format, format_names());
    fail("data.format: {} is not a format, expected {}{}", quote(format), format_list(),
         suggestion ? " (did you mean " + *suggestion + "?)" : "");
  }
  if (train.empty()) fail("data.train: no training data given (a path, or inputs and labels)");
  std::string name = to_lower(train.inputs.empty() ? train.path : train.inputs);
  if (ends_with(name, ".gz")) name = name.substr(0, name.size() - 3);
  for (const auto& reader : readers) {
    if (reader.named(name)) return reader;
  }
  bool folder = !train.path.empty() && fs::is_directory(train.path);
  for (const auto& reader : readers) {
    if (folder && reader.folder) return reader;
  }
  fail("data.format: cannot tell the format of {}; set data.format to {}",
       quote(train.inputs.empty() ? train.path : train.inputs), format_list());
}

// What one file adds to the memory a data set takes: its bytes as read, and the values each fold
// holds of it as float32.
struct FileMemory {
  std::string file;
  int64_t read_bytes = 0;
  int64_t values = 0;
  std::string what;  // "60000 x 784 uint8 values"
};

FileMemory array_memory(const std::string& file, const ArrayHeader& header) {
  std::vector<std::string> dims;
  for (int64_t d : header.shape) dims.push_back(std::to_string(d));
  return {file, header.elements() * header.itemsize, header.elements(),
          fmt::format("{} values of {} bytes", join(dims, " x "), header.itemsize)};
}

// A table or text file: its bytes, and about 8 bytes a cell of index (a cell and its delimiter take
// 4 bytes or more in a numeric table) and a float a cell. Tables encoded one-hot are checked again,
// exactly, once encoded (read_tabular).
FileMemory text_memory(const std::string& file) {
  int64_t bytes = size_maybe_gz(file);
  return {file, 3 * bytes, bytes / 4, fmt::format("{} of text", bytes_text(static_cast<double>(bytes)))};
}

FileMemory image_memory(const std::string& folder, const ImageFolderOptions& options) {
  int64_t images = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(folder, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec) && has_image_extension(it->path())) ++images;
  }
  int64_t channels = options.channels() > 0 ? options.channels() : 3;
  int64_t values = images * channels * options.height() * options.width();
  return {folder, values, values, fmt::format("{} images of {} x {} x {}", images, channels, options.height(), options.width())};
}

// A file the estimate leaves to the reader: none given, or not there (the reader says which, and how).
bool missing(const std::string& path) {
  std::error_code ec;
  return path.empty() || !fs::exists(path, ec);
}

std::vector<FileMemory> files_memory(const DataSpec& spec, const std::string& format, const DataFiles& files) {
  if (format == "arrays") {  // in memory already: only the folds' float32 copies are new
    std::vector<FileMemory> out;
    for (const auto& [name, t] : {std::pair<std::string, torch::Tensor>{"x", files.x}, {"y", files.y}}) {
      if (t.defined()) out.push_back({name, 0, t.numel(), fmt::format("{} values in memory", t.numel())});
    }
    return out;
  }
  if (files.empty() || missing(files.inputs.empty() ? files.path : files.inputs)) return {};
  if (format == "idx" || format == "npy") {
    auto header = format == "idx" ? read_idx_header : read_npy_header;
    std::vector<FileMemory> out = {array_memory(files.inputs, header(files.inputs))};
    if (!missing(files.labels)) out.push_back(array_memory(files.labels, header(files.labels)));
    return out;
  }
  if (format == "npz") {
    std::vector<FileMemory> out;
    for (const auto& [key, header] : read_npz_headers(files.path)) out.push_back(array_memory(files.path + ":" + key, header));
    return out;
  }
  if (format == "images") return {image_memory(files.path, spec.images())};
  std::vector<FileMemory> out = {text_memory(files.path)};
  if (!missing(files.labels)) out.push_back(text_memory(files.labels));
  return out;
}

}  // namespace

int64_t estimate_memory(const DataSpec& spec, std::string* what) {
  std::string format = detect_format(spec).name;
  std::vector<FileMemory> files = files_memory(spec, format, spec.train());
  for (auto& f : files_memory(spec, format, spec.test())) files.push_back(f);
  if (!missing(spec.transfer())) {
    std::string name = to_lower(spec.transfer());
    if (format == "text" || format == "csv") files.push_back(text_memory(spec.transfer()));
    else if (ends_with(name, ".npy")) files.push_back(array_memory(spec.transfer(), read_npy_header(spec.transfer())));
    else files.push_back(array_memory(spec.transfer(), read_idx_header(spec.transfer())));
  }
  const int64_t folds = std::max<int64_t>(1, spec.folds());
  double read = 0, values = 0;  // doubles: a crafted header's sizes must not overflow the sum
  std::vector<std::string> parts;
  for (const auto& f : files) {
    read += f.read_bytes;
    values += f.values;
    parts.push_back(fmt::format("{}: {}", fs::path(f.file).filename().string(), f.what));
  }
  // The pool as read, then each fold's float32 copy of every row (train, validation, test, transfer).
  double bytes = read + static_cast<double>(folds) * values * 4;
  if (what) {
    *what = fmt::format("{}; as read, then as float32 in each of {} fold{}", join(parts, ", "), folds, folds > 1 ? "s" : "");
  }
  return static_cast<int64_t>(std::min(bytes, 9e18));
}

torch::Tensor float_inputs(const torch::Tensor& x) {
  if (x.scalar_type() == torch::kByte) return x.to(torch::kFloat).div_(255.0);
  return x.to(torch::kFloat);
}

void check_memory(const DataSpec& spec) {
  if (spec.max_memory() <= 0) return;
  std::string what;
  int64_t bytes = estimate_memory(spec, &what);
  spdlog::debug("data: about {} in memory ({})", bytes_text(static_cast<double>(bytes)), what);
  if (bytes > spec.max_memory()) fail_over_memory(spec, bytes, what);
}

Dataset load_dataset(const DataSpec& spec) {
  const DataReader& reader = detect_format(spec);
  check_memory(spec);
  std::string format = reader.name;
  Pool pool = reader.read(spec);
  Dataset dataset;
  dataset.task = spec.task();
  dataset.class_names = pool.class_names;
  dataset.outputs = spec.task() == Task::classification ? static_cast<int64_t>(pool.class_names.size())
                                                        : pool.y.size(1);
  dataset.source = fmt::format("{} ({})", train_name(spec), format);

  bool stratify = spec.task() == Task::classification;
  std::vector<int64_t> test = pool.test_rows;
  std::vector<int64_t> trainval = pool.train_rows;
  if (test.empty()) {
    if (!(spec.test_fraction() > 0.0 && spec.test_fraction() < 1.0)) {
      fail("data.test_fraction: {} is outside (0, 1), and there is no data.test file", spec.test_fraction());
    }
    auto y = stratify ? labels_of(pool, trainval) : torch::Tensor();
    auto holdout = holdout_split(static_cast<int64_t>(trainval.size()), y, spec.test_fraction(), spec.seed() + 1);
    test = pick(trainval, holdout.val);
    trainval = pick(trainval, holdout.train);
  }
  trainval = limit_rows(pool, trainval, spec.train_limit(), spec.seed() + 3);
  test = limit_rows(pool, test, spec.test_limit(), spec.seed() + 4);

  auto y = stratify ? labels_of(pool, trainval) : torch::Tensor();
  auto count = static_cast<int64_t>(trainval.size());
  std::vector<Split> splits = spec.folds() != 0
                                  ? kfold_split(count, y, spec.folds(), spec.seed())
                                  : std::vector<Split>{holdout_split(count, y, spec.val_fraction(), spec.seed())};
  torch::Tensor transfer = read_transfer(spec, format, pool);
  std::vector<std::string> transfer_texts;
  if (pool.text && !spec.transfer().empty()) transfer_texts = read_text_lines(spec.transfer());
  for (const auto& split : splits) {
    dataset.folds.push_back(make_fold(pool, spec, pick(trainval, split.train), pick(trainval, split.val), test,
                                      transfer, transfer_texts, spec.seed()));
  }
  if (pool.text) {
    for (const auto& fold : dataset.folds) {
      const auto& t = fold.preprocessing["text"];
      dataset.text.vocab = std::max(dataset.text.vocab, t["vocab"].get<int64_t>());
      dataset.text.pad_id = t["pad_id"].get<int64_t>();
      dataset.text.max_length = t["max_length"].get<int64_t>();
      dataset.text.tokenizer = t["tokenizer"].value("kind", "");
    }
  }
  dataset.input_shape = dataset.folds[0].train.x.sizes().slice(1).vec();
  if (pool.tabular && dataset.folds[0].preprocessing.contains("tabular")) {
    dataset.feature_names = TabularEncoder::from_json(dataset.folds[0].preprocessing["tabular"]).feature_names();
  }
  return dataset;
}

std::string Dataset::summary() const {
  std::ostringstream out;
  const DataFold& f = folds.front();
  out << "data: " << source << ", " << to_string(task) << ", input " << shape_text(input_shape);
  if (text.vocab > 0) out << fmt::format(" token ids ({} tokenizer, {} ids)", text.tokenizer, text.vocab);
  if (task == Task::classification) {
    out << ", " << outputs << " classes";
  } else {
    out << ", " << outputs << " target(s)";
  }
  out << "\n";
  if (folds.size() == 1) {
    out << fmt::format("splits: train {}, val {}, test {}", f.train.size(), f.val.size(), f.test.size());
  } else {
    out << fmt::format("splits: {} folds of train {} / val {}; test {}", folds.size(), f.train.size(), f.val.size(),
                       f.test.size());
  }
  auto labeled = f.labeled.sum().item<int64_t>();
  if (labeled < f.train.size()) out << fmt::format(", labels for {} training rows", labeled);
  if (f.transfer_x.defined()) out << fmt::format(", transfer {}", f.transfer_x.size(0));
  out << "\n";
  if (task == Task::classification) {
    auto counts = torch::bincount(f.train.y, {}, outputs);
    out << "train class counts:";
    for (int64_t c = 0; c < outputs; ++c) {
      out << " " << class_names[static_cast<size_t>(c)] << "=" << counts[c].item<int64_t>();
    }
    out << "\n";
  }
  return out.str();
}

}  // namespace kd::data
