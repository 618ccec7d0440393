// Text to token ids: the interface the tokenizers implement (kd/text/wordpiece.h, kd/text/sentencepiece.h),
// rebuilding one from its JSON, and a batch of texts as a model input.
//
//   TokenizerPtr t = load_wordpiece("vocab.txt");             // bert-base-uncased's vocab
//   t->pieces("Héllo, world!")   // {"hello", ",", "world", "!"}
//   t->encode("Héllo, world!", 5)  // {101 [CLS], 7592, 1010, 2088, 102 [SEP]}: truncated, [SEP] kept
//   torch::Tensor ids = encode_batch(*t, {"a b", "c"}, 8);   // [2, 8] float32, rows padded with t->pad_id()
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace kd::text {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // The ids of one text with the tokenizer's special tokens (WordPiece: [CLS] ... [SEP]; SentencePiece:
  // none), at most `max_length` of them (>= 2 for WordPiece): a longer text loses its last pieces, the
  // closing special token stays. Not padded.
  virtual std::vector<int64_t> encode(std::string_view text, int64_t max_length) const = 0;
  // The token strings of one text, without special tokens or truncation, for tests and logs.
  virtual std::vector<std::string> pieces(std::string_view text) const = 0;
  // Every id is in [0, vocab_size).
  virtual int64_t vocab_size() const = 0;
  // The id that pads a row: a valid id below vocab_size (one past the model's pieces when it has none).
  virtual int64_t pad_id() const = 0;
  virtual std::string kind() const = 0;  // "wordpiece" | "sentencepiece"
  // Everything needed to rebuild the tokenizer with no file: {"kind": ..., ...}; tokenizer_from_json reads
  // it.
  virtual nlohmann::json to_json() const = 0;
};

using TokenizerPtr = std::shared_ptr<const Tokenizer>;

// The tokenizer a to_json() describes. kd::Error naming the key that is missing or wrong.
TokenizerPtr tokenizer_from_json(const nlohmann::json& j);

// [N, max_length] float32 ids of `texts` (each encode(text, max_length)), each row padded with pad_id
// after its ids. Float because every model input in kdistill is float32 (ids below 2^24 are exact);
// text models cast them back to long. kd::Error when max_length < 1.
torch::Tensor encode_batch(const Tokenizer& tokenizer, const std::vector<std::string>& texts,
                           int64_t max_length);

}  // namespace kd::text
