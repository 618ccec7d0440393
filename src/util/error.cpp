#include "kd/util/error.h"

namespace kd {

void rethrow_with_context(const std::string& context) {
  try {
    throw;
  } catch (const Error& e) {
    throw Error(context + ": " + e.what());
  }
}

}  // namespace kd
