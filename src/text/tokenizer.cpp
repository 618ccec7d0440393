#include "kd/text/tokenizer.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "base64.h"
#include "kd/text/sentencepiece.h"
#include "kd/text/wordpiece.h"
#include "kd/util/error.h"
#include "kd/util/strings.h"

namespace kd::text {

namespace {

constexpr const char* kWhere = "tokenizer json";

const nlohmann::json& member(const nlohmann::json& j, const char* key,
                             bool (nlohmann::json::*is_type)() const noexcept, const char* expected) {
  auto it = j.find(key);
  if (it == j.end()) fail("{}: no key \"{}\", expected {}", kWhere, key, expected);
  if (!((*it).*is_type)())
    fail("{}: key \"{}\": {} is not {}", kWhere, key, it->dump().substr(0, 40), expected);
  return *it;
}

TokenizerPtr wordpiece_from_json(const nlohmann::json& j) {
  std::vector<std::string> tokens;
  for (const auto& token : member(j, "vocab", &nlohmann::json::is_array, "a list of tokens")) {
    if (!token.is_string())
      fail("{}: key \"vocab\": {} is not a string token", kWhere, token.dump().substr(0, 40));
    tokens.push_back(token.get<std::string>());
  }
  const bool lowercase = member(j, "lowercase", &nlohmann::json::is_boolean, "true or false").get<bool>();
  const bool strip_accents =
      member(j, "strip_accents", &nlohmann::json::is_boolean, "true or false").get<bool>();
  const auto max_word_chars =
      member(j, "max_word_chars", &nlohmann::json::is_number_integer, "an integer").get<int64_t>();
  return std::make_shared<WordPieceTokenizer>(std::move(tokens), lowercase, strip_accents, max_word_chars,
                                              kWhere);
}

TokenizerPtr sentencepiece_from_json(const nlohmann::json& j) {
  const auto& model = member(j, "model", &nlohmann::json::is_string, "a base64 SentencePiece model");
  auto bytes = base64_decode(model.get_ref<const std::string&>());
  if (!bytes) fail("{}: key \"model\": not base64, expected a base64 SentencePiece model", kWhere);
  return std::make_shared<SentencePieceTokenizer>(*bytes, std::string(kWhere) + " key \"model\"");
}

}  // namespace

TokenizerPtr tokenizer_from_json(const nlohmann::json& j) {
  if (!j.is_object()) fail("{}: {} is not an object with a \"kind\"", kWhere, j.dump().substr(0, 40));
  const auto& kind =
      member(j, "kind", &nlohmann::json::is_string, "\"wordpiece\" or \"sentencepiece\"").get<std::string>();
  if (kind == "wordpiece") return wordpiece_from_json(j);
  if (kind == "sentencepiece") return sentencepiece_from_json(j);
  fail("{}: key \"kind\": {} is not a tokenizer, expected \"wordpiece\" or \"sentencepiece\"", kWhere,
       quote(kind));
}

torch::Tensor encode_batch(const Tokenizer& tokenizer, const std::vector<std::string>& texts,
                           int64_t max_length) {
  if (max_length < 1) fail("encode_batch: max_length {} is below 1", max_length);
  // float32 holds every integer up to 2^24 exactly.
  if (tokenizer.vocab_size() > (int64_t{1} << 24)) {
    fail("encode_batch: {} ids do not fit float32 exactly, expected at most 2^24", tokenizer.vocab_size());
  }
  const auto rows = static_cast<int64_t>(texts.size());
  torch::Tensor batch =
      torch::full({rows, max_length}, static_cast<float>(tokenizer.pad_id()), torch::kFloat32);
  float* data = batch.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const std::vector<int64_t> ids = tokenizer.encode(texts[static_cast<size_t>(row)], max_length);
      KD_CHECK(static_cast<int64_t>(ids.size()) <= max_length, "{} ids for max_length {}", ids.size(),
               max_length);
      std::transform(ids.begin(), ids.end(), data + row * max_length,
                     [](int64_t id) { return static_cast<float>(id); });
    }
  });
  return batch;
}

}  // namespace kd::text
