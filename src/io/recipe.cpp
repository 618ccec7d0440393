#include "kd/io/recipe.h"

#include <filesystem>

#include "kd/util/strings.h"

namespace kd::io {

namespace fs = std::filesystem;

namespace {

std::string resolve_path(const std::string& path, const std::string& base_folder) {
  if (path.empty() || fs::path(path).is_absolute() || base_folder.empty()) return path;
  return (fs::path(base_folder) / path).lexically_normal().string();
}

// `train: file.csv` or `train: {path: ..., images|inputs: ..., labels: ...}`.
data::DataFiles parse_files(YamlSection& parent, const std::string& key, const std::string& base_folder) {
  data::DataFiles files;
  YAML::Node node = parent.node(key);
  if (!node || node.IsNull()) return files;
  if (node.IsScalar()) {
    files.path = resolve_path(node.Scalar(), base_folder);
    return files;
  }
  YamlSection section(node, parent.file(), parent.path() + "." + key);
  files.path = resolve_path(section.get<std::string>("path", ""), base_folder);
  std::string images = section.get<std::string>("images", "");
  std::string inputs = section.get<std::string>("inputs", "");
  if (!images.empty() && !inputs.empty()) fail("{}: give images or inputs, not both", section.where("inputs"));
  files.inputs = resolve_path(images.empty() ? inputs : images, base_folder);
  files.labels = resolve_path(section.get<std::string>("labels", ""), base_folder);
  section.finish();
  return files;
}

// A column given by name or index, as text (the tabular layer tells names from indices).
std::vector<std::string> column_list(YamlSection& section, const std::string& key) {
  YAML::Node node = section.node(key);
  std::vector<std::string> columns;
  if (!node || node.IsNull()) return columns;
  if (node.IsScalar()) return {node.Scalar()};
  if (!node.IsSequence()) fail("{}: expected a list of column names or indices", section.where(key));
  for (const auto& item : node) {
    if (!item.IsScalar()) fail("{}: expected a list of column names or indices", section.where(key));
    columns.push_back(item.Scalar());
  }
  return columns;
}

}  // namespace

data::DataSpec parse_data_section(YamlSection section, Task task, uint64_t seed, const std::string& base_folder) {
  data::DataSpec spec;
  spec.task(task).seed(seed);
  try {
    spec.format(section.get<std::string>("format", ""));
    spec.train(parse_files(section, "train", base_folder));
    spec.test(parse_files(section, "test", base_folder));
    spec.transfer(resolve_path(section.get<std::string>("transfer", ""), base_folder));
    spec.test_fraction(section.get<double>("test_fraction", spec.test_fraction()));
    spec.val_fraction(section.get<double>("val_fraction", spec.val_fraction()));
    spec.folds(section.get<int64_t>("folds", 0));
    spec.labeled(section.get<int64_t>("labeled", 0));
    spec.train_limit(section.get<int64_t>("train_limit", 0));
    spec.test_limit(section.get<int64_t>("test_limit", 0));
    spec.normalize(data::NormalizeOptions()
                       .mode(section.get<std::string>("normalize", "standard"))
                       .scope(section.get<std::string>("normalize_scope", "auto")));
    data::validate(spec.normalize());
    spec.normalize_target(section.get<bool>("normalize_target", true));

    spec.csv(data::CsvOptions()
                 .delimiter(section.get<std::string>("delimiter", "auto"))
                 .header(section.get<std::string>("header", "auto")));
    data::TabularOptions tabular;
    tabular.task(task);
    tabular.target(section.get<std::string>("target", ""));
    tabular.drop(column_list(section, "drop"));
    tabular.categorical(column_list(section, "categorical"));
    tabular.categorical_encoding(section.get<std::string>("categorical_encoding", "onehot"));
    tabular.missing(section.get<std::string>("missing", "error"));
    auto missing_values = column_list(section, "missing_values");
    if (!missing_values.empty()) tabular.missing_values(missing_values);
    spec.tabular(tabular);

    data::ImageFolderOptions images;
    YAML::Node size = section.node("image_size");
    if (size && size.IsScalar()) {
      auto side = section.get<int64_t>("image_size", 32);
      images.height(side).width(side);
    } else if (size && size.IsSequence() && size.size() == 2) {
      auto hw = section.get<std::vector<int64_t>>("image_size", {});
      images.height(hw[0]).width(hw[1]);
    } else if (size && !size.IsNull()) {
      fail("{}: expected a size or [height, width]", section.where("image_size"));
    }
    images.channels(section.get<int64_t>("channels", 0));
    spec.images(images);
  } catch (const Error& e) {
    // Library validation speaks of fields by recipe name already; add the file.
    std::string message = e.what();
    if (!starts_with(message, section.file())) throw Error(section.file() + ": " + message);
    throw;
  }
  section.finish();
  return spec;
}

Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides) {
  Recipe recipe;
  recipe.file = path;
  recipe.root = load_yaml_file(path);
  for (const auto& assignment : overrides) apply_override(recipe.root, assignment);
  std::string base_folder = fs::path(path).parent_path().string();

  YamlSection root(recipe.root, path, "");
  recipe.task = parse_task(root.get<std::string>("task", "classification"), root.where("task"));
  recipe.seed = root.get<uint64_t>("seed", 0);
  recipe.data = parse_data_section(root.section("data"), recipe.task, recipe.seed, base_folder);
  // Sections read by later stages; named here so that a typo at the top level is caught.
  for (const char* key : {"teacher", "student", "distill", "export", "search"}) root.node(key);
  root.finish();
  return recipe;
}

}  // namespace kd::io
