#include "kd/train/trainer.h"

#include <gtest/gtest.h>

#include "kd/data/batcher.h"
#include "kd/models/zoo.h"
#include "kd/util/fs.h"
#include "test_util.h"

namespace kd::train {
namespace {

// Four classes of 8x8 one-channel images: class k has a bright 4x4 quadrant k, plus noise.
struct Images {
  torch::Tensor x, y;
};
Images quadrant_images(int64_t n, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto y = torch::randint(0, 4, {n}, gen, torch::kLong);
  auto x = 0.3 * torch::randn({n, 1, 8, 8}, gen);
  auto labels = y.accessor<int64_t, 1>();
  for (int64_t i = 0; i < n; ++i) {
    int64_t r = labels[i] / 2 * 4, c = labels[i] % 2 * 4;
    x[i].narrow(1, r, 4).narrow(2, c, 4).add_(1.0);
  }
  return {x, y};
}

TrainData rows(const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& teacher = {}) {
  TrainData data;
  data.x = x;
  data.y = y;
  data.teacher = teacher;
  return data;
}

report::Metrics accuracy_on(models::Model& model, const Images& data) {
  return report::classification_metrics(predict(model, data.x), data.y);
}

ValidateFn validate_on(const Images& data) {
  return [data](models::Model& model) { return accuracy_on(model, data); };
}

// An MLP on the flattened images (a CNN with global average pooling cannot see which quadrant is lit).
models::ModelPtr small_net() {
  torch::manual_seed(3);
  return models::build_zoo_model(models::ZooSpec().arch("mlp").hidden({32}), {1, 8, 8}, 4);
}

TrainOptions quick(int64_t epochs) {
  return TrainOptions().epochs(epochs).batch_size(32).optimizer(OptimizerOptions().lr(0.01)).seed(5);
}

// Wraps a model and records, per forward call, the input's sum and the dtype of a matmul result
// computed inside the call (bfloat16 under CPU autocast, float32 otherwise).
class Recording : public models::Model {
 public:
  explicit Recording(models::ModelPtr inner) : inner_(std::move(inner)) {}
  torch::Tensor forward(const torch::Tensor& input) override {
    input_sums.push_back(input.sum().item<double>());
    auto probe = torch::mm(torch::ones({2, 2}), torch::ones({2, 2}));
    matmul_dtypes.push_back(probe.scalar_type());
    return inner_->forward(input);
  }
  std::vector<torch::Tensor> parameters() override { return inner_->parameters(); }
  models::NamedTensors state() override { return inner_->state(); }
  void load_state(const models::NamedTensors& state) override { inner_->load_state(state); }
  void set_training(bool training) override { inner_->set_training(training); }
  void to(torch::Device device) override { inner_->to(device); }
  models::ModelSummary summary(const std::vector<int64_t>& shape) override { return inner_->summary(shape); }
  std::string kind() const override { return "recording"; }

  std::vector<double> input_sums;
  std::vector<c10::ScalarType> matmul_dtypes;

 private:
  models::ModelPtr inner_;
};

TEST(Trainer, LearnsAndKeepsTheBestEpoch) {
  auto train = quadrant_images(512, 1), val = quadrant_images(256, 2);
  auto model = small_net();
  double before = accuracy_on(*model, val).at("accuracy");
  losses::Distiller ce({losses::LossTermOptions("ce")}, Task::classification);
  auto result = Trainer(quick(6), ce, "student").fit(*model, rows(train.x, train.y), validate_on(val));
  ASSERT_EQ(result.history.size(), 6u);
  EXPECT_LT(result.history.back().train_loss, result.history.front().train_loss);
  double best = 0;
  for (const auto& r : result.history) best = std::max(best, r.val.at("accuracy"));
  EXPECT_DOUBLE_EQ(result.history[result.best_epoch - 1].val.at("accuracy"), best);
  // The model holds the best epoch's weights after fit.
  EXPECT_DOUBLE_EQ(accuracy_on(*model, val).at("accuracy"), best);
  EXPECT_GT(best, 0.9);
  EXPECT_LT(before, 0.5);
  EXPECT_EQ(result.steps, 6 * 16);
  EXPECT_EQ(result.stop_reason, "epochs");
}

TEST(Trainer, SameSeedSameWeightsOtherSeedOtherWeights) {
  auto train = quadrant_images(256, 1), val = quadrant_images(64, 2);
  losses::Distiller ce({losses::LossTermOptions("ce")}, Task::classification);
  auto fit = [&](uint64_t seed) {
    auto model = small_net();
    Trainer(quick(2).seed(seed).augment(data::AugmentOptions().shift(2).flip(true)), ce, "student").fit(*model, rows(train.x, train.y), validate_on(val));
    return model->state();
  };
  auto a = fit(5), b = fit(5), c = fit(6);
  ASSERT_EQ(a.size(), b.size());
  bool all_equal_other_seed = true;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
    all_equal_other_seed = all_equal_other_seed && torch::equal(a[i].second, c[i].second);
  }
  EXPECT_FALSE(all_equal_other_seed);
}

TEST(Trainer, Bf16RunsTheForwardPassesInBfloat16AndStillLearns) {
  auto train = quadrant_images(512, 1), val = quadrant_images(256, 2);
  losses::Distiller ce({losses::LossTermOptions("ce")}, Task::classification);
  for (const std::string precision : {"fp32", "bf16"}) {
    Recording model(small_net());
    auto result = Trainer(quick(4).precision(precision), ce, "student").fit(model, rows(train.x, train.y), validate_on(val));
    ASSERT_FALSE(model.matmul_dtypes.empty());
    // The first 16 calls are the training steps of epoch 1; validation (predict) runs without autocast.
    auto expected = precision == "bf16" ? torch::kBFloat16 : torch::kFloat;
    for (int i = 0; i < 16; ++i) EXPECT_EQ(model.matmul_dtypes[i], expected) << precision << " step " << i;
    EXPECT_EQ(model.matmul_dtypes.back(), torch::kFloat) << "autocast must end with the step";
    EXPECT_GT(result.history[result.best_epoch - 1].val.at("accuracy"), 0.9) << precision;
  }
}

TEST(Trainer, LiveTeacherSeesTheSameAugmentedBatchAsTheStudent) {
  auto train = quadrant_images(128, 1), val = quadrant_images(64, 2);
  losses::Distiller kd({losses::LossTermOptions("kl").temperature(2)}, Task::classification);
  Recording teacher(small_net()), student(small_net());
  auto options = quick(2).augment(data::AugmentOptions().shift(2).flip(true));
  auto result = Trainer(options, kd, "student").fit(student, rows(train.x, train.y), validate_on(val), &teacher);
  ASSERT_EQ(result.steps, 8);
  // The teacher runs once per step, on the augmented batch the student gets in the same step.
  ASSERT_EQ(teacher.input_sums.size(), 8u);
  std::vector<double> student_steps;
  size_t per_epoch_calls = 4 + 1;  // four steps, then one validation pass (64 rows, one batch)
  for (size_t i = 0; i < student.input_sums.size(); ++i) {
    if (i % per_epoch_calls != 4) student_steps.push_back(student.input_sums[i]);
  }
  ASSERT_EQ(student_steps.size(), 8u);
  for (size_t i = 0; i < 8; ++i) EXPECT_DOUBLE_EQ(teacher.input_sums[i], student_steps[i]) << "step " << i;
  // The augmented batches are not the raw ones: the first batch's sum differs from every raw batch of 32.
  data::Batcher raw({train.x}, data::BatcherOptions().batch_size(32).seed(5));
  EXPECT_NE(raw.batch(0, 0)[0].sum().item<double>(), teacher.input_sums[0]);
}

TEST(Trainer, WithABankEpochETrainsOnViewEModVOfEachRow) {
  auto train = quadrant_images(96, 1), val = quadrant_images(32, 2);
  losses::Distiller kd({losses::LossTermOptions("kl").temperature(2)}, Task::classification);
  auto options = quick(5).augment(data::AugmentOptions().shift(2).flip(true));
  TrainData data = rows(train.x, train.y);
  auto augmenter = augmenter_for(options, data);
  // A bank of 2 views; its outputs only need the right shape here.
  auto bank = std::make_shared<SoftLabelBank>(96, 2, 4, BankStorage());
  for (int64_t v = 0; v < 2; ++v) bank->store(torch::arange(96), v, torch::zeros({96, 4}));
  data.bank = bank;
  Recording student(small_net());
  Trainer(options, kd, "student").fit(student, data, validate_on(val));
  data::Batcher batcher({train.x}, data::BatcherOptions().batch_size(32).seed(5));
  size_t call = 0;
  for (int64_t epoch = 0; epoch < 5; ++epoch) {
    for (int64_t b = 0; b < 3; ++b, ++call) {
      auto batch_rows = batcher.batch_rows(epoch, b);
      auto expected = augmenter.view(train.x.index_select(0, batch_rows), batch_rows, epoch % 2);
      ASSERT_LT(call, student.input_sums.size());
      EXPECT_NEAR(student.input_sums[call], expected.sum().item<double>(), 1e-3) << "epoch " << epoch << " batch " << b;
    }
    ++call;  // the epoch's validation pass
  }
}

TEST(Trainer, OutputsOfUnaugmentedRowsCannotTeachAugmentedOnes) {
  auto train = quadrant_images(64, 1);
  losses::Distiller kd({losses::LossTermOptions("kl")}, Task::classification);
  auto model = small_net();
  auto cache = torch::zeros({64, 4});
  KD_EXPECT_ERROR(Trainer(quick(1).augment(data::AugmentOptions().shift(1)), kd, "student")
                      .fit(*model, rows(train.x, train.y, cache), validate_on(train)),
                  "per-row augmentation with teacher outputs of unaugmented rows");
}

TEST(Trainer, MixupTrainsOnMixedBatchesWithBothLabels) {
  auto train = quadrant_images(512, 1), val = quadrant_images(256, 2);
  losses::Distiller ce({losses::LossTermOptions("ce")}, Task::classification);
  Recording model(small_net());
  auto result = Trainer(quick(4).augment(data::AugmentOptions().mixup(0.4)), ce, "student")
                    .fit(model, rows(train.x, train.y), validate_on(val));
  // The first step's input is the mixture the augmenter draws for (epoch 0, batch 0).
  data::Batcher batcher({train.x}, data::BatcherOptions().batch_size(32).seed(5));
  auto mixed = augmenter_for(quick(4).augment(data::AugmentOptions().mixup(0.4)), rows(train.x, train.y))
                   .mix(batcher.batch(0, 0)[0], 0, 0);
  EXPECT_NEAR(model.input_sums[0], mixed.x.sum().item<double>(), 1e-3);
  EXPECT_GT(result.history[result.best_epoch - 1].val.at("accuracy"), 0.9);
}

TEST(Trainer, UnsetEpochsBatchAndRateAreSizedToTheRows) {
  auto large = sized_for_rows(TrainOptions(), 54000);
  EXPECT_EQ(large.batch_size(), 128);
  EXPECT_EQ(large.epochs(), 10);
  EXPECT_DOUBLE_EQ(large.optimizer().lr(), 1e-3);
  // wine's 128 training rows: batches of 16, 1,500 steps, a larger rate.
  auto small = sized_for_rows(TrainOptions(), 128);
  EXPECT_EQ(small.batch_size(), 16);
  EXPECT_EQ(small.epochs(), 188);
  EXPECT_NEAR(small.optimizer().lr(), 1e-3 * std::sqrt(10000.0 / 128), 1e-12);
  auto tiny = sized_for_rows(TrainOptions(), 30);
  EXPECT_EQ(tiny.batch_size(), 8);
  EXPECT_EQ(tiny.epochs(), 375);
  EXPECT_DOUBLE_EQ(tiny.optimizer().lr(), 1e-2);
  EXPECT_DOUBLE_EQ(sized_for_rows(TrainOptions().optimizer(OptimizerOptions().name("sgd")), 128).optimizer().lr(), 0.05);
  // What the options set stays.
  auto set = sized_for_rows(TrainOptions().epochs(3).batch_size(64).optimizer(OptimizerOptions().lr(0.2)), 128);
  EXPECT_EQ(set.epochs(), 3);
  EXPECT_EQ(set.batch_size(), 64);
  EXPECT_DOUBLE_EQ(set.optimizer().lr(), 0.2);
  EXPECT_EQ(sized_for_rows(TrainOptions().steps(7), 128).epochs(), 0);
}

TEST(Trainer, ATieOfTheSelectionMetricGoesToTheLowerValidationNll) {
  auto train = quadrant_images(256, 1), val = quadrant_images(64, 2);
  losses::Distiller ce({losses::LossTermOptions("ce")}, Task::classification);
  auto model = small_net();
  auto result = Trainer(quick(8), ce, "student").fit(*model, rows(train.x, train.y), validate_on(val));
  const auto& best = result.history[static_cast<size_t>(result.best_epoch - 1)].val;
  for (const auto& r : result.history) {
    EXPECT_LE(r.val.at("accuracy"), best.at("accuracy")) << "epoch " << r.epoch;
    if (r.val.at("accuracy") == best.at("accuracy")) {
      EXPECT_GE(r.val.at("nll"), best.at("nll")) << "epoch " << r.epoch;
    }
  }
}

TEST(Trainer, CachedTeacherOutputsMeanTheTeacherNeverRuns) {
  auto train = quadrant_images(128, 1), val = quadrant_images(64, 2);
  losses::Distiller kd({losses::LossTermOptions("kl").temperature(2)}, Task::classification);
  Recording teacher(small_net());
  auto model = small_net();
  auto cache = predict(teacher, train.x);
  teacher.input_sums.clear();
  Trainer(quick(3), kd, "student").fit(*model, rows(train.x, train.y, cache), validate_on(val), &teacher);
  EXPECT_TRUE(teacher.input_sums.empty());
}

TEST(Trainer, PatienceStopsWhenValidationStopsImproving) {
  auto train = quadrant_images(64, 1), val = quadrant_images(64, 2);
  losses::Distiller ce({losses::LossTermOptions("ce")}, Task::classification);
  auto model = small_net();
  // A learning rate too small to change a prediction: epochs 2 and 3 are no better than epoch 1.
  auto options = quick(10).optimizer(OptimizerOptions().name("sgd").lr(1e-12)).patience(2);
  auto result = Trainer(options, ce, "student").fit(*model, rows(train.x, train.y), validate_on(val));
  EXPECT_EQ(result.stop_reason, "patience");
  EXPECT_EQ(result.history.size(), 3u);
  EXPECT_EQ(result.best_epoch, 1);
}

TEST(Trainer, DivergenceIsAnErrorThatNamesTheLearningRate) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto x = torch::randn({64, 4}, gen) * 100, y = torch::randn({64}, gen) * 1e6;
  torch::manual_seed(0);
  auto model = models::build_zoo_model(models::ZooSpec().arch("mlp").hidden({16}), {4}, 1);
  losses::Distiller mse({losses::LossTermOptions("mse").target("labels")}, Task::regression);
  auto options = quick(20).optimizer(OptimizerOptions().name("sgd").lr(1e6));
  auto validate = [&](models::Model& m) { return report::regression_metrics(predict(m, x), y); };
  // Three restarts, each with a tenth of the learning rate, all diverge: then an error.
  KD_EXPECT_ERROR(Trainer(options, mse, "student").fit(*model, rows(x, y), validate),
                  "student: the loss became inf at epoch 1 step 2 (learning rate 1000, after 3 restarts with a tenth "
                  "of it); lower the learning rate or set grad_clip");
  KD_EXPECT_ERROR(Trainer(options.divergence_retries(0), mse, "student").fit(*model, rows(x, y), validate),
                  "at epoch 1 step 1 (learning rate 1e+06); lower the learning rate");
}

// An absurd learning rate: the trainer goes back to the epoch's start with a tenth of it until the
// loss stays finite, records each restart, and does the same again from the same seed.
TEST(Trainer, DivergenceRestartsTheEpochWithATenthOfTheLearningRate) {
  auto train = quadrant_images(256, 1), val = quadrant_images(64, 2);
  losses::Distiller ce({losses::LossTermOptions("ce")}, Task::classification);
  auto options = quick(4).optimizer(OptimizerOptions().name("sgd").lr(100)).schedule(ScheduleOptions().name("none"));
  auto fit = [&] {
    auto model = small_net();
    auto result = Trainer(options, ce, "student").fit(*model, rows(train.x, train.y), validate_on(val));
    return std::make_pair(result, accuracy_on(*model, val).at("accuracy"));
  };
  auto [result, accuracy] = fit();
  ASSERT_FALSE(result.divergences.empty());
  ASSERT_LE(result.divergences.size(), 3u);
  EXPECT_EQ(result.divergences[0].lr, 100);
  EXPECT_DOUBLE_EQ(result.divergences[0].lr_after, 10);
  ASSERT_EQ(result.history.size(), 4u);
  for (const auto& r : result.history) EXPECT_TRUE(std::isfinite(r.train_loss)) << r.epoch;
  EXPECT_DOUBLE_EQ(result.history.back().lr, 100 * std::pow(0.1, static_cast<double>(result.divergences.size())));
  EXPECT_GT(accuracy, 0.5);
  auto [again, accuracy_again] = fit();
  ASSERT_EQ(again.divergences.size(), result.divergences.size());
  EXPECT_EQ(again.divergences.back().step, result.divergences.back().step);
  EXPECT_EQ(again.history.back().train_loss, result.history.back().train_loss);
  EXPECT_EQ(accuracy_again, accuracy);
}

// Checkpoints carry a checksum and keep the one before them: a corrupt latest checkpoint is detected
// and --resume goes on from the previous one (to the same result); with both bad it is an error.
TEST(Trainer, ACorruptCheckpointFallsBackToThePreviousOne) {
  auto train = quadrant_images(128, 1), val = quadrant_images(64, 2);
  losses::Distiller ce({losses::LossTermOptions("ce")}, Task::classification);
  test::TempDir dir;
  std::string path = (dir / "student.ckpt").string();
  auto options = quick(3).checkpoint(path);
  auto model = small_net();
  auto whole = Trainer(options, ce, "student").fit(*model, rows(train.x, train.y), validate_on(val));
  ASSERT_TRUE(std::filesystem::exists(path + ".prev"));
  std::string bytes = read_file(path);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x5a);
  write_file_atomic(path, bytes);
  auto resumed_model = small_net();
  auto resumed = Trainer(options.resume(true), ce, "student").fit(*resumed_model, rows(train.x, train.y), validate_on(val));
  ASSERT_EQ(resumed.history.size(), 3u);
  EXPECT_EQ(resumed.history.back().train_loss, whole.history.back().train_loss);
  EXPECT_EQ(accuracy_on(*resumed_model, val).at("accuracy"), accuracy_on(*model, val).at("accuracy"));
  // The latest truncated and the one before it corrupt: an error naming both.
  bytes = read_file(path);
  write_file_atomic(path, bytes.substr(0, bytes.size() - 5));
  write_file_atomic(path + ".prev", "not a checkpoint");
  KD_EXPECT_ERROR(Trainer(options.resume(true), ce, "student").fit(*small_net(), rows(train.x, train.y), validate_on(val)),
                  "student.ckpt: cannot resume from it: it is truncated or not a kdistill checkpoint (no trailer); nor "
                  "from " + path + ".prev: it is truncated or not a kdistill checkpoint (no trailer)");
}

TEST(Trainer, TeacherTermsWithoutATeacherAreAnError) {
  auto train = quadrant_images(32, 1);
  losses::Distiller kd({losses::LossTermOptions("kl")}, Task::classification);
  auto model = small_net();
  KD_EXPECT_ERROR(Trainer(quick(1), kd, "student").fit(*model, rows(train.x, train.y), validate_on(train)),
                  "student: the loss terms need a teacher, but there is none");
}

}  // namespace
}  // namespace kd::train
