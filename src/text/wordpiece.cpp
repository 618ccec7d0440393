#include "kd/text/wordpiece.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

#include <algorithm>

#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/strings.h"

namespace kd::text {

namespace {

constexpr const char* kSpecialTokens = "a BERT vocab has [PAD], [UNK], [CLS], [SEP]";

using CodePoints = std::vector<UChar32>;

// Invalid UTF-8 decodes to U+FFFD, which cleaning drops.
CodePoints decode_utf8(std::string_view text) {
  CodePoints out;
  out.reserve(text.size());
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  const auto length = static_cast<int32_t>(text.size());
  int32_t i = 0;
  while (i < length) {
    UChar32 c = 0;
    U8_NEXT(bytes, i, length, c);
    out.push_back(c < 0 ? 0xFFFD : c);
  }
  return out;
}

void append_utf8(std::string& out, UChar32 c) {
  uint8_t buffer[U8_MAX_LENGTH];
  int32_t size = 0;
  U8_APPEND_UNSAFE(buffer, size, c);  // c is a valid code point: decoding replaced the invalid ones
  out.append(reinterpret_cast<const char*>(buffer), static_cast<size_t>(size));
}

// BERT's _is_whitespace, _is_control, _is_punctuation and _is_chinese_char.
bool is_whitespace(UChar32 c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || u_charType(c) == U_SPACE_SEPARATOR;
}

bool is_control(UChar32 c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (u_charType(c)) {
    case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
    case U_UNASSIGNED:
    case U_PRIVATE_USE_CHAR:
    case U_SURROGATE:
      return true;
    default:
      return false;
  }
}

bool is_punctuation(UChar32 c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126))
    return true;
  switch (u_charType(c)) {
    case U_CONNECTOR_PUNCTUATION:
    case U_DASH_PUNCTUATION:
    case U_START_PUNCTUATION:
    case U_END_PUNCTUATION:
    case U_INITIAL_PUNCTUATION:
    case U_FINAL_PUNCTUATION:
    case U_OTHER_PUNCTUATION:
      return true;
    default:
      return false;
  }
}

bool is_cjk(UChar32 c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// Where Python's str.split() splits once cleaning has turned the other whitespace into spaces: the line
// and paragraph separators are whitespace to Python but neither control nor Zs to BERT, so they stay.
bool splits_words(UChar32 c) { return c == ' ' || c == 0x2028 || c == 0x2029; }

// Lower-cases with full case mapping in the root locale (Python's str.lower(): final sigma in context,
// "İ" to "i" + U+0307), then NFD without the nonspacing marks.
CodePoints normalize_word(const CodePoints& word, bool lowercase, bool strip_accents) {
  if (!lowercase && !strip_accents) return word;
  // ASCII, the common case, has no marks and lower-cases letter by letter.
  if (std::all_of(word.begin(), word.end(), [](UChar32 c) { return c < 0x80; })) {
    CodePoints out = word;
    if (lowercase) {
      for (auto& c : out) c = (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
    }
    return out;
  }
  icu::UnicodeString text;
  for (UChar32 c : word) text.append(c);
  if (lowercase) text.toLower(icu::Locale::getRoot());
  if (strip_accents) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* nfd = icu::Normalizer2::getNFDInstance(status);
    KD_CHECK(U_SUCCESS(status), "ICU has no NFD normalizer: {}", u_errorName(status));
    text = nfd->normalize(text, status);
    KD_CHECK(U_SUCCESS(status), "ICU NFD failed: {}", u_errorName(status));
  }
  CodePoints out;
  out.reserve(static_cast<size_t>(text.length()));
  for (int32_t i = 0; i < text.length(); i = text.moveIndex32(i, 1)) {
    const UChar32 c = text.char32At(i);
    if (strip_accents && u_charType(c) == U_NON_SPACING_MARK) continue;
    out.push_back(c);
  }
  return out;
}

bool parse_flag(const std::string& value, bool automatic, const std::string& path, const char* name) {
  if (value == "auto") return automatic;
  if (value == "true") return true;
  if (value == "false") return false;
  fail("{}: {} {} is not auto, true or false", path, name, quote(value));
}

bool is_special(const std::string& token) {
  return token.size() > 2 && token.front() == '[' && token.back() == ']';
}

}  // namespace

bool vocab_is_uncased(const std::vector<std::string>& tokens) {
  for (const auto& token : tokens) {
    if (is_special(token)) continue;
    for (UChar32 c : decode_utf8(token)) {
      const auto type = u_charType(c);
      if (type == U_UPPERCASE_LETTER || type == U_TITLECASE_LETTER) return false;
    }
  }
  return true;
}

WordPieceTokenizer::WordPieceTokenizer(std::vector<std::string> tokens, bool lowercase, bool strip_accents,
                                       int64_t max_word_chars, const std::string& where)
    : tokens_(std::move(tokens)),
      lowercase_(lowercase),
      strip_accents_(strip_accents),
      max_word_chars_(max_word_chars) {
  if (tokens_.empty()) fail("{}: no tokens; {}", where, kSpecialTokens);
  if (max_word_chars_ < 1) fail("{}: max_word_chars {} is below 1", where, max_word_chars_);
  ids_.reserve(tokens_.size());
  // A token listed twice keeps its last line's id, as BERT's load_vocab does.
  for (size_t i = 0; i < tokens_.size(); ++i) ids_[tokens_[i]] = static_cast<int64_t>(i);
  auto special = [&](const char* token) {
    auto it = ids_.find(token);
    if (it == ids_.end()) fail("{}: no {} token; {}", where, token, kSpecialTokens);
    return it->second;
  };
  pad_id_ = special("[PAD]");
  unk_id_ = special("[UNK]");
  cls_id_ = special("[CLS]");
  sep_id_ = special("[SEP]");
}

std::vector<int64_t> WordPieceTokenizer::piece_ids(std::string_view text) const {
  // BasicTokenizer: clean the text and space out CJK ideographs.
  CodePoints cleaned;
  for (UChar32 c : decode_utf8(text)) {
    if (c == 0 || c == 0xFFFD || is_control(c)) continue;
    if (is_whitespace(c)) {
      cleaned.push_back(' ');
    } else if (is_cjk(c)) {
      cleaned.insert(cleaned.end(), {' ', c, ' '});
    } else {
      cleaned.push_back(c);
    }
  }

  std::vector<int64_t> ids;
  std::string piece;
  // WordpieceTokenizer: greedy longest match first, "##" before every piece but the first.
  auto add_word = [&](const CodePoints& word) {
    if (static_cast<int64_t>(word.size()) > max_word_chars_) {
      ids.push_back(unk_id_);
      return;
    }
    std::vector<size_t> offsets = {0};  // byte offset of each code point, and the end
    std::string utf8;
    for (UChar32 c : word) {
      append_utf8(utf8, c);
      offsets.push_back(utf8.size());
    }
    const size_t first = ids.size();
    size_t start = 0;
    while (start < word.size()) {
      int64_t found = -1;
      size_t end = word.size();
      for (; end > start; --end) {
        piece.assign(start > 0 ? "##" : "");
        piece.append(utf8, offsets[start], offsets[end] - offsets[start]);
        auto it = ids_.find(piece);
        if (it != ids_.end()) {
          found = it->second;
          break;
        }
      }
      if (found < 0) {
        ids.resize(first);
        ids.push_back(unk_id_);
        return;
      }
      ids.push_back(found);
      start = end;
    }
  };

  // Whitespace words; each normalized, then split around every punctuation character.
  CodePoints word;
  auto add_token = [&](const CodePoints& token) {
    word.clear();
    for (UChar32 c : normalize_word(token, lowercase_, strip_accents_)) {
      if (!is_punctuation(c)) {
        word.push_back(c);
        continue;
      }
      if (!word.empty()) add_word(word);
      word.assign(1, c);
      add_word(word);
      word.clear();
    }
    if (!word.empty()) add_word(word);
  };
  CodePoints token;
  for (UChar32 c : cleaned) {
    if (!splits_words(c)) {
      token.push_back(c);
    } else if (!token.empty()) {
      add_token(token);
      token.clear();
    }
  }
  if (!token.empty()) add_token(token);
  return ids;
}

std::vector<int64_t> WordPieceTokenizer::encode(std::string_view text, int64_t max_length) const {
  if (max_length < 2)
    fail("wordpiece encode: max_length {} leaves no room for [CLS] and [SEP], expected 2 or more",
         max_length);
  std::vector<int64_t> pieces = piece_ids(text);
  std::vector<int64_t> ids;
  const auto kept = std::min<size_t>(pieces.size(), static_cast<size_t>(max_length - 2));
  ids.reserve(kept + 2);
  ids.push_back(cls_id_);
  ids.insert(ids.end(), pieces.begin(), pieces.begin() + static_cast<std::ptrdiff_t>(kept));
  ids.push_back(sep_id_);
  return ids;
}

std::vector<std::string> WordPieceTokenizer::pieces(std::string_view text) const {
  std::vector<std::string> out;
  for (int64_t id : piece_ids(text)) out.push_back(tokens_[static_cast<size_t>(id)]);
  return out;
}

nlohmann::json WordPieceTokenizer::to_json() const {
  return {{"kind", kind()},
          {"vocab", tokens_},
          {"lowercase", lowercase_},
          {"strip_accents", strip_accents_},
          {"max_word_chars", max_word_chars_}};
}

TokenizerPtr load_wordpiece(const std::string& path, const WordPieceOptions& options) {
  const std::string bytes = read_file(path);
  std::vector<std::string> tokens;
  size_t start = 0;
  while (start < bytes.size()) {
    size_t end = bytes.find('\n', start);
    if (end == std::string::npos) end = bytes.size();
    size_t stop = end;
    if (stop > start && bytes[stop - 1] == '\r') --stop;
    tokens.emplace_back(bytes, start, stop - start);
    start = end + 1;
  }
  if (tokens.empty()) fail("{}: the file is empty, expected one token a line; {}", path, kSpecialTokens);
  const bool lowercase = parse_flag(options.lowercase(), vocab_is_uncased(tokens), path, "lowercase");
  const bool strip_accents = parse_flag(options.strip_accents(), lowercase, path, "strip_accents");
  return std::make_shared<WordPieceTokenizer>(std::move(tokens), lowercase, strip_accents,
                                              options.max_word_chars(), path);
}

}  // namespace kd::text
