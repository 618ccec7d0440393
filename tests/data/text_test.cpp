// data.format: text: labelled texts from CSV/TSV and JSON Lines, tokenized per fold, with the
// tokenizer kept in the fold's preprocessing, and the inputs it refuses.
#include "kd/data/text.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "kd/data/dataset.h"
#include "kd/text/wordpiece.h"
#include "kd/util/fs.h"
#include "test_util.h"

namespace kd::data {
namespace {

using test::TempDir;

// 60 texts of three kinds, each kind with its own words, as CSV (with a distractor column).
std::string csv_of_texts() {
  std::string text = "id,text,kind\n";
  const char* words[3][4] = {{"alpha", "beta", "gamma", "delta"}, {"red", "green", "blue", "cyan"},
                             {"one", "two", "three", "four"}};
  for (int i = 0; i < 60; ++i) {
    int kind = i % 3;
    text += std::to_string(i) + ",\"" + words[kind][i % 4] + " " + words[kind][(i + 1) % 4] + ", " +
            words[kind][(i + 2) % 4] + "\"," + std::vector<std::string>{"greek", "colour", "number"}[kind] + "\n";
  }
  return text;
}

TEST(TextTable, CsvByColumnNameAndJsonLinesByKey) {
  TempDir dir;
  write_file_atomic(dir.path() / "t.csv", csv_of_texts());
  TextTable csv = read_text_table((dir.path() / "t.csv").string(), TextOptions().target("kind"));
  ASSERT_EQ(csv.texts.size(), 60u);
  EXPECT_EQ(csv.texts[0], "alpha beta, gamma");
  EXPECT_EQ(csv.targets[1], "colour");
  EXPECT_EQ(csv.line_numbers[0], 2);
  write_file_atomic(dir.path() / "t.jsonl", "{\"text\": \"a b\", \"label\": 3}\n\n{\"label\": \"x\", \"text\": \"c\"}\n");
  TextTable json = read_text_table((dir.path() / "t.jsonl").string(), TextOptions());
  EXPECT_EQ(json.target_name, "label");
  EXPECT_EQ(json.texts, (std::vector<std::string>{"a b", "c"}));
  EXPECT_EQ(json.targets, (std::vector<std::string>{"3", "x"}));
  EXPECT_EQ(json.line_numbers, (std::vector<int64_t>{1, 3}));
}

TEST(TextTable, BadInputIsNamedByFileAndLine) {
  TempDir dir;
  auto path = [&](const std::string& name, const std::string& content) {
    write_file_atomic(dir.path() / name, content);
    return (dir.path() / name).string();
  };
  std::string csv = path("t.csv", csv_of_texts());
  EXPECT_EQ(test::error_of([&] { read_text_table(csv, TextOptions().text("txt").target("kind")); }),
            csv + ": no column \"txt\" (did you mean \"text\"?) (there are id, text, kind)");
  EXPECT_EQ(test::error_of([&] { read_text_table(csv, TextOptions()); }),
            csv + ": which of id, kind is the label? set data.target");
  std::string broken = path("b.jsonl", "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\", \"label\": \n");
  EXPECT_EQ(test::error_of([&] { read_text_table(broken, TextOptions()); }).rfind(broken + ":2: not a JSON object (", 0),
            0u);
  std::string no_key = path("k.jsonl", "{\"text\": \"a\", \"label\": 1}\n{\"txt\": \"b\", \"label\": 2}\n");
  EXPECT_EQ(test::error_of([&] { read_text_table(no_key, TextOptions()); }),
            no_key + ":2: no key \"text\" (did you mean \"txt\"?) (there are label, txt)");
  std::string empty = path("e.jsonl", "{\"text\": \"a\", \"label\": 1}\n{\"text\": \" \", \"label\": 2}\n");
  EXPECT_EQ(test::error_of([&] { read_text_table(empty, TextOptions()); }), empty + ":2: the text \"text\" is empty");
  std::string list = path("l.jsonl", "{\"text\": [1], \"label\": 1}\n");
  EXPECT_EQ(test::error_of([&] { read_text_table(list, TextOptions()); }),
            list + ":1: \"text\" is [1], expected a string or a number");
  std::string blank = path("blank.txt", "\n  \n");
  EXPECT_EQ(test::error_of([&] { read_text_lines(blank); }),
            "data.transfer: " + blank + " has no text lines, expected one text a line");
}

// load_dataset on texts: a SentencePiece model trained on each fold's training texts, ids [N, L] with
// the fold's tokenizer in its preprocessing (rebuilt from it, it gives the same ids), a transfer file.
TEST(TextDataset, TokenizedPerFoldWithTheTokenizerInThePreprocessing) {
  TempDir dir;
  write_file_atomic(dir.path() / "t.csv", csv_of_texts());
  write_file_atomic(dir.path() / "more.txt", "alpha gamma\n\nblue red\r\n");
  auto spec = DataSpec()
                  .format("text")
                  .train(DataFiles{(dir.path() / "t.csv").string(), "", ""})
                  .transfer((dir.path() / "more.txt").string())
                  .test_fraction(0.2)
                  .folds(2)
                  .text(TextOptions().target("kind").tokenizer(TokenizerSpec().train("sentencepiece").vocab_size(40)));
  Dataset dataset = load_dataset(spec);
  EXPECT_EQ(dataset.class_names, (std::vector<std::string>{"colour", "greek", "number"}));
  EXPECT_EQ(dataset.text.tokenizer, "sentencepiece");
  EXPECT_GT(dataset.text.vocab, 10);
  EXPECT_LE(dataset.text.vocab, 40);
  ASSERT_EQ(dataset.folds.size(), 2u);
  const DataFold& fold = dataset.folds[0];
  int64_t length = fold.preprocessing["text"]["max_length"];
  EXPECT_EQ(dataset.input_shape, (std::vector<int64_t>{length}));
  EXPECT_EQ(length % 8, 0);
  EXPECT_EQ(fold.train.x.scalar_type(), torch::kFloat);
  EXPECT_EQ(fold.transfer_x.size(0), 2);
  // The stored tokenizer gives the fold's ids again.
  auto tokenizer = text::tokenizer_from_json(fold.preprocessing["text"]["tokenizer"]);
  EXPECT_TRUE(torch::equal(text::encode_batch(*tokenizer, {"alpha gamma", "blue red"}, length), fold.transfer_x));
  EXPECT_EQ(fold.preprocessing["normalize"]["mode"], "none");
}

TEST(TextDataset, AWordPieceVocabAndTheTokenizerErrors) {
  TempDir dir;
  write_file_atomic(dir.path() / "t.csv", csv_of_texts());
  std::string vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n,\nalpha\nbeta\ngamma\ndelta\nred\ngreen\nblue\ncyan\none\ntwo\nthree\nfour\n";
  write_file_atomic(dir.path() / "vocab.txt", vocab);
  auto spec = DataSpec()
                  .format("text")
                  .train(DataFiles{(dir.path() / "t.csv").string(), "", ""})
                  .text(TextOptions().target("kind").max_length(6).tokenizer(
                      TokenizerSpec().vocab((dir.path() / "vocab.txt").string())));
  Dataset dataset = load_dataset(spec);
  EXPECT_EQ(dataset.text.vocab, 17);
  EXPECT_EQ(dataset.text.tokenizer, "wordpiece");
  EXPECT_EQ(dataset.input_shape, (std::vector<int64_t>{6}));
  // "alpha beta, gamma" -> [CLS] alpha beta , gamma [SEP]
  auto tokenizer = text::load_wordpiece((dir.path() / "vocab.txt").string());
  EXPECT_EQ(tokenizer->encode("alpha beta, gamma", 6), (std::vector<int64_t>{2, 5, 6, 4, 7, 3}));
  EXPECT_EQ(test::error_of([&] {
              load_dataset(DataSpec(spec).text(TextOptions().target("kind").tokenizer(TokenizerSpec())));
            }),
            "data.tokenizer: give one of vocab (a BERT vocab.txt), model (a SentencePiece .model) or train: sentencepiece");
  EXPECT_EQ(test::error_of([&] {
              load_dataset(DataSpec(spec).text(TextOptions().target("kind").tokenizer(TokenizerSpec().train("bpe"))));
            }),
            "data.tokenizer.train: \"bpe\" is not a tokenizer kdistill trains, expected sentencepiece");
}

}  // namespace
}  // namespace kd::data
