// The tokenizers against independent references: WordPiece against tests/fixtures/wordpiece_reference.py
// (a from-scratch Python BERT tokenizer), SentencePiece against Python's sentencepiece module; JSON
// round trips, batches, and the inputs they refuse.
#include "kd/text/tokenizer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/python_helper.h"
#include "kd/text/sentencepiece.h"
#include "kd/text/wordpiece.h"
#include "kd/util/strings.h"
#include "test_util.h"

namespace kd::test {
namespace {

namespace fs = std::filesystem;
using text::TokenizerPtr;

void write_text(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

// ---------------------------------------------------------------------------------------------- WordPiece

// A small BERT-style vocab: specials, punctuation, single characters with their ## forms (so that most
// words split into pieces), whole words and suffixes, accented, Greek and CJK tokens. `cased` adds
// upper-case tokens, as bert-base-cased's vocab has.
std::vector<std::string> test_vocab(bool cased) {
  std::vector<std::string> tokens = {"[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  for (int c = 33; c <= 126; ++c) {
    if (!std::isalnum(c)) tokens.push_back(std::string(1, static_cast<char>(c)));
  }
  for (const char* p : {"«", "»", "—", "…", "¿", "。", "、", "‘", "’"}) tokens.push_back(p);
  for (char c = 'a'; c <= 'z'; ++c) {
    tokens.push_back(std::string(1, c));
    tokens.push_back("##" + std::string(1, c));
  }
  for (char c = '0'; c <= '9'; ++c) {
    tokens.push_back(std::string(1, c));
    tokens.push_back("##" + std::string(1, c));
  }
  for (const char* w :
       {"the",      "a",          "an",    "and",     "of",        "to",        "in",       "is",
        "it",       "was",        "he",    "she",     "they",      "we",        "you",      "hello",
        "world",    "quick",      "brown", "fox",     "jump",      "##s",       "over",     "lazy",
        "dog",      "un",         "##aff", "##able",  "play",      "##ing",     "##ed",     "##ly",
        "run",      "##ning",     "##n",   "token",   "##izer",    "##ization", "distill",  "##ation",
        "know",     "##ledge",    "model", "student", "teacher",   "don",       "stop",     "believ",
        "cafe",     "au",         "lait",  "naive",   "creme",     "brulee",    "istanbul", "yes",
        "dit",      "il",         "que",   "bonjour", "##onjour",  "width",     "zero",     "soft",
        "hyphen",   "tab",        "here",  "ctrl",    "del",       "nul",       "byte",     "non",
        "breaking", "line",       "para",  "short",   "combining", "alone",     "private",  "use",
        "char",     "##assigned", "3",     "##14",    "2024",      "mask",      "sep"}) {
    tokens.push_back(w);
  }
  // Accented tokens: only a vocab that keeps accents (cased) reaches them, but both have them.
  for (const char* w : {"café", "é", "##é", "ï", "##ï", "naïve", "crème", "##è", "ü", "##ü", "über", "ñ",
                        "##ñ", "ç", "##û", "brûlée", "qué", "##\xCC\x81" /* ##U+0301 */}) {
    tokens.push_back(w);
  }
  // Greek: the final sigma (ς) and the medial one (σ) are different tokens.
  for (const char* w : {"οδος", "οδοσ", "σ", "ς", "σα", "ο", "##δ", "##ο", "##ς", "##σ", "##α"})
    tokens.push_back(w);
  // CJK ideographs are words of their own; kana are not CJK ideographs.
  for (const char* w :
       {"中", "国", "人", "我", "爱", "日", "本", "語", "世", "界", "こ", "##ん", "##に", "##ち", "##は"}) {
    tokens.push_back(w);
  }
  tokens.push_back("the");  // listed twice: the later id wins, as in BERT's load_vocab
  if (cased) {
    for (char c = 'A'; c <= 'Z'; ++c) {
      tokens.push_back(std::string(1, c));
      tokens.push_back("##" + std::string(1, c));
    }
    for (const char* w : {"The", "Hello", "HE", "##LL", "##O", "World", "Café", "Paris", "É", "İ", "ΟΔΟΣ",
                          "Ο", "##Δ", "##Ο", "##Σ", "Σ", "Bonjour", "Qué", "Über"}) {
      tokens.push_back(w);
    }
  }
  return tokens;
}

std::string vocab_file_text(const std::vector<std::string>& tokens) {
  std::string out;
  for (const auto& t : tokens) out += t + "\n";
  return out;
}

// Texts for every rule of BERT's BasicTokenizer and WordpieceTokenizer.
std::vector<std::string> wordpiece_texts() {
  std::string long_text;
  for (int i = 0; i < 20; ++i) long_text += "the quick brown fox jumps over the lazy dog ";
  return {
      "Hello, world!",
      "The quick brown fox jumps over the lazy dog.",
      "Café au lait, naïve crème brûlée",                      // precomposed accents
      "Cafe\xCC\x81 and e\xCC\x81 combining, \xCC\x81 alone",  // decomposed: e + U+0301
      "HELLO World hello WORLD Über Paris",
      "unaffable playing running jumped",
      "我爱中国人 and 日本語",                // CJK ideographs split one by one
      "こんにちは世界",                       // kana stay one word, the ideographs split
      "«Bonjour» — dit-il… ¿Qué? ‘yes’、。",  // Unicode punctuation (P* categories)
      "don't stop-believing (yes)...[MASK] [SEP] $3.14 in 2024",
      std::string("tab\there\x01"
                  "ctrl\x7f"
                  "del zero\xE2\x80\x8Bwidth soft\xC2\xADhyphen"),  // Cc and Cf dropped
      std::string("nul\0byte and \xEF\xBF\xBD replacement", 28),    // NUL, U+FFFD (28 bytes)
      "non\xC2\xA0"
      "breaking\xE3\x80\x80ideographic\xE2\x80\xA8line\xE2\x80\xA9para",  // NBSP, U+3000, U+2028/9
      "private \xEE\x80\x80use un\xCD\xB8"
      "assigned char",                                            // U+E000 (Co), U+0378 (Cn)
      std::string(150, 'a') + " short " + std::string(100, 'b'),  // > 100 characters is [UNK]; 100 is not
      "xyzzy \xF0\x9F\x99\x82 жук naïveté",                       // unknown characters make the word [UNK]
      "ΟΔΟΣ Σ ΣΑ οδοσ",                                           // Greek final sigma in lower()
      "İstanbul İ",                                               // U+0130: lower() gives i + U+0307
      "",
      "   \n\t  ",
      long_text,
  };
}

struct Reference {
  std::vector<std::vector<int64_t>> ids;
  std::vector<std::vector<std::string>> pieces;
};

// tests/fixtures/wordpiece_reference.py on `texts`.
Reference python_wordpiece(const fs::path& vocab, bool lowercase, bool strip_accents, int64_t max_length,
                           const std::vector<std::string>& texts, const TempDir& dir) {
  const fs::path texts_file = dir / "texts.json";
  write_text(texts_file, nlohmann::json(texts).dump());
  const std::string script = std::string(KD_SOURCE_DIR) + "/tests/fixtures/wordpiece_reference.py";
  auto flag = [](bool b) { return b ? "'true'" : "'false'"; };
  const auto result =
      run_python("import runpy, sys\nsys.argv = ['wordpiece_reference.py', '" + vocab.string() + "', " +
                 flag(lowercase) + ", " + flag(strip_accents) + ", '" + std::to_string(max_length) + "', '" +
                 texts_file.string() + "']\nrunpy.run_path('" + script + "', run_name='__main__')\n");
  if (result.status != 0) ADD_FAILURE() << "wordpiece_reference.py failed: " << result.output;
  Reference reference;
  if (result.status != 0) return reference;
  const auto j = nlohmann::json::parse(result.output);
  reference.ids = j.at("ids").get<std::vector<std::vector<int64_t>>>();
  reference.pieces = j.at("pieces").get<std::vector<std::vector<std::string>>>();
  return reference;
}

class WordPiece : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists("/usr/bin/python3")) KD_PEER_MISSING("/usr/bin/python3 is missing");
    write_text(dir_ / "uncased.txt", vocab_file_text(test_vocab(false)));
    write_text(dir_ / "cased.txt", vocab_file_text(test_vocab(true)));
  }

  // Every text's ids and pieces from the C++ tokenizer equal the Python reference's.
  void expect_reference(const std::string& vocab, const text::WordPieceOptions& options, bool lowercase,
                        bool strip_accents, int64_t max_length) {
    const auto tokenizer = text::load_wordpiece((dir_ / vocab).string(), options);
    const auto texts = wordpiece_texts();
    const Reference reference =
        python_wordpiece(dir_ / vocab, lowercase, strip_accents, max_length, texts, dir_);
    ASSERT_EQ(reference.ids.size(), texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      EXPECT_EQ(tokenizer->encode(texts[i], max_length), reference.ids[i])
          << "text " << i << ": " << texts[i];
      EXPECT_EQ(tokenizer->pieces(texts[i]), reference.pieces[i]) << "text " << i << ": " << texts[i];
    }
  }

  TempDir dir_;
};

TEST_F(WordPiece, UncasedIdsEqualPythonReference) {
  // "auto" on a vocab without upper-case letters: lower-case and strip accents.
  expect_reference("uncased.txt", text::WordPieceOptions(), true, true, 512);
}

TEST_F(WordPiece, CasedIdsEqualPythonReference) {
  expect_reference("cased.txt", text::WordPieceOptions(), false, false, 512);
}

TEST_F(WordPiece, LowercaseWithoutStrippingEqualsPythonReference) {
  expect_reference("cased.txt", text::WordPieceOptions().lowercase("true").strip_accents("false"), true,
                   false, 512);
}

TEST_F(WordPiece, TruncatedIdsEqualPythonReference) {
  expect_reference("uncased.txt", text::WordPieceOptions(), true, true, 12);
  expect_reference("cased.txt", text::WordPieceOptions(), false, false, 2);
}

TEST_F(WordPiece, HandCheckedPiecesAndIds) {
  const auto tokens = test_vocab(false);
  auto id = [&](const std::string& token) {
    // The last line holding the token (BERT's load_vocab keeps the last).
    return static_cast<int64_t>(std::find(tokens.rbegin(), tokens.rend(), token).base() - tokens.begin() - 1);
  };
  const auto tokenizer = text::load_wordpiece((dir_ / "uncased.txt").string());
  EXPECT_EQ(tokenizer->pieces("Unaffable CAFÉ!"),
            (std::vector<std::string>{"un", "##aff", "##able", "cafe", "!"}));
  EXPECT_EQ(tokenizer->encode("Unaffable CAFÉ!", 512),
            (std::vector<int64_t>{id("[CLS]"), id("un"), id("##aff"), id("##able"), id("cafe"), id("!"),
                                  id("[SEP]")}));
  EXPECT_EQ(id("[CLS]"), 4);
  EXPECT_EQ(id("[SEP]"), 5);
  EXPECT_EQ(tokenizer->pad_id(), 0);
  EXPECT_EQ(tokenizer->vocab_size(), static_cast<int64_t>(tokens.size()));
  // "the" is listed twice; the later line's id is the one used.
  EXPECT_EQ(tokenizer->encode("the", 8),
            (std::vector<int64_t>{4, static_cast<int64_t>(tokens.size()) - 1, 5}));
  EXPECT_EQ(tokenizer->pieces("中国人"), (std::vector<std::string>{"中", "国", "人"}));
  EXPECT_EQ(tokenizer->pieces("ΟΔΟΣ"), (std::vector<std::string>{"οδος"}));  // final sigma
  EXPECT_EQ(tokenizer->pieces("xyz\xF0\x9F\x99\x82"), (std::vector<std::string>{"[UNK]"}));
  EXPECT_EQ(tokenizer->pieces(std::string(101, 'a')), (std::vector<std::string>{"[UNK]"}));
  EXPECT_EQ(tokenizer->pieces(std::string(100, 'a')).size(), 100u);  // a + 99 x ##a
  EXPECT_EQ(tokenizer->encode("", 8), (std::vector<int64_t>{4, 5}));
  // Invalid UTF-8 decodes to U+FFFD, which cleaning drops, as BERT drops it.
  EXPECT_EQ(tokenizer->pieces("he\xFFllo \xC3"), (std::vector<std::string>{"hello"}));
}

TEST_F(WordPiece, LowercaseAutoFollowsTheVocab) {
  EXPECT_TRUE(text::vocab_is_uncased(test_vocab(false)));  // [CLS] and the other bracketed tokens aside
  EXPECT_FALSE(text::vocab_is_uncased(test_vocab(true)));
  auto uncased = std::dynamic_pointer_cast<const text::WordPieceTokenizer>(
      text::load_wordpiece((dir_ / "uncased.txt").string()));
  auto cased = std::dynamic_pointer_cast<const text::WordPieceTokenizer>(
      text::load_wordpiece((dir_ / "cased.txt").string()));
  ASSERT_TRUE(uncased && cased);
  EXPECT_TRUE(uncased->lowercase() && uncased->strip_accents());
  EXPECT_FALSE(cased->lowercase() || cased->strip_accents());
  EXPECT_EQ(cased->pieces("Café"), (std::vector<std::string>{"Café"}));
  EXPECT_EQ(uncased->pieces("Café"), (std::vector<std::string>{"cafe"}));
  auto forced =
      text::load_wordpiece((dir_ / "cased.txt").string(), text::WordPieceOptions().lowercase("true"));
  EXPECT_EQ(forced->pieces("Café"), (std::vector<std::string>{"cafe"}));  // strip_accents follows lowercase
}

TEST_F(WordPiece, RefusesBadVocabs) {
  auto tokens = test_vocab(false);
  tokens.erase(std::find(tokens.begin(), tokens.end(), "[SEP]"));
  write_text(dir_ / "vocab.txt", vocab_file_text(tokens));
  const std::string vocab = (dir_ / "vocab.txt").string();
  KD_EXPECT_ERROR(text::load_wordpiece(vocab),
                  vocab + ": no [SEP] token; a BERT vocab has [PAD], [UNK], [CLS], [SEP]");
  write_text(dir_ / "empty.txt", "");
  KD_EXPECT_ERROR(text::load_wordpiece((dir_ / "empty.txt").string()), "empty.txt: the file is empty");
  KD_EXPECT_ERROR(text::load_wordpiece((dir_ / "missing.txt").string()), "missing.txt: file does not exist");
  KD_EXPECT_ERROR(
      text::load_wordpiece((dir_ / "cased.txt").string(), text::WordPieceOptions().lowercase("yes")),
      "cased.txt: lowercase \"yes\" is not auto, true or false");
  const auto tokenizer = text::load_wordpiece((dir_ / "cased.txt").string());
  KD_EXPECT_ERROR(tokenizer->encode("hello", 1), "max_length 1 leaves no room for [CLS] and [SEP]");
}

TEST_F(WordPiece, JsonRoundTripKeepsIds) {
  const auto tokenizer =
      text::load_wordpiece((dir_ / "cased.txt").string(), text::WordPieceOptions().lowercase("true"));
  const auto json = tokenizer->to_json();
  EXPECT_EQ(json["kind"], "wordpiece");
  EXPECT_EQ(json["vocab"].size(), test_vocab(true).size());
  // Through text, as a model file stores it.
  const auto rebuilt = text::tokenizer_from_json(nlohmann::json::parse(json.dump()));
  EXPECT_EQ(rebuilt->kind(), "wordpiece");
  EXPECT_EQ(rebuilt->vocab_size(), tokenizer->vocab_size());
  EXPECT_EQ(rebuilt->pad_id(), tokenizer->pad_id());
  for (const auto& t : wordpiece_texts()) EXPECT_EQ(rebuilt->encode(t, 64), tokenizer->encode(t, 64)) << t;
}

// ------------------------------------------------------------------------------------------ SentencePiece

// A few hundred sentences: subjects, verbs and objects in turn, numbers, accents and CJK.
std::vector<std::string> training_sentences() {
  const std::vector<std::string> subjects = {"the student",       "a teacher",   "my model",
                                             "the small network", "every layer", "le café",
                                             "the naïve baseline"};
  const std::vector<std::string> verbs = {"learns",     "distills", "predicts",
                                          "compresses", "imitates", "reads"};
  const std::vector<std::string> objects = {
      "the soft labels",        "logits at temperature four", "its own errors", "a larger model",
      "the tokenizer's pieces", "données étiquetées",         "中国人的模型",   "many images quickly"};
  std::vector<std::string> out;
  for (size_t i = 0; i < 336; ++i) {
    out.push_back(subjects[i % subjects.size()] + " " + verbs[(i / 7) % verbs.size()] + " " +
                  objects[(i / 42) % objects.size()] + " in epoch " + std::to_string(i % 50) + ".");
  }
  return out;
}

std::vector<std::string> sentencepiece_texts() {
  return {"the student learns the soft labels in epoch 3.",
          "A Teacher distills logits!",
          "le café naïve données",
          "中国人的模型 reads many images",
          "unseen words: zygote quixotic ж 🙂",
          "",
          "   spaces   between   words   ",
          "the small network compresses a larger model in epoch 49. " + std::string(40, 'x')};
}

struct SpmReference {
  std::vector<std::vector<int64_t>> ids;
  std::vector<std::vector<std::string>> pieces;
  int64_t pad_id = 0;
  int64_t piece_count = 0;
};

// Python's sentencepiece on `texts` with the model file.
SpmReference python_sentencepiece(const fs::path& model, const std::vector<std::string>& texts,
                                  const TempDir& dir) {
  write_text(dir / "texts.json", nlohmann::json(texts).dump());
  const auto result = run_python(
      "import json, sentencepiece as spm\n"
      "sp = spm.SentencePieceProcessor(model_file='" +
      model.string() +
      "')\n"
      "texts = json.load(open('" +
      (dir / "texts.json").string() +
      "', encoding='utf-8'))\n"
      "print(json.dumps({'ids': [sp.encode(t) for t in texts], 'pieces': [sp.encode(t, out_type=str) for t "
      "in texts],\n"
      "                  'pad_id': sp.pad_id(), 'piece_count': sp.get_piece_size()}))\n");
  SpmReference reference;
  if (result.status != 0) {
    ADD_FAILURE() << "python sentencepiece failed: " << result.output;
    return reference;
  }
  const auto j = nlohmann::json::parse(result.output);
  reference.ids = j.at("ids").get<std::vector<std::vector<int64_t>>>();
  reference.pieces = j.at("pieces").get<std::vector<std::vector<std::string>>>();
  reference.pad_id = j.at("pad_id").get<int64_t>();
  reference.piece_count = j.at("piece_count").get<int64_t>();
  return reference;
}

class SentencePiece : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!python_has("sentencepiece"))
      KD_PEER_MISSING("/usr/bin/python3 cannot import sentencepiece (python3-sentencepiece)");
  }
  TempDir dir_;
};

TEST_F(SentencePiece, IdsEqualPythonSentencepiece) {
  for (const std::string type : {"unigram", "bpe"}) {
    const auto tokenizer = text::train_sentencepiece(
        training_sentences(), text::SentencePieceTrainOptions().vocab_size(80).model_type(type).seed(3));
    const auto& model = dynamic_cast<const text::SentencePieceTokenizer&>(*tokenizer).model_proto();
    write_text(dir_ / "spm.model", model);
    const auto texts = sentencepiece_texts();
    const SpmReference reference = python_sentencepiece(dir_ / "spm.model", texts, dir_);
    ASSERT_EQ(reference.ids.size(), texts.size()) << type;
    EXPECT_EQ(reference.pad_id, 0) << type;  // trained with pad 0, unk 1
    EXPECT_EQ(tokenizer->pad_id(), 0) << type;
    EXPECT_EQ(tokenizer->vocab_size(), reference.piece_count) << type;
    EXPECT_EQ(tokenizer->vocab_size(), 80) << type;
    for (size_t i = 0; i < texts.size(); ++i) {
      EXPECT_EQ(tokenizer->encode(texts[i], 1000), reference.ids[i])
          << type << " text " << i << ": " << texts[i];
      EXPECT_EQ(tokenizer->pieces(texts[i]), reference.pieces[i]) << type << " text " << i;
      // Truncation keeps the first ids: SentencePiece adds no special tokens.
      const auto& full = reference.ids[i];
      const std::vector<int64_t> first(full.begin(), full.begin() + std::min<std::ptrdiff_t>(5, full.size()));
      EXPECT_EQ(tokenizer->encode(texts[i], 5), first) << type << " text " << i;
    }
    // The same model loaded from its file.
    const auto loaded = text::load_sentencepiece((dir_ / "spm.model").string());
    EXPECT_EQ(loaded->encode(texts[0], 100), reference.ids[0]) << type;
  }
}

TEST_F(SentencePiece, SameTextsAndSeedTrainTheSameModel) {
  const auto options = text::SentencePieceTrainOptions().vocab_size(120).seed(11);
  auto model_of = [](const TokenizerPtr& t) {
    return dynamic_cast<const text::SentencePieceTokenizer&>(*t).model_proto();
  };
  const auto first = text::train_sentencepiece(training_sentences(), options);
  const auto second = text::train_sentencepiece(training_sentences(), options);
  EXPECT_EQ(model_of(first), model_of(second));
  EXPECT_GT(model_of(first).size(), 1000u);
  // Fewer texts give a different model, as a check that the comparison can fail.
  auto fewer = training_sentences();
  fewer.resize(100);
  EXPECT_NE(model_of(text::train_sentencepiece(fewer, options)), model_of(first));
}

TEST_F(SentencePiece, VocabSizeIsAnUpperBound) {
  // 336 short sentences cannot fill 8000 pieces: training gives fewer instead of failing.
  const auto tokenizer =
      text::train_sentencepiece(training_sentences(), text::SentencePieceTrainOptions().vocab_size(8000));
  EXPECT_GT(tokenizer->vocab_size(), 80);
  EXPECT_LT(tokenizer->vocab_size(), 8000);
}

TEST_F(SentencePiece, JsonRoundTripKeepsIds) {
  const auto tokenizer =
      text::train_sentencepiece(training_sentences(), text::SentencePieceTrainOptions().vocab_size(150));
  const auto json = tokenizer->to_json();
  EXPECT_EQ(json["kind"], "sentencepiece");
  const auto rebuilt = text::tokenizer_from_json(nlohmann::json::parse(json.dump()));
  EXPECT_EQ(rebuilt->kind(), "sentencepiece");
  EXPECT_EQ(rebuilt->vocab_size(), tokenizer->vocab_size());
  EXPECT_EQ(rebuilt->pad_id(), tokenizer->pad_id());
  EXPECT_EQ(dynamic_cast<const text::SentencePieceTokenizer&>(*rebuilt).model_proto(),
            dynamic_cast<const text::SentencePieceTokenizer&>(*tokenizer).model_proto());
  for (const auto& t : sentencepiece_texts())
    EXPECT_EQ(rebuilt->encode(t, 64), tokenizer->encode(t, 64)) << t;
}

TEST_F(SentencePiece, ModelWithoutPadPadsOnePastItsPieces) {
  // Python's trainer with its defaults: <unk> 0, <s> 1, </s> 2 and no pad piece.
  write_text(dir_ / "corpus.txt", join(training_sentences(), "\n") + "\n");
  const auto trained = run_python(
      "import sentencepiece as spm\n"
      "spm.SentencePieceTrainer.train(input='" +
      (dir_ / "corpus.txt").string() + "', model_prefix='" + (dir_ / "plain").string() +
      "', vocab_size=100, model_type='bpe', num_threads=1, minloglevel=2)\n");
  ASSERT_EQ(trained.status, 0) << trained.output;
  const auto texts = sentencepiece_texts();
  const SpmReference reference = python_sentencepiece(dir_ / "plain.model", texts, dir_);
  ASSERT_EQ(reference.pad_id, -1);
  ASSERT_EQ(reference.piece_count, 100);
  const auto tokenizer = text::load_sentencepiece((dir_ / "plain.model").string());
  EXPECT_EQ(tokenizer->pad_id(), 100);
  EXPECT_EQ(tokenizer->vocab_size(), 101);
  for (size_t i = 0; i < texts.size(); ++i)
    EXPECT_EQ(tokenizer->encode(texts[i], 1000), reference.ids[i]) << texts[i];
  const auto batch = text::encode_batch(*tokenizer, {"the student"}, 40);
  EXPECT_EQ(batch[0][39].item<float>(), 100.0f);
}

TEST_F(SentencePiece, RefusesBadModelFiles) {
  write_text(dir_ / "bad.model", "this is not a protobuf model\n");
  const std::string bad = (dir_ / "bad.model").string();
  KD_EXPECT_ERROR(text::load_sentencepiece(bad), bad + ": not a SentencePiece model (libsentencepiece: ");
  KD_EXPECT_ERROR(text::load_sentencepiece((dir_ / "missing.model").string()),
                  "missing.model: file does not exist");
  KD_EXPECT_ERROR(text::train_sentencepiece({}), "train_sentencepiece: no texts to train on");
  KD_EXPECT_ERROR(
      text::train_sentencepiece({"a b"}, text::SentencePieceTrainOptions().model_type("wordpiece")),
      "train_sentencepiece: model_type \"wordpiece\" is not unigram, bpe, char or word");
}

// ---------------------------------------------------------------------------------- JSON and batches

TEST(TokenizerJson, RefusesBadJsonNamingTheKey) {
  KD_EXPECT_ERROR(text::tokenizer_from_json(nlohmann::json::array()),
                  "tokenizer json: [] is not an object with a \"kind\"");
  KD_EXPECT_ERROR(text::tokenizer_from_json({{"vocab", {"a"}}}), "tokenizer json: no key \"kind\"");
  KD_EXPECT_ERROR(text::tokenizer_from_json({{"kind", "bpe"}}),
                  "tokenizer json: key \"kind\": \"bpe\" is not a tokenizer, expected \"wordpiece\" or "
                  "\"sentencepiece\"");
  KD_EXPECT_ERROR(text::tokenizer_from_json({{"kind", "wordpiece"}}), "tokenizer json: no key \"vocab\"");
  const nlohmann::json no_sep = {{"kind", "wordpiece"},
                                 {"vocab", {"[PAD]", "[UNK]", "[CLS]"}},
                                 {"lowercase", true},
                                 {"strip_accents", true},
                                 {"max_word_chars", 100}};
  KD_EXPECT_ERROR(text::tokenizer_from_json(no_sep), "tokenizer json: no [SEP] token");
  auto bad_flag = no_sep;
  bad_flag["lowercase"] = "yes";
  KD_EXPECT_ERROR(text::tokenizer_from_json(bad_flag),
                  "tokenizer json: key \"lowercase\": \"yes\" is not true or false");
  KD_EXPECT_ERROR(text::tokenizer_from_json({{"kind", "sentencepiece"}, {"model", "not base64!"}}),
                  "tokenizer json: key \"model\": not base64");
  // Valid base64 ("hello") that is not a model.
  KD_EXPECT_ERROR(text::tokenizer_from_json({{"kind", "sentencepiece"}, {"model", "aGVsbG8="}}),
                  "tokenizer json key \"model\": not a SentencePiece model");
}

TEST(EncodeBatch, WordPiecePadsAndKeepsSepWhenTruncating) {
  TempDir dir;
  write_text(dir / "vocab.txt", vocab_file_text(test_vocab(false)));
  const auto tokenizer = text::load_wordpiece((dir / "vocab.txt").string());
  const auto tokens = test_vocab(false);
  auto id = [&](const std::string& token) {
    return static_cast<float>(std::find(tokens.begin(), tokens.end(), token) - tokens.begin());
  };
  const auto batch = text::encode_batch(*tokenizer, {"hello world", "", "the quick brown fox jumps over"}, 5);
  ASSERT_EQ(batch.sizes(), (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(batch.dtype(), torch::kFloat32);
  const float cls = 4, sep = 5, pad = 0;
  const auto expected = torch::tensor({cls, id("hello"), id("world"), sep, pad,  //
                                       cls, sep, pad, pad, pad,                  //
                                       cls, static_cast<float>(tokens.size() - 1) /* "the", its last line */,
                                       id("quick"), id("brown"), sep})
                            .view({3, 5});
  EXPECT_TRUE(torch::equal(batch, expected)) << batch;
  KD_EXPECT_ERROR(text::encode_batch(*tokenizer, {"a"}, 0), "encode_batch: max_length 0 is below 1");
  EXPECT_EQ(text::encode_batch(*tokenizer, {}, 7).sizes(), (std::vector<int64_t>{0, 7}));
}

TEST(EncodeBatch, SentencePieceRowsAreTheIdsThenPad) {
  const auto tokenizer =
      text::train_sentencepiece(training_sentences(), text::SentencePieceTrainOptions().vocab_size(150));
  const std::vector<std::string> texts = {"the student learns",
                                          "a teacher distills the soft labels in epoch 12."};
  const auto batch = text::encode_batch(*tokenizer, texts, 12);
  ASSERT_EQ(batch.sizes(), (std::vector<int64_t>{2, 12}));
  for (int64_t row = 0; row < 2; ++row) {
    const auto ids = tokenizer->encode(texts[static_cast<size_t>(row)], 12);
    ASSERT_FALSE(ids.empty());
    for (int64_t col = 0; col < 12; ++col) {
      const float want = col < static_cast<int64_t>(ids.size())
                             ? static_cast<float>(ids[static_cast<size_t>(col)])
                             : static_cast<float>(tokenizer->pad_id());
      EXPECT_EQ(batch[row][col].item<float>(), want) << row << "," << col;
    }
  }
  EXPECT_LT(tokenizer->encode(texts[0], 12).size(), 12u);  // the first row is padded
  EXPECT_EQ(tokenizer->encode(texts[1], 12).size(), 12u);  // the second is truncated
}

}  // namespace
}  // namespace kd::test
