// Batches per second on Fashion-MNIST: kd::data::Batcher (one index_select per tensor per
// batch) against libtorch's torch::data::DataLoader over a TensorDataset-like dataset
// (examples gathered one by one and stacked). Repeats each measurement, prints median
// and spread and the ratio, and writes JSON.
//
//   build/bench_batching [--repeats 5] [--batch 128] [--json bench/results/batching.json]
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>

#include "kd/data/batcher.h"
#include "kd/data/idx.h"
#include "kd/util/fs.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Pairs : torch::data::datasets::Dataset<Pairs> {
  torch::Tensor x, y;
  Pairs(torch::Tensor x_, torch::Tensor y_) : x(std::move(x_)), y(std::move(y_)) {}
  torch::data::Example<> get(size_t i) override { return {x[static_cast<int64_t>(i)], y[static_cast<int64_t>(i)]}; }
  torch::optional<size_t> size() const override { return static_cast<size_t>(x.size(0)); }
};

struct Stats {
  double median, min, max;
};

Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 5;
  int64_t batch = 128;
  std::string json_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--repeats") repeats = std::stoi(argv[i + 1]);
    if (flag == "--batch") batch = std::stoll(argv[i + 1]);
    if (flag == "--json") json_path = argv[i + 1];
  }
  torch::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  const std::string root = "/usr/share/datasets/fashion-mnist/";
  auto x = kd::data::read_idx(root + "train-images-idx3-ubyte.gz").to(torch::kFloat).div(255).unsqueeze(1).contiguous();
  auto y = kd::data::read_idx(root + "train-labels-idx1-ubyte.gz").to(torch::kLong);

  std::vector<double> ours, peer;
  for (int r = 0; r < repeats; ++r) {  // interleaved: each repeat runs both
    kd::data::Batcher batcher({x, y}, kd::data::BatcherOptions().batch_size(batch).seed(r));
    auto start = Clock::now();
    double checksum = 0;
    for (int64_t b = 0; b < batcher.batches(); ++b) checksum += batcher.batch(0, b)[1][0].item<int64_t>();
    ours.push_back(batcher.batches() / std::chrono::duration<double>(Clock::now() - start).count());

    auto loader = torch::data::make_data_loader<torch::data::samplers::RandomSampler>(
        Pairs(x, y).map(torch::data::transforms::Stack<>()),
        torch::data::DataLoaderOptions().batch_size(static_cast<size_t>(batch)).workers(0));
    start = Clock::now();
    int64_t batches = 0;
    for (auto& b : *loader) {
      checksum += b.target[0].item<int64_t>();
      ++batches;
    }
    peer.push_back(batches / std::chrono::duration<double>(Clock::now() - start).count());
    if (checksum < 0) std::cout << "";
  }
  auto a = stats(ours), b = stats(peer);
  std::cout << "Fashion-MNIST train (60000 x 1x28x28), batch " << batch << ", " << torch::get_num_threads()
            << " threads, " << repeats << " repeats\n";
  std::printf("%-28s %12s %12s %12s\n", "loader", "batches/s", "min", "max");
  std::printf("%-28s %12.1f %12.1f %12.1f\n", "kd::data::Batcher", a.median, a.min, a.max);
  std::printf("%-28s %12.1f %12.1f %12.1f\n", "torch::data::DataLoader", b.median, b.min, b.max);
  std::printf("ratio (Batcher / DataLoader, medians): %.1fx\n", a.median / b.median);
  if (!json_path.empty()) {
    auto summary = [](const Stats& s) { return nlohmann::json{{"median", s.median}, {"min", s.min}, {"max", s.max}}; };
    nlohmann::json json = {{"benchmark", "batching"},
                           {"data", "Fashion-MNIST train 60000 x 1x28x28"},
                           {"batch_size", batch},
                           {"threads", torch::get_num_threads()},
                           {"repeats", repeats},
                           {"batcher_batches_per_s", summary(a)},
                           {"dataloader_batches_per_s", summary(b)},
                           {"ratio", a.median / b.median}};
    kd::write_file_atomic(json_path, json.dump(2) + "\n");
  }
  return 0;
}
