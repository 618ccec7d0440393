// Small string helpers shared by the readers and the recipe parser.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kd {

std::string trim(std::string_view text);
// `text` without leading and trailing whitespace, as a view of it.
std::string_view trim_view(std::string_view text);
std::string to_lower(std::string_view text);
bool starts_with(std::string_view text, std::string_view prefix);
bool ends_with(std::string_view text, std::string_view suffix);
std::vector<std::string> split(std::string_view text, char separator);
std::string join(const std::vector<std::string>& parts, std::string_view separator);

// The whole of `text` (after trimming) as a double, or nothing. Accepts what strtod
// accepts ("1e-3", "inf", "nan" included); the caller decides whether those are allowed.
std::optional<double> parse_double(std::string_view text);
// The fast path of parse_double for already-trimmed decimal text (std::from_chars, 10x strtod's
// speed on CSV cells): true with `value` set when all of `text` is a decimal number, "inf" or "nan" in
// range; false otherwise, where strtod may still accept it (hexadecimal, out of range).
bool parse_decimal(std::string_view text, double& value);
// The whole of `text` as a base-10 integer, or nothing.
std::optional<long long> parse_int(std::string_view text);

// Levenshtein distance, for "did you mean" suggestions.
size_t edit_distance(std::string_view a, std::string_view b);
// The candidate closest to `word`, when it is close enough to be a likely typo.
std::optional<std::string> nearest(std::string_view word, const std::vector<std::string>& candidates);
// Up to `count` candidates by edit distance to `word`, closest first (ties in the candidates' order).
std::vector<std::string> nearest_few(std::string_view word, const std::vector<std::string>& candidates, size_t count);

// `text` in double quotes, for error messages.
std::string quote(std::string_view text);

}  // namespace kd
