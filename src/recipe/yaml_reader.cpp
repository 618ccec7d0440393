#include "kd/recipe/yaml_reader.h"

#include "kd/util/strings.h"

namespace kd::recipe {

YamlSection::YamlSection(YAML::Node node, std::string file, std::string path)
    : node_(std::move(node)), file_(std::move(file)), path_(std::move(path)) {
  if (defined() && !node_.IsMap()) {
    fail("{}:{}: {}: expected a map of keys, found {}", file_, node_.Mark().line + 1, path_,
         node_.IsSequence() ? "a list" : quote(node_.Scalar()));
  }
}

std::string YamlSection::full_key(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

std::string YamlSection::where(const std::string& key) const {
  int line = -1;
  if (defined()) {
    for (const auto& item : node_) {
      if (item.first.Scalar() == key) line = item.first.Mark().line;
    }
    if (line < 0) line = node_.Mark().line;
  }
  if (line >= 0) return fmt::format("{}:{}: {}", file_, line + 1, full_key(key));
  return fmt::format("{}: {}", file_, full_key(key));
}

void YamlSection::wrong_type(const std::string& key, const std::string& expected) const {
  YAML::Node value = node_[key];
  std::string found = value.IsScalar() ? quote(value.Scalar()) : value.IsSequence() ? "a list" : "a map";
  fail("{}: expected {}, found {}", where(key), expected, found);
}

bool YamlSection::has(const std::string& key) const {
  return defined() && node_[key] && !node_[key].IsNull();
}

YamlSection YamlSection::section(const std::string& key) {
  used_.insert(key);
  return YamlSection(defined() ? node_[key] : YAML::Node(), file_, full_key(key));
}

YAML::Node YamlSection::node(const std::string& key) {
  used_.insert(key);
  return defined() ? node_[key] : YAML::Node();
}

std::vector<YamlSection> YamlSection::list(const std::string& key) {
  used_.insert(key);
  std::vector<YamlSection> items;
  if (!has(key)) return items;
  YAML::Node value = node_[key];
  if (!value.IsSequence()) fail("{}: expected a list, found {}", where(key), value.IsMap() ? "a map" : quote(value.Scalar()));
  for (size_t i = 0; i < value.size(); ++i) {
    items.emplace_back(value[i], file_, fmt::format("{}[{}]", full_key(key), i));
  }
  return items;
}

void YamlSection::finish() const {
  if (!defined()) return;
  std::vector<std::string> known(used_.begin(), used_.end());
  for (const auto& item : node_) {
    if (!item.first.IsScalar()) {
      fail("{}:{}: {}: a key is {}, expected a word", file_, item.first.Mark().line + 1,
           path_.empty() ? "the recipe" : path_,
           item.first.IsSequence() ? "a list" : item.first.IsMap() ? "a map" : "empty");
    }
    std::string key = item.first.Scalar();
    if (used_.count(key)) continue;
    auto suggestion = nearest(key, known);
    fail("{}:{}: {}: unknown key{}", file_, item.first.Mark().line + 1, full_key(key),
         suggestion ? " (did you mean " + *suggestion + "?)" : " (expected one of: " + join(known, ", ") + ")");
  }
}

void apply_override(YAML::Node& root, const std::string& assignment) {
  auto equals = assignment.find('=');
  if (equals == std::string::npos || equals == 0) {
    fail("--set {}: expected key=value, e.g. --set distill.epochs=5", quote(assignment));
  }
  std::string key = trim(assignment.substr(0, equals));
  std::string text = assignment.substr(equals + 1);
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail("--set {}: the value is not valid YAML: {}", key, e.msg);
  }
  auto parts = split(key, '.');
  // yaml-cpp's operator[] returns handles that alias the tree; walk by reassigning copies.
  std::vector<YAML::Node> chain = {root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node child = chain.back()[parts[i]];
    if (child.IsDefined() && !child.IsNull() && !child.IsMap()) {
      fail("--set {}: {} is not a section", key, join({parts.begin(), parts.begin() + i + 1}, "."));
    }
    if (!child.IsDefined() || child.IsNull()) {
      chain.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
      child = chain.back()[parts[i]];
    }
    chain.push_back(child);
  }
  // key=null removes the key: `--set teacher.model=null --set teacher.path=t.kdm` swaps a teacher.
  if (value.IsNull()) chain.back().remove(parts.back());
  else chain.back()[parts.back()] = value;
}

YAML::Node parse_yaml(const std::string& text, const std::string& path) {
  try {
    YAML::Node root = YAML::Load(text);
    if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
    if (!root.IsMap()) fail("{}: expected a map of sections (task, data, teacher, ...), found {}", path,
                            root.IsSequence() ? "a list" : quote(root.Scalar()));
    return root;
  } catch (const YAML::Exception& e) {
    fail("{}:{}: not valid YAML: {}", path, e.mark.line + 1, e.msg);
  }
}

}  // namespace kd::recipe
