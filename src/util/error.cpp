#include "kd/util/error.h"

#include <c10/util/Exception.h>

namespace kd {

std::string first_line(const std::exception& error) {
  std::string message = error.what();
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error)) message = c10_error->what_without_backtrace();
  return message.substr(0, message.find('\n'));
}

void rethrow_with_context(const std::string& context) {
  try {
    throw;
  } catch (const Error& e) {
    throw Error(context + ": " + e.what());
  }
}

}  // namespace kd
