#include "kd/data/text.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>
#include <sstream>

#include "kd/text/sentencepiece.h"
#include "kd/text/wordpiece.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/strings.h"

namespace kd::data {
namespace {

bool json_lines(const std::string& path, const std::string& text) {
  std::string name = to_lower(path);
  if (ends_with(name, ".gz")) name = name.substr(0, name.size() - 3);
  if (ends_with(name, ".jsonl") || ends_with(name, ".ndjson") || ends_with(name, ".json")) return true;
  auto first = text.find_first_not_of(" \t\r\n\xEF\xBB\xBF");
  return first != std::string::npos && text[first] == '{';
}

// The label's column or key: the one asked for, else "label", else the only one besides the text.
std::string target_of(const std::vector<std::string>& names, const TextOptions& options, const std::string& where) {
  if (!options.target().empty()) return options.target();
  if (std::find(names.begin(), names.end(), "label") != names.end()) return "label";
  std::vector<std::string> others;
  for (const auto& name : names) {
    if (name != options.text()) others.push_back(name);
  }
  if (others.size() == 1) return others[0];
  fail("{}: which of {} is the label? set data.target", where, join(others, ", "));
}

std::string missing_text(const std::string& what, const std::string& name, const std::vector<std::string>& names) {
  auto suggestion = nearest(name, names);
  return fmt::format("no {} {}{} (there are {})", what, quote(name),
                     suggestion ? " (did you mean " + quote(*suggestion) + "?)" : std::string(), join(names, ", "));
}

TextTable read_csv_texts(const std::string& path, const TextOptions& options, const CsvOptions& csv) {
  CsvTable table = read_csv(path, csv);
  TextTable out;
  out.path = path;
  out.target_name = target_of(table.columns, options, path);
  auto column = [&](const std::string& name) {
    auto it = std::find(table.columns.begin(), table.columns.end(), name);
    if (it == table.columns.end()) fail("{}: {}", path, missing_text("column", name, table.columns));
    return static_cast<size_t>(it - table.columns.begin());
  };
  size_t text = column(options.text()), target = column(out.target_name);
  for (size_t r = 0; r < table.num_rows(); ++r) {
    out.texts.emplace_back(table.cell(r, text));
    out.targets.emplace_back(table.cell(r, target));
    out.line_numbers.push_back(table.line_numbers[r]);
  }
  return out;
}

// Each non-blank line of JSON Lines `content`, parsed, with its 1-based line number. kd::Error naming the
// line that is not JSON, or the file when no line is.
void for_each_json_line(const std::string& path, const std::string& content,
                        const std::function<void(const nlohmann::json&, int64_t)>& use) {
  std::istringstream lines(content);
  std::string line;
  bool any = false;
  for (int64_t number = 1; std::getline(lines, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("{}:{}: not a JSON object ({})", path, number, first_line(e));
    }
    use(record, number);
    any = true;
  }
  if (!any) fail("{}: no records, expected one JSON object a line", path);
}

// The non-blank lines of `path`'s `content` (a CR before each line end dropped); kd::Error when it has none.
std::vector<std::string> text_lines(const std::string& path, const std::string& content) {
  std::istringstream lines(content);
  std::vector<std::string> texts;
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) texts.push_back(line);
  }
  if (texts.empty()) fail("data.transfer: {} has no text lines, expected one text a line", path);
  return texts;
}

TextTable read_jsonl_texts(const std::string& path, const std::string& content, const TextOptions& options) {
  TextTable out;
  out.path = path;
  int64_t number = 0;
  auto as_text = [&](const nlohmann::json& value, const std::string& key) -> std::string {
    if (value.is_string()) return value.get<std::string>();
    if (value.is_number_integer()) return std::to_string(value.get<long long>());
    if (value.is_number()) return value.dump();
    fail("{}:{}: {} is {}, expected a string or a number", path, number, quote(key), value.dump());
  };
  for_each_json_line(path, content, [&](const nlohmann::json& record, int64_t line_number) {
    number = line_number;
    if (!record.is_object()) fail("{}:{}: expected a JSON object, found {}", path, number, record.type_name());
    std::vector<std::string> keys;
    for (const auto& item : record.items()) keys.push_back(item.key());
    if (out.target_name.empty()) out.target_name = target_of(keys, options, fmt::format("{}:{}", path, number));
    for (const std::string& key : {options.text(), out.target_name}) {
      if (!record.contains(key)) fail("{}:{}: {}", path, number, missing_text("key", key, keys));
    }
    out.texts.push_back(as_text(record[options.text()], options.text()));
    out.targets.push_back(as_text(record[out.target_name], out.target_name));
    out.line_numbers.push_back(number);
  });
  return out;
}

}  // namespace

TextTable read_text_table(const std::string& path, const TextOptions& options, const CsvOptions& csv) {
  std::string content = read_file_maybe_gz(path);
  TextTable table = json_lines(path, content) ? read_jsonl_texts(path, content, options)
                                              : read_csv_texts(path, options, csv);
  for (size_t i = 0; i < table.texts.size(); ++i) {
    if (table.texts[i].find_first_not_of(" \t\r\n") == std::string::npos) {
      fail("{}:{}: the text {} is empty", path, table.line_numbers[i], quote(options.text()));
    }
  }
  return table;
}

std::vector<std::string> read_text_lines(const std::string& path) {
  return text_lines(path, read_file_maybe_gz(path));
}

std::vector<std::string> read_text_inputs(const std::string& path, const std::string& key) {
  std::string content = read_file_maybe_gz(path);
  if (!json_lines(path, content)) return text_lines(path, content);
  std::vector<std::string> texts;
  for_each_json_line(path, content, [&](const nlohmann::json& record, int64_t number) {
    if (!record.is_object() || !record.contains(key) || !record[key].is_string()) {
      fail("{}:{}: expected an object with a string {}", path, number, quote(key));
    }
    texts.push_back(record[key].get<std::string>());
  });
  return texts;
}

text::TokenizerPtr make_tokenizer(const TokenizerSpec& spec, const std::vector<std::string>& texts, uint64_t seed) {
  int given = !spec.vocab().empty() + !spec.model().empty() + !spec.train().empty();
  if (given != 1) {
    fail("data.tokenizer: give one of vocab (a BERT vocab.txt), model (a SentencePiece .model) or "
         "train: sentencepiece");
  }
  if (!spec.vocab().empty()) return text::load_wordpiece(spec.vocab(), text::WordPieceOptions().lowercase(spec.lowercase()));
  if (!spec.model().empty()) return text::load_sentencepiece(spec.model());
  if (spec.train() != "sentencepiece") {
    fail("data.tokenizer.train: {} is not a tokenizer kdistill trains, expected sentencepiece", quote(spec.train()));
  }
  if (spec.vocab_size() < 16) fail("data.tokenizer.vocab_size: {} is too few pieces (16 or more)", spec.vocab_size());
  return text::train_sentencepiece(texts, text::SentencePieceTrainOptions().vocab_size(spec.vocab_size()).seed(seed));
}

int64_t fitting_max_length(const text::Tokenizer& tokenizer, const std::vector<std::string>& texts) {
  constexpr int64_t kLongest = 512;
  std::vector<int64_t> lengths;
  lengths.reserve(texts.size());
  for (const auto& t : texts) lengths.push_back(static_cast<int64_t>(tokenizer.encode(t, kLongest).size()));
  if (lengths.empty()) return 8;
  auto at = lengths.begin() + static_cast<std::ptrdiff_t>((lengths.size() - 1) * 95 / 100);
  std::nth_element(lengths.begin(), at, lengths.end());
  return std::clamp<int64_t>((*at + 7) / 8 * 8, 8, kLongest);
}

}  // namespace kd::data
