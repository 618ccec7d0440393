// The search space: defaults derived from the recipe, decoding, the overrides a trial runs with,
// and the recipe's search: section with its errors.
#include <gtest/gtest.h>

#include "kd/recipe/recipe.h"
#include "kd/search/auto.h"
#include "kd/search/space.h"
#include "kd/util/fs.h"
#include "test_util.h"

namespace kd::test {
namespace {

using search::Config;
using search::DimensionKind;

flow::RunSpec mlp_base() {
  flow::RunSpec base;
  base.student.model = models::ZooSpec().arch("mlp").hidden({32});
  base.distill.train.optimizer(train::OptimizerOptions().name("adam").lr(0.01));
  return base;
}

std::vector<std::string> names(const search::SearchSpace& space) {
  std::vector<std::string> n;
  for (const auto& d : space.dimensions) n.push_back(d.name);
  return n;
}

TEST(SearchSpace, DefaultsComeFromTheRecipe) {
  auto space = search::make_space(mlp_base(), search::SearchOptions());
  EXPECT_EQ(names(space), (std::vector<std::string>{"width", "depth", "loss", "temperature", "alpha", "lr"}));
  EXPECT_EQ(space.dimensions[0].kind, DimensionKind::log_real);
  EXPECT_DOUBLE_EQ(space.dimensions[0].low, 0.125);
  EXPECT_DOUBLE_EQ(space.dimensions[0].high, 2.0);
  // One hidden layer in the recipe: depth 1 or 2.
  EXPECT_EQ(space.dimensions[1].cells(), 2);
  EXPECT_EQ(space.dimensions[2].choices, (std::vector<std::string>{"kl", "js", "dkd"}));
  // The learning rate from a 30th to 30 times the recipe's 0.01; alpha from 0 (no teacher).
  EXPECT_DOUBLE_EQ(space.dimensions[5].low, 0.0003333);
  EXPECT_DOUBLE_EQ(space.dimensions[5].high, 0.3);
  EXPECT_DOUBLE_EQ(space.dimensions[4].low, 0.0);
  // Without a recipe rate (sized to the rows), Adam's from 1e-4 to 0.1.
  auto sized = mlp_base();
  sized.distill.train.optimizer(train::OptimizerOptions().name("adam"));
  auto wide = search::make_space(sized, search::SearchOptions());
  EXPECT_DOUBLE_EQ(wide.dimensions[5].low, 1e-4);
  EXPECT_DOUBLE_EQ(wide.dimensions[5].high, 0.1);
}

TEST(SearchSpace, CornersDecodeToTheRangeEnds) {
  auto base = mlp_base();
  auto space = search::make_space(base, search::SearchOptions());
  Config low = search::decode(space, std::vector<double>(6, 0.0));
  EXPECT_EQ(low, Config({{"width", 0.125}, {"depth", 1}, {"loss", "kl"}, {"temperature", 1.0}, {"alpha", 0.0}, {"lr", 0.0003333}}));
  Config high = search::decode(space, std::vector<double>(6, 1.0));
  EXPECT_EQ(high, Config({{"width", 2.0}, {"depth", 2}, {"loss", "dkd"}, {"temperature", 20.0}, {"alpha", 1.0}, {"lr", 0.3}}));
  // Log scale: the middle of [1, 20] is sqrt(20) = 4.472 (4 significant digits).
  EXPECT_DOUBLE_EQ(space.dimensions[3].decode(0.5).get<double>(), 4.472);
}

TEST(SearchSpace, OverridesAreRecipeSetValues) {
  auto base = mlp_base();
  auto space = search::make_space(base, search::SearchOptions());
  auto sets = search::overrides(space, search::decode(space, std::vector<double>(6, 1.0)), base);
  EXPECT_EQ(sets, (std::vector<std::string>{
                      "student.model.width_multiplier=2", "student.model.hidden=[32, 32]",
                      "distill.losses=[{kind: dkd, weight: 1, temperature: 20}, {kind: ce, weight: 0}]",
                      "distill.optimizer={name: adam, lr: 0.3}"}));
  // A recipe's stages (staged FitNets) give way to the one searched objective, in trials and final run.
  base.distill.stages.push_back({{losses::LossTermOptions("hint").set("student", "fc1").set("teacher", "fc1")}, base.distill.train});
  sets = search::overrides(space, search::decode(space, std::vector<double>(6, 0.0)), base);
  EXPECT_EQ(sets.back(), "distill.stages=null");
}

TEST(SearchSpace, CnnDepthAddsStagesOfTwiceTheChannels) {
  flow::RunSpec base;
  base.student.model = models::ZooSpec().arch("cnn").channels({16, 32});
  base.distill.train.optimizer(train::OptimizerOptions().name("sgd").lr(0.05).momentum(0.8));
  auto space = search::make_space(base, search::SearchOptions());
  auto config = search::decode(space, std::vector<double>(space.dimensions.size(), 1.0));
  EXPECT_EQ(config["depth"], 3);
  auto sets = search::overrides(space, config, base);
  EXPECT_EQ(sets[1], "student.model.channels=[16, 32, 64]");
  // The optimizer's other settings travel with the searched learning rate.
  EXPECT_EQ(sets[3], "distill.optimizer={name: sgd, lr: 1, momentum: 0.8}");
  // Any family with conv stages (the zoo table's `stages`) is resized the same way.
  base.student.model = models::ZooSpec().arch("vgg").channels({8});
  space = search::make_space(base, search::SearchOptions());
  sets = search::overrides(space, search::decode(space, std::vector<double>(space.dimensions.size(), 1.0)), base);
  EXPECT_EQ(sets[1], "student.model.channels=[8, 16]");
}

TEST(SearchSpace, RegressionSearchesMseOrHuberWithoutTemperature) {
  auto base = mlp_base();
  base.task = Task::regression;
  auto space = search::make_space(base, search::SearchOptions());
  EXPECT_EQ(names(space), (std::vector<std::string>{"width", "depth", "loss", "alpha", "lr"}));
  auto sets = search::overrides(space, search::decode(space, std::vector<double>(5, 0.0)), base);
  // alpha 0: no teacher, a candidate like any other.
  EXPECT_EQ(sets[2], "distill.losses=[{kind: mse, target: teacher, weight: 0}, {kind: mse, target: labels, weight: 1}]");
}

TEST(SearchSpace, RecipeSettingsReplaceDefaultsAndFixedOnesStayPut) {
  TempDir dir;
  auto path = (dir / "recipe.yaml").string();
  write_file_atomic(path,
                    "data: {format: csv, train: x.csv}\n"
                    "teacher: {path: t.pt}\n"
                    "student: {model: {arch: mlp, hidden: [16, 16]}}\n"
                    "search:\n  width: [0.5, 1]\n  temperature: 4\n  loss: [kl, js]\n  epochs: 5\n  eta: 2\n");
  auto recipe = recipe::load_recipe(path);
  EXPECT_EQ(recipe.search.epochs(), 5);
  EXPECT_EQ(recipe.search.eta(), 2);
  auto space = search::make_space(recipe.run, recipe.search);
  EXPECT_EQ(names(space), (std::vector<std::string>{"width", "depth", "loss", "temperature", "alpha", "lr"}));
  EXPECT_DOUBLE_EQ(space.dimensions[0].low, 0.5);
  EXPECT_EQ(space.dimensions[1].cells(), 3);  // depth 1..3 around the recipe's two layers
  EXPECT_TRUE(space.dimensions[3].fixed());
  EXPECT_EQ(space.dimensions[3].decode(0.9), 4.0);
  EXPECT_EQ(space.dimensions[2].choices, (std::vector<std::string>{"kl", "js"}));
}

TEST(SearchSpace, CandidateStudentsBecomeOneChoice) {
  TempDir dir;
  auto path = (dir / "recipe.yaml").string();
  write_file_atomic(path,
                    "data: {format: csv, train: x.csv}\nteacher: {path: t.pt}\n"
                    "student: {model: {arch: mlp, hidden: [16]}}\n"
                    "search:\n  loss: recipe\n  students:\n    - {arch: mlp, hidden: [4]}\n    - {arch: cnn, channels: [8]}\n");
  auto recipe = recipe::load_recipe(path);
  auto space = search::make_space(recipe.run, recipe.search);
  EXPECT_EQ(names(space), (std::vector<std::string>{"student", "lr"}));
  auto sets = search::overrides(space, search::decode(space, {0.9, 0.0}), recipe.run);
  EXPECT_EQ(sets[0], "student.model={arch: cnn, channels: [8]}");
}

TEST(SearchSpace, BadSettingsNameTheFileLineAndKey) {
  TempDir dir;
  auto path = (dir / "recipe.yaml").string();
  auto load = [&](const std::string& search) {
    write_file_atomic(path, "data: {format: csv, train: x.csv}\nteacher: {path: t.pt}\n"
                            "student: {model: {arch: mlp, hidden: [16]}}\nsearch:\n" + search);
    return error_of([&] {
      auto recipe = recipe::load_recipe(path);
      search::make_space(recipe.run, recipe.search);
    });
  };
  EXPECT_NE(load("  width: [2, 1]\n").find("recipe.yaml:5: search.width: the range [2, 1] is empty"), std::string::npos);
  EXPECT_NE(load("  temprature: 3\n").find("did you mean temperature"), std::string::npos);
  EXPECT_NE(load("  loss: [kl, fancy]\n").find("\"fancy\" is not a loss kind"), std::string::npos);
  EXPECT_NE(load("  depth: [1.5, 3]\n").find("search.depth: depth takes whole numbers"), std::string::npos);
  EXPECT_NE(load("  eta: 1\n").find("search.eta: 1 is below 2"), std::string::npos);
  EXPECT_NE(load("  front: speed\n").find("search.front: \"speed\" is not one of params, macs, latency_ms"), std::string::npos);
  EXPECT_NE(load("  loss: recipe\n  temperature: 2\n").find("search.temperature: not searched here"), std::string::npos);
  EXPECT_NE(load("  width: [1, 1e6]\n").find("outside width's domain"), std::string::npos);
}

TEST(SearchDuration, ParsesUnitsAndRefusesTheRest) {
  EXPECT_DOUBLE_EQ(search::parse_duration("90", "--budget"), 90);
  EXPECT_DOUBLE_EQ(search::parse_duration("20m", "--budget"), 1200);
  EXPECT_DOUBLE_EQ(search::parse_duration("1h30m", "--budget"), 5400);
  EXPECT_DOUBLE_EQ(search::parse_duration("1.5h", "--budget"), 5400);
  EXPECT_DOUBLE_EQ(search::parse_duration("2m30s", "--budget"), 150);
  for (const char* bad : {"", "abc", "20x", "m", "-5", "0", "5m3"}) {
    EXPECT_NE(error_of([&] { search::parse_duration(bad, "--budget"); }).find("--budget: "), std::string::npos) << bad;
  }
  EXPECT_EQ(search::duration_text(1200), "20m00s");
  EXPECT_EQ(search::duration_text(3900), "1h05m");
  EXPECT_EQ(search::duration_text(42), "42s");
}

}  // namespace
}  // namespace kd::test
