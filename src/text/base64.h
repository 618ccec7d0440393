// Base64 (RFC 4648, with padding) for the model bytes that tokenizer JSON carries.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace kd::text {

std::string base64_encode(std::string_view bytes);
// The bytes, or nothing when `text` is not padded base64 (whitespace is not allowed either).
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace kd::text
