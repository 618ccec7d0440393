// The stable API (kd/kdistill.h) on its own: recipes from text, arrays in memory, the data stage.
// A whole run through it is tested from an installed prefix (tests/install) and from Python
// (tests/python).
#include <gtest/gtest.h>

#include "kd/data/npy.h"
#include "kd/kdistill.h"
#include "test_util.h"

namespace kd {
namespace {

const char* kRecipe = R"(
task: classification
seed: 4
data: {test_fraction: 0.25, val_fraction: 0.2, normalize: standard}
teacher: {model: {arch: mlp, hidden: [8]}}
student: {model: {arch: mlp, hidden: [4]}}
)";

// 40 rows of 3 features in 2 classes, pixels or numbers.
std::pair<torch::Tensor, torch::Tensor> rows(torch::ScalarType type) {
  torch::manual_seed(0);
  auto x = (torch::rand({40, 3}) * 200).to(type);
  auto y = torch::arange(40) % 2;
  return {x, y};
}

TEST(Api, ArraysInMemorySplitLikeTheSameArraysInNpyFiles) {
  auto [x, y] = rows(torch::kFloat);
  Recipe recipe = parse_recipe(kRecipe);
  set_arrays(recipe, x, y);
  Dataset from_arrays = load_data(recipe);

  test::TempDir dir;
  data::write_npy(dir.path() / "x.npy", x);
  data::write_npy(dir.path() / "y.npy", y);
  Recipe files = parse_recipe(kRecipe, dir.path().string(), {"data.train={inputs: x.npy, labels: y.npy}"});
  Dataset from_files = load_data(files);

  ASSERT_EQ(from_arrays.folds.size(), 1u);
  const auto& a = from_arrays.folds[0];
  const auto& f = from_files.folds[0];
  EXPECT_EQ(a.train.size() + a.val.size() + a.test.size(), 40);
  EXPECT_EQ(a.test.size(), 10);
  EXPECT_TRUE(torch::equal(a.train.x, f.train.x));
  EXPECT_TRUE(torch::equal(a.test.y, f.test.y));
  EXPECT_EQ(a.preprocessing, f.preprocessing);
  EXPECT_EQ(from_arrays.class_names, from_files.class_names);
  EXPECT_EQ(from_arrays.source, "arrays in memory (arrays)");
}

TEST(Api, TestArraysAreTheTestRows) {
  auto [x, y] = rows(torch::kByte);
  Recipe recipe = parse_recipe(kRecipe, ".", {"data.normalize=none"});
  set_arrays(recipe, x.slice(0, 0, 30), y.slice(0, 0, 30), x.slice(0, 30), y.slice(0, 30));
  Dataset d = load_data(recipe);
  EXPECT_EQ(d.folds[0].test.size(), 10);
  EXPECT_EQ(d.folds[0].train.size() + d.folds[0].val.size(), 30);
  EXPECT_LE(d.folds[0].train.x.max().item<float>(), 1.0f) << "uint8 pixels are scaled to [0, 1] as from a .npy file";
  EXPECT_GT(d.folds[0].train.x.max().item<float>(), 0.5f);
}

TEST(Api, ArraysAndFilesForTheSameRowsAreRefused) {
  auto [x, y] = rows(torch::kFloat);
  Recipe with_file = parse_recipe(kRecipe, ".", {"data.train=x.npy"});
  KD_EXPECT_ERROR(set_arrays(with_file, x, y), "data.train: a file as well as arrays in memory");
  Recipe with_format = parse_recipe(kRecipe, ".", {"data.format=idx"});
  KD_EXPECT_ERROR(set_arrays(with_format, x, y), "data.format: idx with arrays in memory");
  Recipe recipe = parse_recipe(kRecipe);
  KD_EXPECT_ERROR(set_arrays(recipe, x, y, x), "x_test and y_test go together");
  set_arrays(recipe, x, y);
  KD_EXPECT_ERROR(set_arrays(recipe, x, y), "this recipe has arrays already");
  Recipe mismatched = parse_recipe(kRecipe);
  set_arrays(mismatched, x, y.slice(0, 0, 39));
  KD_EXPECT_ERROR(load_data(mismatched), "x has shape [40, 3] and y [39]");
}

TEST(Api, RecipeTextErrorsNameTheKey) {
  KD_EXPECT_ERROR(parse_recipe("task: clasification\nteacher: {}\n"), "recipe:1: task: \"clasification\" is not a task");
  KD_EXPECT_ERROR(parse_recipe("task: [\n"), "not valid YAML");
  KD_EXPECT_ERROR(setup(SetupOptions().log_level("loud")), "log_level: \"loud\" is not a level");
}

TEST(Api, VersionsAgree) {
  std::string build = build_version();
  EXPECT_EQ(build.rfind(version(), 0), 0u) << build;
}

}  // namespace
}  // namespace kd
