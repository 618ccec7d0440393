#include "kd/models/zoo.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "data/python_helper.h"
#include "kd/util/error.h"
#include "kd/util/fs.h"
#include "test_util.h"

namespace kd::models {
namespace {

using test::batch_shape;
using test::error_of;
using test::batch_shape;

#define EXPECT_ERROR_HAS(call, text)                               \
  do {                                                             \
    std::string message_ = error_of([&] { call; });                \
    EXPECT_NE(message_.find(text), std::string::npos) << message_; \
  } while (0)

const std::vector<int64_t> kImage = {1, 28, 28};
const std::vector<int64_t> kFlat = {784};

ModelPtr build(const ZooSpec& spec, const std::vector<int64_t>& shape = kImage, int64_t outputs = 10) {
  return build_zoo_model(spec, shape, outputs, "student.model");
}

struct FamilyCase {
  std::string label;
  ZooSpec spec;
};

std::vector<FamilyCase> every_family() {
  return {
      {"mlp", ZooSpec().arch("mlp").hidden({64, 32})},
      {"mlp_bn_dropout_gelu",
       ZooSpec().arch("mlp").hidden({64}).batch_norm(true).dropout(0.2).activation("gelu")},
      {"mlp_empty_hidden", ZooSpec().arch("mlp")},
      {"cnn", ZooSpec().arch("cnn").channels({8, 16})},
      {"cnn_bn_avg_head",
       ZooSpec().arch("cnn").channels({8}).batch_norm(true).pool("avg").hidden({20}).kernel(5)},
      {"vgg_bn", ZooSpec().arch("vgg").channels({4, 8}).batch_norm(true)},
      {"resnet8", ZooSpec().arch("resnet").depth(8).width(4).activation("silu")},
      {"linear", ZooSpec().arch("linear")},
  };
}

// models::linear's oneDNN path (a product of 128 x 300 x 400 = 15M multiply-adds) against
// torch::linear, with and without a bias: outputs and all three gradients.
TEST(Zoo, OneDnnLinearMatchesTorchLinear) {
  torch::manual_seed(5);
  for (bool with_bias : {true, false}) {
    auto x = torch::randn({128, 300}), w = torch::randn({400, 300}) / 17, b = torch::randn({400});
    auto xa = x.clone().requires_grad_(true), wa = w.clone().requires_grad_(true), ba = b.clone().requires_grad_(true);
    auto xb = x.clone().requires_grad_(true), wb = w.clone().requires_grad_(true), bb = b.clone().requires_grad_(true);
    auto fast = linear(xa, wa, with_bias ? ba : torch::Tensor());
    auto reference = torch::linear(xb, wb, with_bias ? bb : torch::Tensor());
    EXPECT_TRUE(torch::allclose(fast, reference, 1e-4, 1e-4));
    auto upstream = torch::randn({128, 400});
    fast.backward(upstream);
    reference.backward(upstream);
    EXPECT_TRUE(torch::allclose(xa.grad(), xb.grad(), 1e-4, 1e-3));
    EXPECT_TRUE(torch::allclose(wa.grad(), wb.grad(), 1e-4, 1e-3));
    if (with_bias) {
      EXPECT_TRUE(torch::allclose(ba.grad(), bb.grad(), 1e-4, 1e-3));
    }
  }
}

// The oneDNN path on a transposed (non-contiguous) input that needs no gradient, and twice
// differentiated (create_graph): d/dx of sum((dL/dx)^2) against torch::linear's, in float64 terms.
TEST(Zoo, OneDnnLinearTransposedInputAndSecondDerivative) {
  torch::manual_seed(6);
  auto x_t = torch::randn({300, 96});
  auto w = torch::randn({200, 300}) / 17, b = torch::randn({200});
  auto wa = w.clone().requires_grad_(true), wb = w.clone().requires_grad_(true);
  auto fast = linear(x_t.t(), wa, b);
  auto reference = torch::linear(x_t.t(), wb, b);
  EXPECT_TRUE(torch::allclose(fast, reference, 1e-4, 1e-4));
  fast.pow(2).sum().backward();
  reference.pow(2).sum().backward();
  EXPECT_TRUE(torch::allclose(wa.grad(), wb.grad(), 1e-3, 1e-3));

  auto x = torch::randn({96, 300});
  auto xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
  auto grad_a = torch::autograd::grad({linear(xa, w, b).tanh().sum()}, {xa}, {}, true, true)[0];
  auto grad_b = torch::autograd::grad({torch::linear(xb, w, b).tanh().sum()}, {xb}, {}, true, true)[0];
  EXPECT_TRUE(torch::allclose(grad_a, grad_b, 1e-4, 1e-4));
  auto second_a = torch::autograd::grad({grad_a.pow(2).sum()}, {xa})[0];
  auto second_b = torch::autograd::grad({grad_b.pow(2).sum()}, {xb})[0];
  EXPECT_GT(second_b.abs().max().item<double>(), 1e-3);
  EXPECT_TRUE(torch::allclose(second_a, second_b, 1e-4, 1e-3));
}

// A product never writes into its operands. With one row, bias.expand({1, out}) is contiguous and is
// the bias itself: the oneDNN path once accumulated x W^T into the parameter, so that every later
// output of the layer was wrong (a TorchScript teacher measured at batch 1 lost 5 points).
TEST(Zoo, OneDnnLinearLeavesItsOperandsUnchanged) {
  torch::manual_seed(7);
  auto w = torch::randn({1200, 784}) / 28, b = torch::randn({1200});
  auto w_before = w.clone(), b_before = b.clone();
  for (int64_t rows : {1, 2, 3, 64, 1024}) {
    torch::NoGradGuard no_grad;
    auto x = torch::randn({rows, 784});
    auto x_before = x.clone();
    auto first = linear(x, w, b);
    EXPECT_TRUE(torch::allclose(first, torch::linear(x, w_before, b_before), 1e-4, 1e-4)) << rows << " rows";
    EXPECT_TRUE(torch::allclose(linear(x, w, b), first, 0, 0)) << rows << " rows: a second call differs";
    EXPECT_TRUE(torch::equal(w, w_before)) << rows << " rows";
    EXPECT_TRUE(torch::equal(b, b_before)) << rows << " rows";
    EXPECT_TRUE(torch::equal(x, x_before)) << rows << " rows";
  }
}

// Inference at any batch size (the latency measurement runs batch 1) leaves every model's state as it was.
TEST(Zoo, InferenceLeavesTheStateUnchanged) {
  torch::manual_seed(8);
  auto cases = every_family();
  // Layers large enough for the oneDNN product at batch 1 (784 x 1200 and 1200 x 1200), outside a fused
  // dense chain (dropout, batch norm), as the zoo's MLP teachers have them.
  cases.push_back({"mlp_teacher", ZooSpec().arch("mlp").hidden({1200, 1200}).dropout(0.3)});
  cases.push_back({"mlp_bn_wide", ZooSpec().arch("mlp").hidden({256}).batch_norm(true)});
  cases.push_back({"cnn_wide_head", ZooSpec().arch("cnn").channels({8}).hidden({512})});
  for (const auto& c : cases) {
    for (const auto& shape : {kImage, kFlat}) {
      auto model = build_zoo_model(c.spec, shape, 10);
      model->set_training(false);
      std::vector<torch::Tensor> before;
      for (const auto& [name, tensor] : model->state()) before.push_back(tensor.clone());
      torch::NoGradGuard no_grad;
      for (int64_t rows : {1, 2, 5}) {
        std::vector<int64_t> batch = {rows};
        batch.insert(batch.end(), shape.begin(), shape.end());
        model->forward(torch::randn(batch));
      }
      auto after = model->state();
      for (size_t i = 0; i < after.size(); ++i) {
        EXPECT_TRUE(torch::equal(after[i].second, before[i])) << c.label << ": " << after[i].first << " changed";
      }
    }
  }
}

TEST(Zoo, OutputShapesOnImageAndFlatInput) {
  torch::manual_seed(0);
  for (const auto& c : every_family()) {
    for (const auto& shape : {kImage, kFlat}) {
      auto model = build(c.spec, shape, 7);
      model->set_training(false);
      torch::Tensor out = model->forward(torch::randn(batch_shape(5, shape)));
      EXPECT_EQ(out.sizes(), (std::vector<int64_t>{5, 7})) << c.label;
      EXPECT_TRUE(torch::isfinite(out).all().item<bool>()) << c.label;
      EXPECT_EQ(model->kind(), c.spec.arch());
    }
  }
}

TEST(Zoo, ConvolutionalFamiliesViewSquareFlatInputAsImage) {
  // 784 flat features are the 28x28 image row by row: same state, same outputs.
  for (const auto& spec :
       {ZooSpec().arch("cnn").channels({4, 8}), ZooSpec().arch("resnet").depth(8).width(4)}) {
    auto image_model = build(spec, kImage);
    auto flat_model = build(spec, kFlat);
    flat_model->load_state(image_model->state());
    image_model->set_training(false);
    flat_model->set_training(false);
    torch::Tensor x = torch::randn({3, 1, 28, 28});
    EXPECT_TRUE(torch::equal(image_model->forward(x), flat_model->forward(x.reshape({3, 784}))));
  }
}

TEST(Zoo, ParamsMatchPyTorch) {
  // Numbers from tests/fixtures/zoo_param_counts.py (real torch.nn modules, sum of p.numel()).
  struct Case {
    ZooSpec spec;
    std::vector<int64_t> shape;
    int64_t expected;
  };
  std::vector<Case> cases = {
      // 784*1200+1200 + 1200*1200+1200 + 1200*10+10
      {ZooSpec().arch("mlp").hidden({1200, 1200}), kImage, 2395210},
      // fc1 without bias (BN follows): 784*100 + BN 2*100 + head 100*10+10
      {ZooSpec().arch("mlp").hidden({100}).batch_norm(true), kFlat, 79610},
      // conv1 3*3*1*16+16 + conv2 3*3*16*32+32 + head 32*10+10 = 160 + 4640 + 330
      {ZooSpec().arch("cnn").channels({16, 32}), kImage, 5130},
      // 5*5*3*32 + 2*32 + 5*5*32*64 + 2*64 + fc1 64*50 + 2*50 + head 50*10+10 (no bias before BN)
      {ZooSpec().arch("cnn").channels({32, 64}).batch_norm(true).kernel(5).hidden({50}), {3, 32, 32}, 57602},
      // two convs a stage: 3*3*1*16+16 + 3*3*16*16+16 + 3*3*16*32+32 + 3*3*32*32+32 + 32*10+10
      {ZooSpec().arch("vgg").channels({16, 32}), kImage, 16698},
      // the same without conv biases, with BN (2 per channel) on 3 input channels
      {ZooSpec().arch("vgg").channels({16, 32}).batch_norm(true), {3, 32, 32}, 17082},
      // ResNet-20 with option B shortcuts; option A's well-known 269,722 + projections 16*32+2*32 +
      // 32*64+2*64
      {ZooSpec().arch("resnet").depth(20).width(16), {3, 32, 32}, 272474},
      {ZooSpec().arch("resnet").depth(8).width(16), kImage, 77754},
      // 784*10+10
      {ZooSpec().arch("linear"), kImage, 7850},
  };
  for (const auto& c : cases) {
    auto model = build(c.spec, c.shape);
    EXPECT_EQ(count_params(*model), c.expected) << to_json(c.spec).dump();
    EXPECT_EQ(model->summary(c.shape).params, c.expected) << to_json(c.spec).dump();
  }
}

TEST(Zoo, MacsByHandForMlp) {
  auto model = build(ZooSpec().arch("mlp").hidden({1200, 1200}));
  ModelSummary summary = model->summary(kImage);
  // 784*1200 + 1200*1200 + 1200*10
  EXPECT_EQ(summary.macs, 940800 + 1440000 + 12000);
  // flatten, fc1, fc1_act, fc2, fc2_act, head
  ASSERT_EQ(summary.layers.size(), 6u);
  EXPECT_NE(summary.layers[1].find("fc1"), std::string::npos);
  EXPECT_NE(summary.layers[1].find("Linear"), std::string::npos);
  EXPECT_NE(summary.layers[1].find("[1200]"), std::string::npos);
  EXPECT_NE(summary.layers[1].find("942000"), std::string::npos);  // 784*1200+1200 params
  EXPECT_NE(summary.layers[5].find("head"), std::string::npos);
}

TEST(Zoo, MacsByHandForSmallCnn) {
  auto model = build(ZooSpec().arch("cnn").channels({16, 32}).batch_norm(true));
  ModelSummary summary = model->summary(kImage);
  // conv1: 3*3*1*16 * 28*28 = 112896; conv2: 3*3*16*32 * 14*14 = 903168; head 32*10 = 320; BN/act/pool 0.
  EXPECT_EQ(summary.macs, 112896 + 903168 + 320);
  // conv1 conv1_bn conv1_act conv1_pool conv2 conv2_bn conv2_act conv2_pool gap head
  ASSERT_EQ(summary.layers.size(), 10u);
  EXPECT_NE(summary.layers[0].find("Conv2d"), std::string::npos) << summary.layers[0];
  EXPECT_NE(summary.layers[0].find("[16, 28, 28]"), std::string::npos) << summary.layers[0];
  EXPECT_NE(summary.layers[0].find("112896"), std::string::npos) << summary.layers[0];
  EXPECT_NE(summary.layers[3].find("MaxPool2d"), std::string::npos) << summary.layers[3];
  EXPECT_NE(summary.layers[3].find("[16, 14, 14]"), std::string::npos) << summary.layers[3];
  EXPECT_NE(summary.layers[7].find("[32, 7, 7]"), std::string::npos) << summary.layers[7];
  EXPECT_NE(summary.layers[8].find("GlobalAvgPool"), std::string::npos) << summary.layers[8];
}

TEST(Zoo, MacsOfResNetCountStridedConvsAndShortcuts) {
  auto model = build(ZooSpec().arch("resnet").depth(8).width(4), {1, 8, 8}, 3);
  ModelSummary summary = model->summary({1, 8, 8});
  int64_t expected = 9 * 1 * 4 * 64                                   // stem 8x8
                     + 2 * 9 * 4 * 4 * 64                             // layer1_0 convs 8x8
                     + 9 * 4 * 8 * 16 + 9 * 8 * 8 * 16 + 4 * 8 * 16   // layer2_0 4x4 + 1x1 shortcut
                     + 9 * 8 * 16 * 4 + 9 * 16 * 16 * 4 + 8 * 16 * 4  // layer3_0 2x2
                     + 16 * 3;                                        // head
  EXPECT_EQ(summary.macs, expected);
  EXPECT_ERROR_HAS(model->summary({2, 8, 8}), "summary: layer stem expects input [1, H, W], got [2, 8, 8]");
}

TEST(Zoo, WidthMultiplierScalesEveryFamily) {
  // hidden 100 * 2 = 200: 784*200+200 + 200*10+10
  EXPECT_EQ(count_params(*build(ZooSpec().arch("mlp").hidden({100}).width_multiplier(2.0))), 159010);
  // channels {16, 32} * 0.5 = {8, 16}: 9*8+8 + 9*8*16+16 + 16*10+10 = 80 + 1168 + 170
  EXPECT_EQ(count_params(*build(ZooSpec().arch("cnn").channels({16, 32}).width_multiplier(0.5))), 1418);
  // width 16 * 0.5 = ResNet-8 of width 8; conv params scale by ~1/4
  auto full = count_params(*build(ZooSpec().arch("resnet").depth(8).width(16)));
  auto half = count_params(*build(ZooSpec().arch("resnet").depth(8).width(16).width_multiplier(0.5)));
  EXPECT_EQ(half, count_params(*build(ZooSpec().arch("resnet").depth(8).width(8))));
  EXPECT_NEAR(static_cast<double>(half) / full, 0.25, 0.02);
  // Sizes never round to zero: 100 * 0.001 -> 1.
  EXPECT_EQ(count_params(*build(ZooSpec().arch("mlp").hidden({100}).width_multiplier(0.001))),
            784 + 1 + 10 + 10);
}

TEST(Zoo, StateNamesAreStableAndInStateDictOrder) {
  auto model = build(ZooSpec().arch("cnn").channels({4}).batch_norm(true).hidden({6}));
  std::vector<std::string> names;
  for (const auto& [name, tensor] : model->state()) names.push_back(name);
  std::vector<std::string> expected = {"conv1.weight",         "conv1_bn.weight",
                                       "conv1_bn.bias",        "conv1_bn.running_mean",
                                       "conv1_bn.running_var", "conv1_bn.num_batches_tracked",
                                       "fc1.weight",           "fc1_bn.weight",
                                       "fc1_bn.bias",          "fc1_bn.running_mean",
                                       "fc1_bn.running_var",   "fc1_bn.num_batches_tracked",
                                       "head.weight",          "head.bias"};
  EXPECT_EQ(names, expected);

  auto resnet = build(ZooSpec().arch("resnet").depth(8).width(4));
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, tensor] : resnet->state()) shapes[name] = tensor.sizes().vec();
  EXPECT_EQ(shapes.at("stem.weight"), (std::vector<int64_t>{4, 1, 3, 3}));
  EXPECT_EQ(shapes.at("layer2_0.conv1.weight"), (std::vector<int64_t>{8, 4, 3, 3}));
  EXPECT_EQ(shapes.at("layer2_0.shortcut.weight"), (std::vector<int64_t>{8, 4, 1, 1}));
  EXPECT_EQ(shapes.at("layer3_0.shortcut_bn.running_var"), (std::vector<int64_t>{16}));
  EXPECT_EQ(shapes.count("layer1_0.shortcut.weight"), 0u);  // identity where the shape is kept
}

TEST(Zoo, InitIsDeterministicGivenSeed) {
  auto spec = ZooSpec().arch("resnet").depth(8).width(4);
  torch::manual_seed(42);
  auto a = build(spec);
  torch::manual_seed(42);
  auto b = build(spec);
  auto sa = a->state(), sb = b->state();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(torch::equal(sa[i].second, sb[i].second)) << sa[i].first;
}

TEST(Zoo, StateRoundTripGivesIdenticalOutputs) {
  for (const auto& c : every_family()) {
    torch::manual_seed(1);
    auto source = build(c.spec);
    // A training-mode forward moves the BN running statistics away from their initial values.
    source->set_training(true);
    source->forward(torch::randn({16, 1, 28, 28}) * 3 + 1);
    torch::manual_seed(2);
    auto target = build(c.spec);
    target->load_state(source->state());
    source->set_training(false);
    target->set_training(false);
    torch::Tensor x = torch::randn({4, 1, 28, 28});
    EXPECT_TRUE(torch::equal(source->forward(x), target->forward(x))) << c.label;
  }
}

TEST(Zoo, LoadStateRefusesMismatches) {
  auto model = build(ZooSpec().arch("mlp").hidden({32}));
  auto other = build(ZooSpec().arch("mlp").hidden({16}));
  EXPECT_ERROR_HAS(
      model->load_state(other->state()),
      "load_state: \"fc1.weight\": shape [16, 784] in the state, but the mlp model has [32, 784]");

  NamedTensors missing = model->state();
  missing.pop_back();
  EXPECT_ERROR_HAS(model->load_state(missing), "load_state: missing tensor \"head.bias\" (shape [10])");

  NamedTensors extra = model->state();
  extra.emplace_back("fc9.weight", torch::zeros({2}));
  EXPECT_ERROR_HAS(model->load_state(extra), "unexpected tensor \"fc9.weight\"");

  // A failed load leaves the model untouched.
  torch::Tensor before = model->state()[0].second.clone();
  NamedTensors partial = other->state();
  EXPECT_ERROR_HAS(model->load_state(partial), "shape");
  EXPECT_TRUE(torch::equal(before, model->state()[0].second));
}

TEST(Zoo, ForwardRefusesWrongInputShape) {
  auto model = build(ZooSpec().arch("mlp").hidden({8}));
  EXPECT_ERROR_HAS(model->forward(torch::randn({2, 784})),
                   "mlp model: input has shape [2, 784], expected [N, 1, 28, 28]");
}

TEST(Zoo, ValidateNamesTheField) {
  auto message = [](const ZooSpec& spec, const std::vector<int64_t>& shape = kImage, int64_t outputs = 10) {
    return error_of([&] { validate(spec, shape, outputs, "student.model"); });
  };
  EXPECT_EQ(message(ZooSpec().arch("mpl")),
            "student.model.arch: unknown architecture \"mpl\"; did you mean \"mlp\"? "
            "(expected mlp, cnn, vgg, resnet, linear, textcnn, transformer or bigru)");
  EXPECT_EQ(message(ZooSpec().arch("lstm")),
            "student.model.arch: unknown architecture \"lstm\" (expected mlp, cnn, vgg, resnet, linear, textcnn, "
            "transformer or bigru)");
  EXPECT_EQ(message(ZooSpec().activation("rleu")),
            "student.model.activation: unknown activation \"rleu\"; did you mean \"relu\"? "
            "(expected relu, gelu, tanh, leaky_relu or silu)");
  EXPECT_EQ(message(ZooSpec().hidden({64, -3})),
            "student.model.hidden[1]: a layer size must be positive, got -3");
  EXPECT_EQ(message(ZooSpec().arch("cnn").channels({0})),
            "student.model.channels[0]: a channel count must be positive, got 0");
  EXPECT_EQ(message(ZooSpec().arch("resnet").depth(18)),
            "student.model.depth: a CIFAR ResNet has depth 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got 18; "
            "did you mean 20?");
  EXPECT_EQ(message(ZooSpec().arch("resnet").depth(2)).find("got 2; did you mean 8?") != std::string::npos,
            true);
  EXPECT_EQ(message(ZooSpec().arch("resnet").width(0)), "student.model.width: must be positive, got 0");
  EXPECT_EQ(message(ZooSpec().dropout(1.0)), "student.model.dropout: must be in [0, 1), got 1");
  EXPECT_EQ(message(ZooSpec().width_multiplier(-1)),
            "student.model.width_multiplier: must be a positive number, got -1");
  EXPECT_EQ(message(ZooSpec().arch("cnn").channels({8}).pool("mean")),
            "student.model.pool: unknown pooling \"mean\"; did you mean \"max\"? (expected max or avg)");
  EXPECT_EQ(
      message(ZooSpec().arch("cnn").channels({8}).kernel(4)),
      "student.model.kernel: must be an odd size >= 1 (so that same padding keeps the image size), got 4");
  EXPECT_EQ(message(ZooSpec().arch("cnn")),
            "student.model.channels: arch cnn needs at least one stage, e.g. [32, 64]");
  EXPECT_EQ(message(ZooSpec().arch("cnn").channels({1, 1, 1, 1, 1})),
            "student.model.channels: each of the 5 stages halves the image, but a 28x28 input is down to 1x1 "
            "before stage 5; use at most 4 stages or a larger input");
  EXPECT_EQ(
      message(ZooSpec().arch("cnn").channels({8}), {30}),
      "student.model.arch: cnn needs image input [channels, height, width]; got 30 flat features, not a "
      "perfect square to view as 1 x s x s");
  EXPECT_EQ(message(ZooSpec().arch("linear").hidden({32})),
            "student.model.hidden: arch linear has no hidden layers (got [32]); use arch mlp, cnn, vgg, resnet, "
            "textcnn, transformer or bigru");
  EXPECT_EQ(message(ZooSpec().arch("mlp").channels({16})),
            "student.model.channels: arch mlp has no stages (channels) (got [16]); use arch cnn, vgg, textcnn or bigru");
  EXPECT_EQ(message(ZooSpec(), {28, 28}),
            "student.model: input shape [28, 28] is neither [features] nor [channels, height, width]");
  EXPECT_EQ(message(ZooSpec(), kImage, 0), "student.model: the model needs at least 1 output, got 0");
  // Allowed: an mlp without hidden layers is the linear model.
  EXPECT_EQ(message(ZooSpec().arch("mlp")), "");
  EXPECT_EQ(count_params(*build(ZooSpec().arch("mlp"))), count_params(*build(ZooSpec().arch("linear"))));
  // build_zoo_model validates too.
  EXPECT_ERROR_HAS(build(ZooSpec().arch("resnet").depth(21)), "student.model.depth:");
}

TEST(Zoo, JsonRoundTripAndErrors) {
  auto spec = ZooSpec()
                  .arch("cnn")
                  .channels({16, 32})
                  .hidden({64})
                  .activation("gelu")
                  .dropout(0.25)
                  .batch_norm(true)
                  .kernel(5)
                  .pool("avg")
                  .depth(32)
                  .width(8)
                  .width_multiplier(1.5);
  nlohmann::json json = to_json(spec);
  EXPECT_EQ(json.size(), 19u);
  ZooSpec back = zoo_spec_from_json(json);
  EXPECT_EQ(to_json(back), json);
  EXPECT_EQ(back.channels(), (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(back.width_multiplier(), 1.5);

  ZooSpec partial = zoo_spec_from_json(nlohmann::json::parse(R"({"arch": "mlp", "hidden": [32, 16.0]})"));
  EXPECT_EQ(partial.hidden(), (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(partial.activation(), "relu");

  auto message = [](const std::string& text) {
    return error_of([&] { zoo_spec_from_json(nlohmann::json::parse(text), "student.model"); });
  };
  EXPECT_EQ(
      message(R"({"hiden": [32]})").rfind("student.model.hiden: unknown key; did you mean \"hidden\"?", 0),
      0u);
  EXPECT_EQ(message(R"({"hidden": 32})"),
            "student.model.hidden: expected a list of integers such as [64, 32], got 32");
  EXPECT_EQ(message(R"({"hidden": [32, 1.5]})"), "student.model.hidden[1]: expected an integer, got 1.5");
  EXPECT_EQ(message(R"({"batch_norm": "yes"})"),
            "student.model.batch_norm: expected true or false, got \"yes\"");
  EXPECT_EQ(message(R"({"arch": 3})"), "student.model.arch: expected a name, got 3");
  EXPECT_EQ(message(R"([1, 2])").rfind("student.model: expected a mapping", 0), 0u);
}

TEST(Zoo, MlpLearnsSeparableProblem) {
  torch::manual_seed(0);
  // 256 points in 10 dims; class = which side of a fixed hyperplane, with a margin.
  torch::Tensor x = torch::randn({256, 10});
  torch::Tensor w = torch::randn({10});
  torch::Tensor score = x.matmul(w);
  torch::Tensor keep = score.abs() > 0.3;
  x = x.index({keep});
  torch::Tensor y = (score.index({keep}) > 0).to(torch::kLong);

  auto model = build(ZooSpec().arch("mlp").hidden({32}), {10}, 2);
  model->set_training(true);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-2));
  float first_loss = 0, last_loss = 0;
  for (int step = 0; step < 50; ++step) {
    optimizer.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    optimizer.step();
    if (step == 0) first_loss = loss.item<float>();
    last_loss = loss.item<float>();
  }
  model->set_training(false);
  double accuracy = (model->forward(x).argmax(1) == y).to(torch::kDouble).mean().item<double>();
  EXPECT_GT(accuracy, 0.9);
  EXPECT_LT(last_loss, 0.5 * first_loss);
}

TEST(Zoo, TorchScriptSourceNamesStateTensors) {
  std::string source = torchscript_source(ZooSpec().arch("mlp").hidden({8}).batch_norm(true), {1, 4, 4}, 3);
  EXPECT_EQ(source,
            "def forward(self, x):\n"
            "    x = torch.flatten(x, 1)\n"
            "    x = torch.mm(x, self.fc1_weight.t())\n"
            "    if self.training:\n"
            "        self.fc1_bn_num_batches_tracked.add_(1)\n"
            "    x = torch.batch_norm(x, self.fc1_bn_weight, self.fc1_bn_bias, self.fc1_bn_running_mean, "
            "self.fc1_bn_running_var, self.training, 0.1, 1e-05, False)\n"
            "    x = torch.relu(x)\n"
            "    x = torch.addmm(self.head_bias, x, self.head_weight.t())\n"
            "    return x\n");
  std::string resnet = torchscript_source(ZooSpec().arch("resnet").depth(8).width(4), {64}, 2);
  EXPECT_NE(resnet.find("    x = torch.reshape(x, [-1, 1, 8, 8])\n"), std::string::npos) << resnet;
  EXPECT_NE(resnet.find("    s = torch.conv2d(s, self.layer2_0_shortcut_weight, None, [2, 2], [0, 0])\n"),
            std::string::npos)
      << resnet;
  EXPECT_NE(resnet.find("    x = torch.relu(y + s)\n"), std::string::npos) << resnet;
  EXPECT_NE(resnet.find("    x = torch.relu(y + x)\n"), std::string::npos) << resnet;
  // Every attribute the source reads is a state() tensor.
  auto model = build_zoo_model(ZooSpec().arch("resnet").depth(8).width(4), {64}, 2);
  for (const auto& [name, tensor] : model->state()) {
    EXPECT_NE(resnet.find("self." + torchscript_attribute_name(name)), std::string::npos) << name;
  }
}

}  // namespace
}  // namespace kd::models

namespace kd::models {
namespace {

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return a.sizes() == b.sizes() ? (a - b).abs().max().item<double>() : 1e9;
}

// Taps are the summary's layer names; with taps the network runs step by step (no tapped batch norm +
// ReLU + max pool, no dense chain), to the same outputs.
TEST(ZooTaps, TapsAreTheLayersAndLeaveTheOutputsAsTheyWere) {
  torch::manual_seed(5);
  auto model = build_zoo_model(ZooSpec().arch("cnn").channels({4, 6}).batch_norm(true).hidden({8}), {1, 12, 12}, 3);
  model->set_training(false);
  EXPECT_EQ(model->tap_names(), (std::vector<std::string>{"conv1", "conv1_bn", "conv1_act", "conv1_pool", "conv2",
                                                          "conv2_bn", "conv2_act", "conv2_pool", "gap", "fc1",
                                                          "fc1_bn", "fc1_act", "head"}));
  torch::Tensor x = torch::randn({5, 1, 12, 12});
  torch::Tensor plain = model->forward(x);
  auto tapped = model->forward_taps(x, {"conv1_pool", "conv2_pool", "gap", "head", "output"});
  EXPECT_LT(max_abs_diff(tapped.output, plain), 1e-5);
  ASSERT_EQ(tapped.taps.size(), 5u);
  EXPECT_EQ(tapped.taps[0].sizes(), (std::vector<int64_t>{5, 4, 6, 6}));
  EXPECT_LT(max_abs_diff(tapped.taps[2], tapped.taps[1].mean({2, 3})), 1e-6);  // gap is conv2_pool's mean
  EXPECT_EQ(max_abs_diff(tapped.taps[3], tapped.output), 0.0);
  EXPECT_EQ(max_abs_diff(tapped.taps[4], tapped.output), 0.0);
  auto inner = model->forward_taps(x, {"conv1_bn", "conv1_act", "conv1_pool"});
  EXPECT_LT(max_abs_diff(inner.output, plain), 1e-5);
  EXPECT_LT(max_abs_diff(inner.taps[1], inner.taps[0].relu()), 1e-6);
  EXPECT_LT(max_abs_diff(inner.taps[2], tapped.taps[0]), 1e-5);
  // In training mode the taps carry the graph back to the weights.
  model->set_training(true);
  auto trained = model->forward_taps(x, {"conv1_act"});
  trained.taps[0].sum().backward();
  auto conv1_weight = model->state().front().second;
  ASSERT_TRUE(conv1_weight.grad().defined());
  EXPECT_GT(conv1_weight.grad().abs().sum().item<double>(), 0.0);
}

TEST(ZooTaps, MlpAndResidualBlocks) {
  torch::manual_seed(6);
  auto mlp = build_zoo_model(ZooSpec().arch("mlp").hidden({16, 8}), {10}, 3);
  torch::Tensor x = torch::randn({4, 10});
  auto mlp_taps = mlp->forward_taps(x, {"fc1_act", "fc2"});
  EXPECT_LT(max_abs_diff(mlp_taps.output, mlp->forward(x)), 1e-5);  // against the dense chain
  EXPECT_EQ(mlp_taps.taps[0].sizes(), (std::vector<int64_t>{4, 16}));
  EXPECT_GE(mlp_taps.taps[0].min().item<double>(), 0.0);

  auto resnet = build_zoo_model(ZooSpec().arch("resnet").depth(8).width(4), {2, 8, 8}, 3);
  resnet->set_training(false);
  torch::Tensor image = torch::randn({3, 2, 8, 8});
  auto taps = resnet->forward_taps(image, {"layer1_0.conv1", "layer2_0", "layer3_0"});
  EXPECT_LT(max_abs_diff(taps.output, resnet->forward(image)), 1e-5);
  EXPECT_EQ(taps.taps[0].sizes(), (std::vector<int64_t>{3, 4, 8, 8}));
  EXPECT_EQ(taps.taps[1].sizes(), (std::vector<int64_t>{3, 8, 4, 4}));
  EXPECT_EQ(taps.taps[2].sizes(), (std::vector<int64_t>{3, 16, 2, 2}));
}

TEST(ZooTaps, AnUnknownTapIsNamedWithTheNearestTaps) {
  auto model = build_zoo_model(ZooSpec().arch("cnn").channels({4}), {1, 8, 8}, 2);
  KD_EXPECT_ERROR(model->forward_taps(torch::randn({1, 1, 8, 8}), {"conv1_pol"}),
                  "tap \"conv1_pol\": the cnn model has no such tap (did you mean \"conv1_pool\"?); the nearest of its 5: "
                  "conv1_pool, conv1_act, conv1, gap; `kdistill inspect` lists them");
}

}  // namespace
}  // namespace kd::models

namespace kd::models {
namespace {

// textcnn: token ids [N, L] in; params and MACs by hand; padding does not change a text's outputs (the
// pad embedding is zero, as same-padding's zeros, and the max leaves pad positions out); it learns.
TEST(ZooText, TextCnnShapesCountsAndPaddingInvariance) {
  torch::manual_seed(11);
  ZooSpec spec = ZooSpec().arch("textcnn").vocab(30).pad_id(0).embedding(6).channels({8}).kernel(3).hidden({4});
  auto short_model = build_zoo_model(spec, {7}, 3);
  auto long_model = build_zoo_model(spec, {12}, 3);
  long_model->load_state(short_model->state());
  auto summary = short_model->summary({7});
  // embed 30*6, conv1 3*6*8 + 8, fc1 8*4 + 4, head 4*3 + 3
  EXPECT_EQ(summary.params, 30 * 6 + (3 * 6 * 8 + 8) + (8 * 4 + 4) + (4 * 3 + 3));
  EXPECT_EQ(summary.macs, 3 * 6 * 8 * 7 + 8 * 4 + 4 * 3);
  EXPECT_EQ(short_model->tap_names(),
            (std::vector<std::string>{"embed", "conv1", "conv1_act", "pool", "fc1", "fc1_act", "head"}));
  torch::Tensor ids = torch::tensor({{5, 9, 2, 0, 0, 0, 0}, {1, 2, 3, 4, 5, 6, 7}}, torch::kFloat);
  torch::Tensor longer = torch::cat({ids, torch::zeros({2, 5})}, 1);
  short_model->set_training(false);
  long_model->set_training(false);
  torch::NoGradGuard no_grad;
  torch::Tensor out = short_model->forward(ids);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_LT((out - long_model->forward(longer)).abs().max().item<double>(), 1e-6);
  KD_EXPECT_ERROR(build_zoo_model(ZooSpec().arch("textcnn").channels({8}), {7}, 3),
                  "model.arch: textcnn reads token ids; use it with data.format: text");
  KD_EXPECT_ERROR(build_zoo_model(ZooSpec().arch("textcnn").vocab(30), {7}, 3),
                  "model.channels: arch textcnn needs at least one stage");
}

TEST(ZooText, TextCnnLearnsWhichWordsMatter) {
  // Class 1 when token 7 appears anywhere in the text, else class 0.
  torch::manual_seed(12);
  torch::Tensor ids = torch::randint(1, 20, {256, 10}).to(torch::kFloat);
  torch::Tensor has = torch::rand({256}) < 0.5;
  for (int64_t r = 0; r < 256; ++r) {
    ids[r].masked_fill_(ids[r].eq(7), 8);
    if (has[r].item<bool>()) ids[r][r % 10] = 7;
  }
  torch::Tensor y = has.to(torch::kLong);
  auto model = build_zoo_model(ZooSpec().arch("textcnn").vocab(20).embedding(8).channels({16}), {10}, 2);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(0.01));
  model->set_training(true);
  for (int step = 0; step < 150; ++step) {
    adam.zero_grad();
    torch::nn::functional::cross_entropy(model->forward(ids), y).backward();
    adam.step();
  }
  model->set_training(false);
  torch::NoGradGuard no_grad;
  double accuracy = model->forward(ids).argmax(1).eq(y).to(torch::kDouble).mean().item<double>();
  EXPECT_GT(accuracy, 0.95);
}

}  // namespace
}  // namespace kd::models

namespace kd::models {
namespace {

// A tensor as torch.save writes it, for torch.load in the reference scripts below.
void save_pickled(const torch::Tensor& tensor, const std::filesystem::path& path) {
  std::vector<char> bytes = torch::pickle_save(tensor.contiguous());
  write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

// The transformer family against PyTorch's own nn.TransformerEncoderLayer (pre- and post-norm, GELU
// and ReLU, a key padding mask): the same weights give the same outputs. Weights go to Python as
// pickled tensors; the reference network is written with torch.nn in the script below.
TEST(ZooText, TransformerMatchesPyTorchsEncoderLayers) {
  test::TempDir dir;
  struct Case {
    std::string label;
    ZooSpec spec;
  };
  std::vector<Case> cases = {
      {"pre", ZooSpec().arch("transformer").vocab(30).pad_id(0).embedding(16).layers(2).heads(4).ff(32).activation("gelu")},
      {"post", ZooSpec().arch("transformer").vocab(30).pad_id(0).embedding(8).layers(1).heads(2).norm("post").pooling("first")},
  };
  torch::manual_seed(13);
  torch::Tensor ids = torch::randint(1, 30, {4, 9}).to(torch::kFloat);
  ids[1].slice(0, 5).fill_(0);
  ids[2].slice(0, 2).fill_(0);
  auto save = [&](const torch::Tensor& t, const std::string& name) { save_pickled(t, dir.path() / name); };
  save(ids, "ids.pt");
  for (const auto& c : cases) {
    auto model = build_zoo_model(c.spec, {9}, 3);
    model->set_training(false);
    torch::NoGradGuard no_grad;
    save(model->forward(ids), c.label + ".out.pt");
    for (auto& [name, tensor] : model->state()) save(tensor, c.label + "." + name + ".pt");
  }
  auto r = test::run_python(R"(
import torch
d = ')" + dir.path().string() + R"('
def t(name): return torch.load(f'{d}/{name}.pt')
ids = t('ids')
for label, width, heads, ff, layers, pre, act, first in [('pre', 16, 4, 32, 2, True, 'gelu', False),
                                                         ('post', 8, 2, 32, 1, False, 'relu', True)]:
    p = lambda name: t(f'{label}.{name}')
    tokens = ids != 0
    x = torch.nn.functional.embedding(ids.long(), p('embed.weight')) + p('positions.weight')
    for i in range(1, layers + 1):
        layer = torch.nn.TransformerEncoderLayer(width, heads, ff, dropout=0.0, activation=act, batch_first=True,
                                                 norm_first=pre)
        q = f'layer{i}.'
        sd = {'self_attn.in_proj_weight': p(q + 'attn_in.weight'), 'self_attn.in_proj_bias': p(q + 'attn_in.bias'),
              'self_attn.out_proj.weight': p(q + 'attn_out.weight'), 'self_attn.out_proj.bias': p(q + 'attn_out.bias'),
              'linear1.weight': p(q + 'ff1.weight'), 'linear1.bias': p(q + 'ff1.bias'),
              'linear2.weight': p(q + 'ff2.weight'), 'linear2.bias': p(q + 'ff2.bias'),
              'norm1.weight': p(q + 'norm1.weight'), 'norm1.bias': p(q + 'norm1.bias'),
              'norm2.weight': p(q + 'norm2.weight'), 'norm2.bias': p(q + 'norm2.bias')}
        layer.load_state_dict(sd)
        layer.eval()
        with torch.no_grad():
            x = layer(x, src_key_padding_mask=~tokens)
    if pre:
        x = torch.nn.functional.layer_norm(x, [width], p('norm.weight'), p('norm.bias'))
    x = x[:, 0] if first else (x * tokens.unsqueeze(2)).sum(1) / tokens.sum(1, keepdim=True)
    y = torch.nn.functional.linear(x, p('head.weight'), p('head.bias'))
    diff = (y - t(f'{label}.out')).abs().max().item()
    print(label, 'max difference', diff)
    assert diff < 1e-5, label
)");
  EXPECT_EQ(r.status, 0) << r.output;
}

// bigru: params and MACs by hand; padding does not change a text's outputs; with the same weights,
// PyTorch's nn.GRU(bidirectional=True) on packed sequences (pack_padded_sequence: each direction reads
// only the text's tokens) gives the same outputs, stacked two deep, pooled by mean and by max.
TEST(ZooText, BiGruMatchesPyTorchOnPackedSequences) {
  torch::manual_seed(14);
  ZooSpec spec = ZooSpec().arch("bigru").vocab(30).pad_id(0).embedding(6).channels({5, 4}).hidden({3});
  auto model = build_zoo_model(spec, {9}, 2);
  auto longer = build_zoo_model(spec, {13}, 2);
  longer->load_state(model->state());
  auto summary = model->summary({9});
  auto gru = [](int64_t in, int64_t h) { return 2 * (3 * h * in + 3 * h * h + 6 * h); };
  EXPECT_EQ(summary.params, 30 * 6 + gru(6, 5) + gru(10, 4) + (8 * 3 + 3) + (3 * 2 + 2));
  EXPECT_EQ(summary.macs, 2 * 9 * 15 * (6 + 5) + 2 * 9 * 12 * (10 + 4) + 8 * 3 + 3 * 2);
  EXPECT_EQ(model->tap_names(), (std::vector<std::string>{"embed", "gru1", "gru2", "pool", "fc1", "fc1_act", "head"}));
  KD_EXPECT_ERROR(build_zoo_model(ZooSpec().arch("bigru").vocab(30).channels({4}).pooling("first"), {9}, 2),
                  "model.pooling: unknown pooling \"first\"");

  torch::Tensor ids = torch::randint(1, 30, {4, 9}).to(torch::kFloat);
  ids[1].slice(0, 5).fill_(0);
  ids[2].slice(0, 1).fill_(0);  // one token
  ids[3].slice(0, 3).fill_(0);
  model->set_training(false);
  longer->set_training(false);
  torch::NoGradGuard no_grad;
  torch::Tensor out = model->forward(ids);
  EXPECT_LT((out - longer->forward(torch::cat({ids, torch::zeros({4, 4})}, 1))).abs().max().item<double>(), 1e-6);

  test::TempDir dir;
  auto save = [&](const torch::Tensor& t, const std::string& name) { save_pickled(t, dir.path() / name); };
  save(ids, "ids.pt");
  save(out, "mean.out.pt");
  auto max_model = build_zoo_model(ZooSpec(spec).pooling("max"), {9}, 2);
  max_model->load_state(model->state());
  max_model->set_training(false);
  save(max_model->forward(ids), "max.out.pt");
  for (auto& [name, tensor] : model->state()) save(tensor, name + ".pt");
  auto r = test::run_python(R"(
import torch
d = ')" + dir.path().string() + R"('
def t(name): return torch.load(f'{d}/{name}.pt')
ids = t('ids')
tokens = ids != 0
lengths = tokens.sum(1)
x = torch.nn.functional.embedding(ids.long(), t('embed.weight'))
for i, (inp, h) in enumerate([(6, 5), (10, 4)], 1):
    gru = torch.nn.GRU(inp, h, bidirectional=True, batch_first=True)
    gru.load_state_dict({k: t(f'gru{i}.{k}') for k in gru.state_dict()})
    with torch.no_grad():
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        x, _ = torch.nn.utils.rnn.pad_packed_sequence(gru(packed)[0], batch_first=True, total_length=ids.size(1))
m = tokens.unsqueeze(2)
for pooling, pooled in [('mean', (x * m).sum(1) / m.sum(1)), ('max', x.masked_fill(~m, float('-inf')).amax(1))]:
    y = torch.relu(torch.nn.functional.linear(pooled, t('fc1.weight'), t('fc1.bias')))
    y = torch.nn.functional.linear(y, t('head.weight'), t('head.bias'))
    diff = (y - t(f'{pooling}.out')).abs().max().item()
    print(pooling, 'max difference', diff)
    assert diff < 1e-5, pooling
)");
  EXPECT_EQ(r.status, 0) << r.output;
}

}  // namespace
}  // namespace kd::models
