// SentencePiece tokenizers (Kudo & Richardson 2018) through Debian's libsentencepiece: a .model file, or
// a model trained here on texts. encode() adds no special tokens (a model's Encode adds none) and keeps
// the first max_length ids.
//
// The pad id: the model's pad piece when it has one (trained here: id 0, with <unk> 1 and no <s>/</s>);
// otherwise one past its pieces, so vocab_size() = pieces + 1.
//
// libsentencepiece lives in a module of its own, kd_sentencepiece (built with kd; installed under
// <libdir>/kdistill), that kd loads on the first use: Debian's library carries a protobuf of its own
// which clashes with libtorch's when both are linked into one program.
//
//   TokenizerPtr t = train_sentencepiece(texts, SentencePieceTrainOptions().vocab_size(8000).seed(1));
//   t->pieces("Hello world")   // {"▁Hello", "▁world"}
//   TokenizerPtr m = load_sentencepiece("spm.model");
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kd/text/tokenizer.h"

namespace kd::text {

struct SentencePieceTrainOptions {
  // The pieces to learn, an upper bound: a few texts give fewer (hard_vocab_limit=false).
  TORCH_ARG(int64_t, vocab_size) = 8000;
  TORCH_ARG(std::string, model_type) = "unigram";  // unigram | bpe | char | word
  TORCH_ARG(uint64_t, seed) = 0;                   // the same texts and seed give the same model
};

// The tokenizer of a SentencePiece model's serialized ModelProto (a .model file's bytes); `where` names
// it in errors. kd::Error when libsentencepiece refuses it.
class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& model_proto, const std::string& where);
  ~SentencePieceTokenizer() override;
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  std::vector<int64_t> encode(std::string_view text, int64_t max_length) const override;
  std::vector<std::string> pieces(std::string_view text) const override;
  int64_t vocab_size() const override { return vocab_size_; }
  int64_t pad_id() const override { return pad_id_; }
  std::string kind() const override { return "sentencepiece"; }
  // {"kind": "sentencepiece", "model": the serialized ModelProto in base64}
  nlohmann::json to_json() const override;

  // The serialized ModelProto: the bytes of a .model file.
  const std::string& model_proto() const { return model_proto_; }

 private:
  void* processor_ = nullptr;  // a sentencepiece::SentencePieceProcessor inside kd_sentencepiece
  std::string model_proto_;
  std::string where_;
  int64_t vocab_size_ = 0;
  int64_t pad_id_ = 0;
};

// The tokenizer of a .model file. kd::Error naming the file when it is missing or not a model.
TokenizerPtr load_sentencepiece(const std::string& path);

// A model trained on `texts` (one sentence each) in memory, on one thread with a fixed seed, so the same
// texts and options give the same model. kd::Error when there are no texts or training fails.
TokenizerPtr train_sentencepiece(const std::vector<std::string>& texts,
                                 const SentencePieceTrainOptions& options = SentencePieceTrainOptions());

}  // namespace kd::text
