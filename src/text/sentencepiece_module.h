// The C interface of the kd_sentencepiece module (sentencepiece_module.cpp), which kd loads with dlopen
// (sentencepiece.cpp says why). Only C types cross it; the module catches every exception. Results come
// back through the callbacks of a KdSpmOut, errors as one message.
#pragma once

#include <cstddef>

extern "C" {

struct KdSpmOut {
  void* context;
  void (*bytes)(void* context, const char* data, size_t size);  // a serialized model, or one piece a call
  void (*ids)(void* context, const int* ids, size_t count);
  void (*error)(void* context, const char* message, size_t size);
};

// Every function returning int returns 1 on success, 0 after calling out->error.
struct KdSpmApi {
  int version;  // kKdSpmApiVersion
  // A processor (free it with destroy) from a serialized ModelProto or a .model file; null after out->error.
  void* (*load_proto)(const char* data, size_t size, const KdSpmOut* out);
  void* (*load_file)(const char* path, const KdSpmOut* out);
  void (*destroy)(void* processor);
  int (*piece_count)(const void* processor);
  int (*pad_id)(const void* processor);                          // -1 when the model has no pad piece
  int (*serialize)(const void* processor, const KdSpmOut* out);  // out->bytes once
  int (*encode_ids)(const void* processor, const char* text, size_t size,
                    const KdSpmOut* out);  // out->ids once
  int (*encode_pieces)(const void* processor, const char* text, size_t size,
                       const KdSpmOut* out);  // out->bytes per piece
  // Trains on `count` texts with the trainer flags keys[i]=values[i] and the random seed; out->bytes once.
  int (*train)(const char* const* texts, const size_t* sizes, size_t count, const char* const* keys,
               const char* const* values, size_t option_count, unsigned seed, const KdSpmOut* out);
};

enum { kKdSpmApiVersion = 1 };

// The module's one exported symbol.
const KdSpmApi* kd_sentencepiece_api();
}
