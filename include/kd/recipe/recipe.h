// The recipe: one YAML file that says what to distill and how (docs/recipes.md
// documents every key). This module turns YAML into the option structs of the
// library; nothing else in kdistill reads YAML.
//
//   Recipe r = load_recipe("examples/fashion-mnist-cnn.yaml", {"distill.epochs=2"});
//
// Relative paths in the recipe are relative to the recipe file's folder.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "kd/data/dataset.h"
#include "kd/recipe/yaml_reader.h"
#include "kd/search/space.h"
#include "kd/flow/run.h"

namespace kd::recipe {

struct Recipe {
  std::string file;
  Task task = Task::classification;
  uint64_t seed = 0;
  data::DataSpec data;
  flow::RunSpec run;  // everything `kdistill run` needs (run.data == data)
  search::SearchOptions search;  // the search: section (`kdistill auto`)
  YAML::Node root;     // the recipe after --set overrides, as run (kept with the outputs)
};

// Reads, applies overrides, validates every key. kd::Error with file:line: key on any problem.
Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from YAML text: `path` names it in messages, relative paths are relative to `base_folder`.
Recipe parse_recipe(const std::string& yaml, const std::string& path, const std::string& base_folder,
                    const std::vector<std::string>& overrides = {});

// The data: section alone (exposed for the tests and for `kdistill eval --data`).
data::DataSpec parse_data_section(YamlSection section, Task task, uint64_t seed, const std::string& base_folder);
// A zoo spec (`model:` of teacher or student).
models::ZooSpec parse_zoo_spec(YamlSection section);
// Training keys shared by teacher.train and distill: epochs, batch_size, optimizer, schedule, ...
train::TrainOptions parse_train_options(YamlSection& section, train::TrainOptions defaults);

}  // namespace kd::recipe
