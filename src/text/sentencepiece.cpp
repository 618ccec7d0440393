#include "kd/text/sentencepiece.h"

#include <dlfcn.h>

#include <algorithm>
#include <filesystem>

#include "base64.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "kd/util/strings.h"
#include "sentencepiece_module.h"

namespace kd::text {

namespace {

// libsentencepiece is loaded, not linked: Debian's build carries protobuf 3.14 and exports its symbols,
// and in a program that also has libtorch's protobuf 3.21 whichever comes first in the link serves both,
// so the program aborts at start-up on protobuf's version check. RTLD_DEEPBIND makes the module and the
// libraries it loads look up symbols in themselves first; RTLD_LOCAL keeps them away from the others.
const KdSpmApi* open_module() {
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer aborts the process on RTLD_DEEPBIND (google/sanitizers#611), and without it the module
  // crashes on the protobuf clash.
  fail("SentencePiece is not available in a KD_SANITIZE build: AddressSanitizer refuses RTLD_DEEPBIND");
#endif
  // The build tree's module, then the installed one: kdistill/ beside libkdistill.so, wherever it is.
  std::string installed = KD_SENTENCEPIECE_MODULE_NAME;
  Dl_info self{};
  if (dladdr(reinterpret_cast<void*>(&open_module), &self) != 0 && self.dli_fname != nullptr) {
    installed = (std::filesystem::path(self.dli_fname).parent_path() / "kdistill" / installed).string();
  }
  std::string tried;
  for (const std::string& path : {std::string(KD_SENTENCEPIECE_MODULE_BUILT), installed}) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
      tried += tried.empty() ? path : " or " + path;
      continue;
    }
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr) fail("{}: cannot load the SentencePiece module: {}", path, dlerror());
    auto api = reinterpret_cast<const KdSpmApi* (*)()>(dlsym(handle, "kd_sentencepiece_api"));
    if (api == nullptr) fail("{}: not kdistill's SentencePiece module (no kd_sentencepiece_api)", path);
    if (api()->version != kKdSpmApiVersion) {
      fail("{}: SentencePiece module version {}, expected {}: rebuild kdistill", path, api()->version,
           kKdSpmApiVersion);
    }
    return api();
  }
  fail(
      "SentencePiece needs kdistill's module kd_sentencepiece, found at neither {}: build the "
      "kd_sentencepiece "
      "target or install kdistill",
      tried);
}

const KdSpmApi& module_api() {
  static const KdSpmApi* api = open_module();  // a failed open throws and is tried again next time
  return *api;
}

// What a module call hands back through its callbacks.
struct Results {
  std::string error;
  std::vector<std::string> bytes;
  std::vector<int> ids;
  KdSpmOut out{this, &on_bytes, &on_ids, &on_error};

  static void on_bytes(void* self, const char* data, size_t size) {
    static_cast<Results*>(self)->bytes.emplace_back(data, size);
  }
  static void on_ids(void* self, const int* ids, size_t count) {
    static_cast<Results*>(self)->ids.assign(ids, ids + count);
  }
  static void on_error(void* self, const char* message, size_t size) {
    static_cast<Results*>(self)->error.assign(message, size);
  }
};

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_proto, const std::string& where)
    : model_proto_(model_proto), where_(where) {
  const KdSpmApi& api = module_api();
  Results results;
  processor_ = api.load_proto(model_proto_.data(), model_proto_.size(), &results.out);
  if (processor_ == nullptr)
    fail("{}: not a SentencePiece model (libsentencepiece: {})", where_, results.error);
  const int pieces = api.piece_count(processor_);
  const int pad = api.pad_id(processor_);
  vocab_size_ = pad >= 0 ? pieces : pieces + 1;
  pad_id_ = pad >= 0 ? pad : pieces;
}

SentencePieceTokenizer::~SentencePieceTokenizer() {
  if (processor_ != nullptr) module_api().destroy(processor_);
}

std::vector<int64_t> SentencePieceTokenizer::encode(std::string_view text, int64_t max_length) const {
  if (max_length < 1) fail("sentencepiece encode: max_length {} is below 1", max_length);
  Results results;
  if (!module_api().encode_ids(processor_, text.data(), text.size(), &results.out)) {
    fail("{}: cannot encode {}: {}", where_, quote(text.substr(0, 40)), results.error);
  }
  const auto kept = std::min<size_t>(results.ids.size(), static_cast<size_t>(max_length));
  return std::vector<int64_t>(results.ids.begin(), results.ids.begin() + static_cast<std::ptrdiff_t>(kept));
}

std::vector<std::string> SentencePieceTokenizer::pieces(std::string_view text) const {
  Results results;
  if (!module_api().encode_pieces(processor_, text.data(), text.size(), &results.out)) {
    fail("{}: cannot encode {}: {}", where_, quote(text.substr(0, 40)), results.error);
  }
  return std::move(results.bytes);
}

nlohmann::json SentencePieceTokenizer::to_json() const {
  return {{"kind", kind()}, {"model", base64_encode(model_proto_)}};
}

TokenizerPtr load_sentencepiece(const std::string& path) {
  return std::make_shared<SentencePieceTokenizer>(read_file(path), path);
}

TokenizerPtr train_sentencepiece(const std::vector<std::string>& texts,
                                 const SentencePieceTrainOptions& options) {
  if (texts.empty()) fail("train_sentencepiece: no texts to train on");
  if (options.vocab_size() < 2 || options.vocab_size() > (int64_t{1} << 24)) {
    fail("train_sentencepiece: vocab_size {} is out of range, expected 2 to 2^24", options.vocab_size());
  }
  const std::vector<std::string> types = {"unigram", "bpe", "char", "word"};
  if (std::find(types.begin(), types.end(), options.model_type()) == types.end()) {
    fail("train_sentencepiece: model_type {} is not unigram, bpe, char or word", quote(options.model_type()));
  }
  // pad 0 and unk 1, no <s> or </s>: encode adds none, and padding is a real piece. One thread, so
  // that the seed alone decides the model. hard_vocab_limit=false: a small corpus gives fewer pieces.
  const std::vector<std::pair<std::string, std::string>> flags = {
      {"vocab_size", std::to_string(options.vocab_size())},
      {"model_type", options.model_type()},
      {"pad_id", "0"},
      {"unk_id", "1"},
      {"bos_id", "-1"},
      {"eos_id", "-1"},
      {"hard_vocab_limit", "false"},
      {"num_threads", "1"},
      {"minloglevel", "2"},
  };
  std::vector<const char*> keys, values, text_data;
  std::vector<size_t> text_sizes;
  for (const auto& [key, value] : flags) {
    keys.push_back(key.c_str());
    values.push_back(value.c_str());
  }
  for (const auto& text : texts) {
    text_data.push_back(text.data());
    text_sizes.push_back(text.size());
  }
  // libsentencepiece reserves the seed 2^32 - 1 (it means "from std::random_device").
  const auto seed = static_cast<unsigned>(options.seed() % 0xFFFFFFFFull);
  Results results;
  if (!module_api().train(text_data.data(), text_sizes.data(), text_data.size(), keys.data(), values.data(),
                          keys.size(), seed, &results.out)) {
    fail("train_sentencepiece: libsentencepiece failed on {} texts: {}", texts.size(), results.error);
  }
  KD_CHECK(results.bytes.size() == 1, "training gave {} models", results.bytes.size());
  return std::make_shared<SentencePieceTokenizer>(results.bytes.front(), "trained SentencePiece model");
}

}  // namespace kd::text
