// The kd_sentencepiece module: libsentencepiece behind the C interface of sentencepiece_module.h. Built
// as its own shared object (CMakeLists.txt) and never part of kd.
#include "sentencepiece_module.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <exception>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using sentencepiece::SentencePieceProcessor;
using sentencepiece::util::Status;

void report(const KdSpmOut* out, const std::string& message) {
  out->error(out->context, message.data(), message.size());
}

// Runs `body`, turning a failed Status or an exception into out->error.
template <typename Body>
int guarded(const KdSpmOut* out, Body body) {
  try {
    const Status status = body();
    if (status.ok()) return 1;
    report(out, status.ToString());
  } catch (const std::exception& e) {
    report(out, e.what());
  } catch (...) {
    report(out, "unknown exception in libsentencepiece");
  }
  return 0;
}

const SentencePieceProcessor& processor_of(const void* processor) {
  return *static_cast<const SentencePieceProcessor*>(processor);
}

template <typename Load>
void* load_with(const KdSpmOut* out, Load load) {
  auto* processor = new (std::nothrow) SentencePieceProcessor();
  if (processor == nullptr) {
    report(out, "out of memory");
    return nullptr;
  }
  if (guarded(out, [&] { return load(*processor); })) return processor;
  delete processor;
  return nullptr;
}

void* load_proto(const char* data, size_t size, const KdSpmOut* out) {
  return load_with(out, [&](SentencePieceProcessor& p) {
    return p.LoadFromSerializedProto(std::string_view(data, size));
  });
}

void* load_file(const char* path, const KdSpmOut* out) {
  return load_with(out, [&](SentencePieceProcessor& p) { return p.Load(path); });
}

void destroy(void* processor) { delete static_cast<SentencePieceProcessor*>(processor); }

int piece_count(const void* processor) { return processor_of(processor).GetPieceSize(); }

int pad_id(const void* processor) { return processor_of(processor).pad_id(); }

int serialize(const void* processor, const KdSpmOut* out) {
  return guarded(out, [&] {
    const std::string bytes = processor_of(processor).serialized_model_proto();
    out->bytes(out->context, bytes.data(), bytes.size());
    return Status();
  });
}

int encode_ids(const void* processor, const char* text, size_t size, const KdSpmOut* out) {
  return guarded(out, [&] {
    std::vector<int> ids;
    Status status = processor_of(processor).Encode(std::string_view(text, size), &ids);
    if (status.ok()) out->ids(out->context, ids.data(), ids.size());
    return status;
  });
}

int encode_pieces(const void* processor, const char* text, size_t size, const KdSpmOut* out) {
  return guarded(out, [&] {
    std::vector<std::string> pieces;
    Status status = processor_of(processor).Encode(std::string_view(text, size), &pieces);
    if (status.ok()) {
      for (const auto& piece : pieces) out->bytes(out->context, piece.data(), piece.size());
    }
    return status;
  });
}

class TextIterator : public sentencepiece::SentenceIterator {
 public:
  TextIterator(const char* const* texts, const size_t* sizes, size_t count)
      : texts_(texts), sizes_(sizes), count_(count) {
    load();
  }
  bool done() const override { return index_ >= count_; }
  void Next() override {
    ++index_;
    load();
  }
  const std::string& value() const override { return value_; }
  Status status() const override { return Status(); }

 private:
  void load() {
    if (index_ < count_) value_.assign(texts_[index_], sizes_[index_]);
  }
  const char* const* texts_;
  const size_t* sizes_;
  size_t count_;
  size_t index_ = 0;
  std::string value_;
};

// The seed is process-wide in libsentencepiece: one training at a time keeps it ours.
std::mutex train_mutex;

int train(const char* const* texts, const size_t* sizes, size_t count, const char* const* keys,
          const char* const* values, size_t option_count, unsigned seed, const KdSpmOut* out) {
  return guarded(out, [&] {
    std::unordered_map<std::string, std::string> flags;
    for (size_t i = 0; i < option_count; ++i) flags[keys[i]] = values[i];
    TextIterator iterator(texts, sizes, count);
    std::string model;
    std::lock_guard<std::mutex> lock(train_mutex);
    sentencepiece::SetRandomGeneratorSeed(seed);
    Status status = sentencepiece::SentencePieceTrainer::Train(flags, &iterator, &model);
    if (status.ok()) out->bytes(out->context, model.data(), model.size());
    return status;
  });
}

const KdSpmApi api = {kKdSpmApiVersion, load_proto, load_file,  destroy,       piece_count,
                      pad_id,           serialize,  encode_ids, encode_pieces, train};

}  // namespace

extern "C" __attribute__((visibility("default"))) const KdSpmApi* kd_sentencepiece_api() { return &api; }
