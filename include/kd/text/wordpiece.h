// BERT's WordPiece tokenizer from a vocab.txt (one token a line, the id is the line number from 0), as
// Hugging Face's BertTokenizer (basic + wordpiece) does it:
//   1. clean: drop NUL, U+FFFD and the C* categories but tab, CR, LF; whitespace (Zs, tab, CR, LF) -> space
//   2. a space on both sides of each CJK ideograph
//   3. uncased: lower-case, then NFD and drop the combining marks (category Mn)   "Café" -> "cafe"
//   4. split on spaces (and U+2028, U+2029, as str.split()), then every punctuation character (ASCII
//      33-47, 58-64, 91-96, 123-126, or a Unicode P* category) is a word of its own   "don't" -> "don" "'"
//      "t"
//   5. each word: greedy longest match first from the vocab, continuations as "##piece"; a word longer
//      than 100 characters, or one the vocab cannot cover, is [UNK]              "unaffable" -> "un" "##aff"
//      "##able"
// encode() wraps the ids in [CLS] ... [SEP]; pad_id() is [PAD]'s id.
//
// Lower-casing is ICU's full case mapping in the root locale, which is Python's str.lower(): final sigma
// by context ("ΟΔΟΣ" -> "οδος"), "İ" -> "i" + U+0307. Differences from Hugging Face's BertTokenizer: special
// tokens written in the text are plain text ("[SEP]" -> "[", "sep", "]"), as in Google's tokenization.py;
// no NFC first (newer transformers versions add one, which only matters to cased vocabs and decomposed
// input); ICU 72 knows Unicode 15, Python 3.11 Unicode 14, so characters new in 15 are kept here where
// Python drops them as unassigned. Invalid UTF-8 decodes to U+FFFD, which step 1 drops.
//
//   TokenizerPtr t = load_wordpiece("vocab.txt", WordPieceOptions().lowercase("auto"));
#pragma once

#include <torch/arg.h>

#include <string>
#include <unordered_map>
#include <vector>

#include "kd/text/tokenizer.h"

namespace kd::text {

struct WordPieceOptions {
  // "auto": lower-case (and strip accents) when no token of the vocab has an upper-case letter, as BERT's
  // uncased vocabs; "true" or "false" to say so.
  TORCH_ARG(std::string, lowercase) = "auto";
  // "auto": strip accents exactly when lower-casing (BERT's rule); "true" or "false" to say so.
  TORCH_ARG(std::string, strip_accents) = "auto";
  TORCH_ARG(int64_t, max_word_chars) = 100;  // a longer word is [UNK]
};

class WordPieceTokenizer : public Tokenizer {
 public:
  // `tokens[i]` is the token of id i; `where` names the vocab in errors. `lowercase` and `strip_accents`
  // are the resolved settings (no "auto"). kd::Error when a special token is missing.
  WordPieceTokenizer(std::vector<std::string> tokens, bool lowercase, bool strip_accents,
                     int64_t max_word_chars, const std::string& where);

  std::vector<int64_t> encode(std::string_view text, int64_t max_length) const override;
  std::vector<std::string> pieces(std::string_view text) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(tokens_.size()); }
  int64_t pad_id() const override { return pad_id_; }
  std::string kind() const override { return "wordpiece"; }
  // {"kind": "wordpiece", "vocab": [...], "lowercase": bool, "strip_accents": bool, "max_word_chars": n}
  nlohmann::json to_json() const override;

  bool lowercase() const { return lowercase_; }
  bool strip_accents() const { return strip_accents_; }

 private:
  std::vector<int64_t> piece_ids(std::string_view text) const;

  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int64_t> ids_;
  bool lowercase_ = true;
  bool strip_accents_ = true;
  int64_t max_word_chars_ = 100;
  int64_t pad_id_ = 0, unk_id_ = 0, cls_id_ = 0, sep_id_ = 0;
};

// The tokenizer of a vocab.txt. kd::Error naming the file when it is unreadable or empty, lacks one of
// [PAD], [UNK], [CLS], [SEP], or an option is not auto/true/false.
TokenizerPtr load_wordpiece(const std::string& path, const WordPieceOptions& options = WordPieceOptions());

// Whether lowercase "auto" lower-cases with these tokens: none has an upper-case letter ([UNK] and the
// other bracketed special tokens aside).
bool vocab_is_uncased(const std::vector<std::string>& tokens);

}  // namespace kd::text
