// The data stage end to end, through recipes, on the data sets Debian ships.
#include "kd/data/dataset.h"

#include <gtest/gtest.h>

#include <set>

#include "kd/recipe/recipe.h"
#include "kd/util/fs.h"
#include "test_util.h"

namespace kd::data {
namespace {

const std::string kSklearn = "/usr/lib/python3/dist-packages/sklearn/datasets/data/";
const std::string kFashion = "/usr/share/datasets/fashion-mnist/";

class DatasetFromRecipe : public ::testing::Test {
 protected:
  Dataset load(const std::string& data_yaml, const std::string& task = "classification") {
    auto path = dir_ / "recipe.yaml";
    write_file_atomic(path, "task: " + task + "\nseed: 3\ndata:\n" + data_yaml +
                                "teacher: {model: {arch: mlp}}\nstudent: {model: {arch: linear}}\n");
    return load_dataset(recipe::load_recipe(path.string()).data);
  }
  test::TempDir dir_;
};

std::vector<int64_t> class_counts(const torch::Tensor& y, int64_t classes) {
  auto counts = torch::bincount(y, {}, classes);
  return std::vector<int64_t>(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + classes);
}

TEST_F(DatasetFromRecipe, IrisFiveFoldsCoverEveryTrainingRowOnce) {
  auto d = load("  train: " + kSklearn + "iris.csv\n  test_fraction: 0.2\n  folds: 5\n");
  EXPECT_EQ(d.outputs, 3);
  EXPECT_EQ(d.input_shape, std::vector<int64_t>({4}));
  ASSERT_EQ(d.folds.size(), 5u);
  // 150 rows: 30 held out for test (10 per class), 120 in folds of 24 (8 per class).
  for (const auto& f : d.folds) {
    EXPECT_EQ(f.test.size(), 30);
    EXPECT_EQ(f.val.size(), 24);
    EXPECT_EQ(f.train.size(), 96);
    EXPECT_EQ(class_counts(f.val.y, 3), std::vector<int64_t>({8, 8, 8}));
    EXPECT_EQ(class_counts(f.test.y, 3), std::vector<int64_t>({10, 10, 10}));
    // Normalisation is fitted on the fold's training rows: their mean is 0, std 1.
    EXPECT_LT(f.train.x.mean(0).abs().max().item<float>(), 1e-5);
    EXPECT_NEAR(f.train.x.std(0, false).mean().item<float>(), 1.0, 1e-4);
  }
  // Every training row is in exactly one validation fold: the val rows of the 5 folds are 120
  // distinct examples (compared by their raw features through the first fold's transform).
  std::set<std::vector<float>> seen;
  for (const auto& f : d.folds) {
    auto n = Normalizer::from_json(f.preprocessing["normalize"]);
    auto raw = n.invert(f.val.x);
    for (int64_t i = 0; i < raw.size(0); ++i) {
      auto row = (raw[i] * 10).round();
      seen.insert(std::vector<float>(row.data_ptr<float>(), row.data_ptr<float>() + 4));
    }
  }
  // iris has a few duplicate rows, so the distinct count is at most 120 and close to it.
  EXPECT_GE(seen.size(), 115u);
}

TEST_F(DatasetFromRecipe, SameSeedSameSplitsOtherSeedOther) {
  auto a = load("  train: " + kSklearn + "breast_cancer.csv\n");
  auto b = load("  train: " + kSklearn + "breast_cancer.csv\n");
  EXPECT_TRUE(torch::equal(a.folds[0].val.x, b.folds[0].val.x));
  auto path = dir_ / "other.yaml";
  write_file_atomic(path, "seed: 4\ndata:\n  train: " + kSklearn +
                              "breast_cancer.csv\nteacher: {model: {arch: mlp}}\nstudent: {model: {arch: linear}}\n");
  auto c = load_dataset(recipe::load_recipe(path.string()).data);
  EXPECT_FALSE(torch::equal(a.folds[0].val.x, c.folds[0].val.x));
}

TEST_F(DatasetFromRecipe, BreastCancerSummaryLineAndStratifiedHoldout) {
  auto d = load("  train: " + kSklearn + "breast_cancer.csv\n  test_fraction: 0.2\n  val_fraction: 0.1\n");
  EXPECT_EQ(d.input_shape, std::vector<int64_t>({30}));
  EXPECT_EQ(d.outputs, 2);
  const auto& f = d.folds[0];
  // 569 rows (212 malignant = 0, 357 benign = 1): test 114, then val 46 of the 455 left.
  EXPECT_EQ(f.test.size(), 114);
  EXPECT_EQ(f.val.size(), 46);
  EXPECT_EQ(f.train.size(), 409);
  auto test_counts = class_counts(f.test.y, 2);
  EXPECT_NEAR(test_counts[0], 114.0 * 212 / 569, 1.0);
}

TEST_F(DatasetFromRecipe, DigitsGz) {
  auto d = load("  train: " + kSklearn + "digits.csv.gz\n  test_fraction: 0.25\n");
  EXPECT_EQ(d.input_shape, std::vector<int64_t>({64}));
  EXPECT_EQ(d.outputs, 10);
  EXPECT_EQ(d.folds[0].test.size() + d.folds[0].val.size() + d.folds[0].train.size(), 1797);
}

TEST_F(DatasetFromRecipe, DiabetesRegressionWithTargetFile) {
  auto d = load("  train:\n    path: " + kSklearn + "diabetes_data_raw.csv.gz\n    labels: " + kSklearn +
                    "diabetes_target.csv.gz\n  folds: 5\n",
                "regression");
  EXPECT_EQ(d.task, Task::regression);
  EXPECT_EQ(d.input_shape, std::vector<int64_t>({10}));
  EXPECT_EQ(d.outputs, 1);
  ASSERT_EQ(d.folds.size(), 5u);
  // 442 rows: 88 test, 354 in 5 folds of 70 or 71.
  for (const auto& f : d.folds) {
    EXPECT_EQ(f.test.size(), 88);
    EXPECT_TRUE(f.val.size() == 70 || f.val.size() == 71);
    // Targets are standardised on the fold's training rows; the inverse gives the raw values back.
    EXPECT_NEAR(f.train.y.mean().item<float>(), 0.0, 1e-5);
    auto raw = f.target_normalizer.invert(f.test.y);
    EXPECT_GE(raw.min().item<float>(), 25.0);   // diabetes targets range from 25 to 346
    EXPECT_LE(raw.max().item<float>(), 346.0);
  }
}

TEST_F(DatasetFromRecipe, FashionMnistIdxWithLimitsAndLabeledSubset) {
  auto d = load("  train: {images: " + kFashion + "train-images-idx3-ubyte.gz, labels: " + kFashion +
                "train-labels-idx1-ubyte.gz}\n  test: {images: " + kFashion + "t10k-images-idx3-ubyte.gz, labels: " +
                kFashion + "t10k-labels-idx1-ubyte.gz}\n  train_limit: 2000\n  test_limit: 500\n  labeled: 100\n");
  EXPECT_EQ(d.input_shape, std::vector<int64_t>({1, 28, 28}));
  EXPECT_EQ(d.outputs, 10);
  const auto& f = d.folds[0];
  EXPECT_EQ(f.test.size(), 500);
  EXPECT_EQ(f.train.size() + f.val.size(), 2000);
  EXPECT_EQ(f.val.size(), 200);
  EXPECT_EQ(f.labeled.sum().item<int64_t>(), 100);
  // Stratified subsets keep the 10 balanced classes balanced.
  EXPECT_EQ(class_counts(f.test.y, 10), std::vector<int64_t>(10, 50));
  EXPECT_EQ(class_counts(f.train.y.masked_select(f.labeled), 10), std::vector<int64_t>(10, 10));
}

TEST_F(DatasetFromRecipe, ImageFolderThroughARecipe) {
  // Two classes of 6 tiny grayscale PNGs each, written with numpy-free Python (zlib + struct).
  std::string script =
      "import os, struct, zlib\n"
      "def png(path, value):\n"
      "    raw = b''.join(b'\\x00' + bytes([value] * 4) for _ in range(4))\n"
      "    def chunk(kind, data):\n"
      "        c = kind + data\n"
      "        return struct.pack('>I', len(data)) + c + struct.pack('>I', zlib.crc32(c))\n"
      "    ihdr = struct.pack('>IIBBBBB', 4, 4, 8, 0, 0, 0, 0)\n"
      "    open(path, 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))\n"
      "root = '" + (dir_ / "images").string() + "'\n"
      "for label, base in (('cat', 10), ('dog', 200)):\n"
      "    os.makedirs(os.path.join(root, label))\n"
      "    for i in range(6): png(os.path.join(root, label, '%d.png' % i), base + i)\n";
  write_file_atomic(dir_ / "make.py", script);
  ASSERT_EQ(std::system(("/usr/bin/python3 " + (dir_ / "make.py").string()).c_str()), 0);
  auto d = load("  format: images\n  train: " + (dir_ / "images").string() +
                "\n  image_size: 4\n  test_fraction: 0.34\n  val_fraction: 0.25\n  normalize: none\n");
  EXPECT_EQ(d.class_names, std::vector<std::string>({"cat", "dog"}));
  EXPECT_EQ(d.input_shape, std::vector<int64_t>({1, 4, 4}));
  const auto& f = d.folds[0];
  EXPECT_EQ(f.test.size() + f.val.size() + f.train.size(), 12);
  EXPECT_EQ(class_counts(f.test.y, 2), std::vector<int64_t>({2, 2}));
  // Pixels scaled to [0, 1]: a cat is 10..15 / 255, a dog 200..205 / 255.
  for (int64_t i = 0; i < f.train.size(); ++i) {
    float pixel = f.train.x[i][0][0][0].item<float>();
    if (f.train.y[i].item<int64_t>() == 0) EXPECT_LT(pixel, 16.0f / 255 + 1e-6);
    else EXPECT_GT(pixel, 199.0f / 255);
  }
}

}  // namespace
}  // namespace kd::data
