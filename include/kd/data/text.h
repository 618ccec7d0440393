// Labelled texts (recipe `data.format: text`): a CSV/TSV file with a text column and a label column
// chosen by name, or JSON Lines ({"text": ..., "label": ...}, keys chosen the same way). A transfer set
// is a plain text file, one example a line. Texts become token ids with a tokenizer from the recipe
// (a BERT vocab.txt, a SentencePiece .model, or a SentencePiece model trained on each fold's training
// texts), as float32 [N, max_length] rows padded with the tokenizer's pad id: every model input in
// kdistill is float32, and ids below 2^24 are exact in it; text models cast them back.
//
//   TextTable t = read_text_table("apt.csv", TextOptions().text("text").target("section"));
//   // t.texts[0] == "3d network display server library", t.targets[0] == "libs", t.line_numbers[0] == 2
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kd/data/csv.h"
#include "kd/text/tokenizer.h"

namespace kd::data {

// Where the token ids come from: exactly one of vocab, model, train.
struct TokenizerSpec {
  TORCH_ARG(std::string, vocab) = "";        // a BERT WordPiece vocab.txt
  TORCH_ARG(std::string, model) = "";        // a SentencePiece .model file
  TORCH_ARG(std::string, train) = "";        // "sentencepiece": trained on each fold's training texts
  TORCH_ARG(int64_t, vocab_size) = 8000;     // train: the pieces it learns (fewer when the texts are few)
  TORCH_ARG(std::string, lowercase) = "auto";  // vocab: auto (uncased vocabs lower-case) | true | false
};

struct TextOptions {
  TORCH_ARG(std::string, text) = "text";   // the text's column (CSV) or key (JSON Lines)
  TORCH_ARG(std::string, target) = "";     // the label's; "" = "label" when there is one, else the one other column
  TORCH_ARG(int64_t, max_length) = 0;      // ids per text; 0 = enough for 95 % of the training texts (8..512)
  TORCH_ARG(TokenizerSpec, tokenizer);
};

struct TextTable {
  std::string path;
  std::string target_name;                // the label's column or key
  std::vector<std::string> texts;
  std::vector<std::string> targets;       // the label cells as written
  std::vector<int64_t> line_numbers;      // 1-based line of each row, for messages
};

// Reads a CSV/TSV (read_csv's rules) or JSON Lines file (by a .jsonl/.ndjson/.json name, or a first
// character "{"). kd::Error naming the file and line: a missing column or key (with the ones there), a
// row whose text or label is not a string or number, an empty text.
TextTable read_text_table(const std::string& path, const TextOptions& options, const CsvOptions& csv = CsvOptions());

// A transfer file: one text a line (blank lines skipped; .gz read as such). kd::Error when it has none.
std::vector<std::string> read_text_lines(const std::string& path);

// Texts to predict on: JSON Lines (by name or a first "{"), each record's `key`; any other file one
// text a line (blank lines kept out). kd::Error naming the file and line of a record without the key.
std::vector<std::string> read_text_inputs(const std::string& path, const std::string& key = "text");

// The tokenizer `spec` names, trained on `texts` (a fold's training texts) when spec.train() is set.
// kd::Error naming data.tokenizer when none or several of vocab/model/train are given.
text::TokenizerPtr make_tokenizer(const TokenizerSpec& spec, const std::vector<std::string>& texts, uint64_t seed);

// The smallest multiple of 8 in [8, 512] that holds 95 % of `texts` whole.
int64_t fitting_max_length(const text::Tokenizer& tokenizer, const std::vector<std::string>& texts);

}  // namespace kd::data
