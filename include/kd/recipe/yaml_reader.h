// Reading a recipe section with errors that name the file, line and key, and
// with unknown keys refused (with the nearest valid key suggested).
//
//   YamlSection data(root["data"], "recipe.yaml", "data");
//   double f = data.get<double>("val_fraction", 0.1);
//   data.finish();   // kd::Error: recipe.yaml:7: data.val_fractoin: unknown key (did you mean val_fraction?)
#pragma once

#include <yaml-cpp/yaml.h>

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "kd/util/error.h"

namespace kd::recipe {

class YamlSection {
 public:
  // `node` may be undefined or null (an absent section: every key takes its default).
  YamlSection(YAML::Node node, std::string file, std::string path);

  bool has(const std::string& key) const;
  // The value of `key`, or `fallback` when absent. kd::Error when present but of the wrong type.
  template <typename T>
  T get(const std::string& key, const T& fallback);
  // The value of `key`; kd::Error when absent.
  template <typename T>
  T require(const std::string& key);
  // A sub-section (a map, or absent).
  YamlSection section(const std::string& key);
  // The raw node of `key` (marks it as known), for values of several shapes.
  YAML::Node node(const std::string& key);
  // A list of maps, as sections.
  std::vector<YamlSection> list(const std::string& key);

  // Refuses keys not read by get/require/section/node/list. Call after reading everything.
  void finish() const;

  // "recipe.yaml:12: data.val_fraction" for the key (line of the key when known).
  std::string where(const std::string& key) const;
  const std::string& path() const { return path_; }
  const std::string& file() const { return file_; }
  bool defined() const { return node_.IsDefined() && !node_.IsNull(); }
  const YAML::Node& raw() const { return node_; }

 private:
  std::string full_key(const std::string& key) const;
  [[noreturn]] void wrong_type(const std::string& key, const std::string& expected) const;

  YAML::Node node_;
  std::string file_;
  std::string path_;
  mutable std::set<std::string> used_;
};

// Applies `--set a.b.c=value` (the value read as YAML, so lists and maps work) to `root`.
void apply_override(YAML::Node& root, const std::string& assignment);

// Parses YAML text (a recipe); `path` names it in messages: kd::Error with it and the line on a syntax
// error.
YAML::Node parse_yaml(const std::string& text, const std::string& path);

template <typename T>
T YamlSection::get(const std::string& key, const T& fallback) {
  used_.insert(key);
  if (!defined() || !node_[key] || node_[key].IsNull()) return fallback;
  return require<T>(key);
}

template <typename T>
T YamlSection::require(const std::string& key) {
  used_.insert(key);
  if (!defined() || !node_[key] || node_[key].IsNull()) fail("{}: required key is missing", where(key));
  try {
    return node_[key].template as<T>();
  } catch (const YAML::Exception&) {
    if constexpr (std::is_same_v<T, bool>) wrong_type(key, "true or false");
    if constexpr (std::is_integral_v<T>) wrong_type(key, "an integer");
    if constexpr (std::is_floating_point_v<T>) wrong_type(key, "a number");
    if constexpr (std::is_same_v<T, std::string>) wrong_type(key, "a string");
    wrong_type(key, "a list of that type");
  }
}

}  // namespace kd::recipe
