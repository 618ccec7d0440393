// Every bad input is one line on stderr naming the file and field, and exit status 2.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <fstream>

#include "cli/cli_util.h"
#include "kd/util/fs.h"
#include "test_util.h"

namespace kd::test {
namespace {

const std::string kIris = "/usr/lib/python3/dist-packages/sklearn/datasets/data/iris.csv";

std::string recipe_with_data(const std::string& data_lines) {
  return "task: classification\n"
         "data:\n" + data_lines +
         "teacher:\n  model: {arch: mlp, hidden: [8]}\n  train: {epochs: 1}\n"
         "student:\n  model: {arch: mlp, hidden: [4]}\n"
         "distill:\n  epochs: 1\n";
}

void expect_bad_input(const CommandResult& r, const std::string& message) {
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find(message), std::string::npos) << "output: " << r.output << "\nexpected: " << message;
  // One line: the error, nothing else (no backtrace, no usage dump).
  auto error_line = r.output.find("kdistill: error: ");
  ASSERT_NE(error_line, std::string::npos) << r.output;
  EXPECT_EQ(r.output.find('\n', error_line), r.output.size() - 1) << r.output;
}

class BadInput : public ::testing::Test {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    auto path = (dir_ / name).string();
    write_file_atomic(path, text);
    return path;
  }
  CommandResult run_recipe(const std::string& recipe_text, const std::string& extra = "") {
    return run_kdistill("run " + write("recipe.yaml", recipe_text) + " --out " + (dir_ / "out").string() + " " + extra);
  }
  TempDir dir_;
};

TEST_F(BadInput, MissingRecipe) {
  expect_bad_input(run_kdistill("run " + (dir_ / "nope.yaml").string()), "nope.yaml: file does not exist");
}

TEST_F(BadInput, UnreadableYaml) {
  expect_bad_input(run_recipe("task: [classification\n"), "recipe.yaml:2: not valid YAML");
}

TEST_F(BadInput, UnknownKeySuggestsTheNearest) {
  expect_bad_input(run_recipe(recipe_with_data("  train: " + kIris + "\n  val_fractoin: 0.2\n")),
                   "recipe.yaml:4: data.val_fractoin: unknown key (did you mean val_fraction?)");
}

// A key that is not a word (YAML allows maps, lists and null as keys) is named, in a loss entry too
// (it escaped as yaml-cpp's conversion error there: a fuzzer's find).
TEST_F(BadInput, AKeyThatIsNotAWord) {
  expect_bad_input(run_recipe(recipe_with_data("  train: " + kIris + "\n  ? [a, b]\n  : 1\n")),
                   "recipe.yaml:4: data: a key is a list, expected a word");
  std::string with_loss = recipe_with_data("  train: " + kIris + "\n");
  with_loss.replace(with_loss.find("distill:\n"), std::string("distill:\n").size(),
                    "distill:\n  losses:\n    - {kind: kl, {name: adam}}\n");
  expect_bad_input(run_recipe(with_loss), "distill.losses[0]: a key is a map, expected a word");
}

TEST_F(BadInput, WrongType) {
  expect_bad_input(run_recipe(recipe_with_data("  train: " + kIris + "\n  folds: many\n")),
                   "recipe.yaml:4: data.folds: expected an integer, found \"many\"");
}

TEST_F(BadInput, SetOverrideWithoutEquals) {
  expect_bad_input(run_recipe(recipe_with_data("  train: " + kIris + "\n"), "--set data.folds"),
                   "--set \"data.folds\": expected key=value");
}

TEST_F(BadInput, MissingDataFile) {
  expect_bad_input(run_recipe(recipe_with_data("  train: " + (dir_ / "absent.csv").string() + "\n")),
                   "absent.csv: file does not exist");
}

TEST_F(BadInput, TruncatedIdx) {
  // An IDX header promising 10 images of 28x28 with only 100 bytes of pixels.
  std::string idx("\x00\x00\x08\x03\x00\x00\x00\x0a\x00\x00\x00\x1c\x00\x00\x00\x1c", 16);
  idx += std::string(100, '\x01');
  std::string labels("\x00\x00\x08\x01\x00\x00\x00\x0a", 8);
  labels += std::string(10, '\x01');
  auto images_path = write("images-idx3-ubyte", idx);
  auto labels_path = write("labels-idx1-ubyte", labels);
  auto r = run_recipe(recipe_with_data("  train: {images: " + images_path + ", labels: " + labels_path + "}\n"));
  expect_bad_input(r, "images-idx3-ubyte:");
}

TEST_F(BadInput, ImageAndLabelCountsDiffer) {
  std::string images("\x00\x00\x08\x03\x00\x00\x00\x03\x00\x00\x00\x02\x00\x00\x00\x02", 16);
  images += std::string(12, '\x05');
  std::string labels("\x00\x00\x08\x01\x00\x00\x00\x04", 8);
  labels += std::string("\x00\x01\x00\x01", 4);
  auto images_path = write("img-idx3-ubyte", images);
  auto labels_path = write("lab-idx1-ubyte", labels);
  auto r = run_recipe(recipe_with_data("  train: {images: " + images_path + ", labels: " + labels_path + "}\n"));
  expect_bad_input(r, "img-idx3-ubyte has 3 examples but " + labels_path + " has 4 labels");
}

TEST_F(BadInput, RaggedCsvRow) {
  auto csv = write("ragged.csv", "a,b,y\n1,2,0\n3,4,1\n5,1\n7,8,1\n");
  expect_bad_input(run_recipe(recipe_with_data("  train: " + csv + "\n")), "ragged.csv:4:");
}

TEST_F(BadInput, NonNumericCell) {
  std::string text = "a,b,y\n1,2,0\n3,abc,1\n";
  for (int i = 0; i < 20; ++i) text += std::to_string(i) + "," + std::to_string(i % 7) + "," + std::to_string(i % 2) + "\n";
  auto csv = write("cells.csv", text);
  expect_bad_input(run_recipe(recipe_with_data("  train: " + csv + "\n")), "cells.csv:3: column \"b\": \"abc\" is not a number");
}

// Noise and feature dropout change numeric features only: on a table of categories alone they are refused.
TEST_F(BadInput, NoiseOnATableOfCategoriesOnly) {
  std::string text = "color,shape,y\n";
  for (int i = 0; i < 40; ++i) text += std::string(i % 3 == 0 ? "red" : "blue") + "," + (i % 2 ? "round" : "square") + "," + std::to_string(i % 2) + "\n";
  auto csv = write("categories.csv", text);
  expect_bad_input(run_recipe(recipe_with_data("  train: " + csv + "\n"), "--set distill.augment=noise"),
                   "distill.augment: noise 0.1: every feature of this table is a category's");
  expect_bad_input(run_recipe(recipe_with_data("  train: " + csv + "\n"), "--set teacher.train.augment=feature_dropout"),
                   "teacher.train.augment: feature_dropout 0.1: every feature of this table is a category's");
}

TEST_F(BadInput, TargetColumnMissing) {
  expect_bad_input(run_recipe(recipe_with_data("  train: " + kIris + "\n  target: specis\n")), "specis");
}

TEST_F(BadInput, SingleClass) {
  auto csv = write("one.csv", "a,b,y\n1,2,0\n3,4,0\n5,6,0\n7,8,0\n");
  expect_bad_input(run_recipe(recipe_with_data("  train: " + csv + "\n")), "one.csv");
}

TEST_F(BadInput, EmptyFile) {
  auto csv = write("empty.csv", "");
  expect_bad_input(run_recipe(recipe_with_data("  train: " + csv + "\n")), "empty.csv");
}

TEST_F(BadInput, NanInNpyFeatures) {
  int status = std::system(("/usr/bin/python3 -c \"import numpy as np; x = np.ones((6, 3), np.float32); x[4, 1] = np.nan; "
                            "np.save('" + (dir_ / "x.npy").string() + "', x); np.save('" + (dir_ / "y.npy").string() +
                            "', np.array([0, 1, 0, 1, 0, 1]))\"").c_str());
  ASSERT_EQ(status, 0);
  auto r = run_recipe(recipe_with_data("  train: {inputs: " + (dir_ / "x.npy").string() + ", labels: " +
                                       (dir_ / "y.npy").string() + "}\n"));
  expect_bad_input(r, "x.npy: example 4 has a NaN or infinite value");
}

TEST_F(BadInput, FortranOrderNpy) {
  int status = std::system(("/usr/bin/python3 -c \"import numpy as np; np.save('" + (dir_ / "f.npy").string() +
                            "', np.asfortranarray(np.ones((4, 3), np.float32))); np.save('" +
                            (dir_ / "y.npy").string() + "', np.array([0, 1, 0, 1]))\"").c_str());
  ASSERT_EQ(status, 0);
  auto r = run_recipe(recipe_with_data("  train: {inputs: " + (dir_ / "f.npy").string() + ", labels: " +
                                       (dir_ / "y.npy").string() + "}\n"));
  expect_bad_input(r, "f.npy");
}

TEST_F(BadInput, AutoWithoutABudgetSaysWhatIsMissing) {
  auto r = run_kdistill("auto x.yaml");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("--budget is required"), std::string::npos) << r.output;
}

// --device names a device of this libtorch: an unknown name, and CUDA where this build has none (as
// Debian's), are refused by name before any data is read; cpu runs.
TEST_F(BadInput, DeviceThatIsNotThere) {
  std::string recipe = recipe_with_data("  format: csv\n  train: " + kIris + "\n  target: -1\n");
  expect_bad_input(run_recipe(recipe, "--device tpu"),
                   "--device: \"tpu\" is not a device kdistill runs on: expected cpu, cuda or cuda:N");
  if (!torch::cuda::is_available()) {
    expect_bad_input(run_recipe(recipe, "--device cuda"),
                     "--device cuda:0: this build of libtorch sees no CUDA device; use --device cpu");
    expect_bad_input(run_kdistill("--local-rank 1 --device cuda eval x.kdm --data " + write("r.yaml", recipe)),
                     "--device cuda:1: this build of libtorch sees no CUDA device");
  }
  auto cpu = run_recipe(recipe, "--device cpu");
  EXPECT_EQ(cpu.status, 0) << cpu.output;
}

// A data set that would not fit --max-memory is refused before it is read, with the figure and what
// it is made of; a table whose one-hot encoding would not fit, once its columns are known.
TEST_F(BadInput, DataOverMaxMemoryIsRefusedUpFront) {
  // 2,000 images of 28 x 28 (1.5 MiB as read, 6 MiB as float32): over a limit of 4M, under 0 (none).
  std::string images("\x00\x00\x08\x03\x00\x00\x07\xd0\x00\x00\x00\x1c\x00\x00\x00\x1c", 16);
  images += std::string(2000 * 28 * 28, '\x07');
  std::string labels("\x00\x00\x08\x01\x00\x00\x07\xd0", 8);
  for (int i = 0; i < 2000; ++i) labels.push_back(static_cast<char>(i % 2));
  auto images_path = write("big-idx3-ubyte", images);
  auto labels_path = write("big-idx1-ubyte", labels);
  std::string recipe = recipe_with_data("  train: {images: " + images_path + ", labels: " + labels_path + "}\n");
  auto refused = run_recipe(recipe, "--max-memory 4M");
  expect_bad_input(refused, "big-idx3-ubyte: the data set needs about 7.5 MiB in memory (big-idx3-ubyte: 2000 x 28 x 28 "
                            "values of 1 bytes, big-idx1-ubyte: 2000 values of 1 bytes; as read, then as float32 in "
                            "each of 1 fold), more than --max-memory 4.0 MiB");
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out" / "recipe.yaml"));
  expect_bad_input(run_recipe(recipe, "--max-memory lots"), "--max-memory: \"lots\" is not a size, expected e.g. 8G");

  // 3,000 rows with an id column of 3,000 names: 36 MB once one-hot encoded, from a file of 30 KB.
  std::string csv = "id,x,y\n";
  for (int i = 0; i < 3000; ++i) csv += "n" + std::to_string(i) + "," + std::to_string(i % 7) + "," + std::to_string(i % 2) + "\n";
  auto table = write("ids.csv", csv);
  expect_bad_input(run_recipe(recipe_with_data("  train: " + table + "\n"), "--max-memory 8M"),
                   "more than --max-memory 8.0 MiB");
  auto none = run_recipe(recipe_with_data("  train: " + table + "\n  drop: [id]\n"), "--max-memory 8M");
  EXPECT_EQ(none.status, 0) << none.output;
}

// A finished run's folder is not written over unasked: --resume finishes it, --force overwrites it
// (the teacher still reused), another --out starts afresh.
TEST_F(BadInput, AnEarlierRunIsOverwrittenOnlyWithForce) {
  std::string recipe = recipe_with_data("  format: csv\n  train: " + kIris + "\n  target: -1\n");
  auto first = run_recipe(recipe);
  ASSERT_EQ(first.status, 0) << first.output;
  auto metrics = read_file(dir_ / "out" / "metrics.json");
  expect_bad_input(run_recipe(recipe), (dir_ / "out").string() + ": holds the outputs of an earlier run (metrics.json); "
                                       "--resume to finish it, --force to overwrite it");
  EXPECT_EQ(read_file(dir_ / "out" / "metrics.json"), metrics);
  auto forced = run_recipe(recipe, "--force");
  ASSERT_EQ(forced.status, 0) << forced.output;
  EXPECT_NE(forced.output.find("reusing"), std::string::npos) << forced.output;
  auto resumed = run_recipe(recipe, "--resume");
  EXPECT_EQ(resumed.status, 0) << resumed.output;
}

}  // namespace
}  // namespace kd::test
