#include "targets.h"

#include <stdlib.h>
#include <cstdio>
#include <zlib.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <torch/torch.h>

#include "kd/data/csv.h"
#include "kd/data/idx.h"
#include "kd/data/image_folder.h"
#include "kd/data/npy.h"
#include "kd/data/tabular.h"
#include "kd/data/text.h"
#include "kd/io/describe.h"
#include "kd/io/model_file.h"
#include "kd/losses/distiller.h"
#include "kd/models/zoo.h"
#include "kd/recipe/recipe.h"
#include "kd/report/metrics.h"
#include "kd/text/wordpiece.h"
#include "kd/train/trainer.h"
#include "kd/util/error.h"

namespace fs = std::filesystem;

namespace kd::fuzz {
namespace {

void write_bytes(const fs::path& path, const uint8_t* data, size_t size) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

void write_text(const fs::path& path, const std::string& text) {
  write_bytes(path, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

std::string as_text(const uint8_t* data, size_t size) { return std::string(reinterpret_cast<const char*>(data), size); }

// A loaded model is described as `kdistill inspect` does (it runs the model once on a zero example)
// when its example is small: a graph may rightly ask for more memory than a fuzzer allows.
void load_and_describe(const fs::path& path) {
  io::LoadedModel loaded = io::load_model(path.string());
  int64_t elements = 1;
  for (int64_t d : loaded.info.input_shape) elements *= std::max<int64_t>(d, 1);
  if (loaded.info.input_shape.empty() || elements > (int64_t{1} << 16)) return;
  io::describe_model_json(path.string(), loaded);
}

void idx(const uint8_t* data, size_t size, const fs::path& folder) {
  fs::path file = folder / "images-idx3-ubyte";
  write_bytes(file, data, size);
  data::read_idx(file);
}

// The table as a run reads it: parsed, labelled by its last column, encoded (classification and
// regression).
void csv(const uint8_t* data, size_t size, const fs::path& folder) {
  data::CsvTable table = data::parse_csv(as_text(data, size), (folder / "table.csv").string());
  for (Task task : {Task::classification, Task::regression}) {
    data::TabularOptions options = data::TabularOptions().task(task).missing("impute");
    data::LabeledTable labelled = data::label_table(table, options);
    std::vector<int64_t> rows(labelled.table.num_rows());
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>(i);
    data::TabularEncoder encoder = data::TabularEncoder::fit(labelled, rows, options);
    encoder.transform(labelled);
    data::TabularEncoder::from_json(encoder.to_json()).transform(labelled);
  }
}

void npy(const uint8_t* data, size_t size, const fs::path& folder) {
  fs::path file = folder / "x.npy";
  write_bytes(file, data, size);
  data::read_npy(file);
}

void npz(const uint8_t* data, size_t size, const fs::path& folder) {
  fs::path file = folder / "arrays.npz";
  write_bytes(file, data, size);
  data::read_npz(file);
}

// One image in one class folder, decoded and resized as an image-folder data set is.
void image(const uint8_t* data, size_t size, const fs::path& folder) {
  write_bytes(folder / "images" / "a" / "x.png", data, size);
  data::read_image_folder(folder / "images", data::ImageFolderOptions().height(8).width(8));
}

void recipe(const uint8_t* data, size_t size, const fs::path& folder) {
  fs::path file = folder / "recipe.yaml";
  write_bytes(file, data, size);
  recipe::load_recipe(file.string());
}

void model_file(const uint8_t* data, size_t size, const fs::path& file) {
  write_bytes(file, data, size);
  load_and_describe(file);
}

void kdm(const uint8_t* data, size_t size, const fs::path& folder) { model_file(data, size, folder / "model.kdm"); }
void onnx(const uint8_t* data, size_t size, const fs::path& folder) { model_file(data, size, folder / "model.onnx"); }
void torchscript(const uint8_t* data, size_t size, const fs::path& folder) {
  model_file(data, size, folder / "model.pt");
}

// model.json, a zero byte, then the bytes of its one weight shard (its manifest names the file: the
// seeds use group1-shard1of1.bin).
void tfjs(const uint8_t* data, size_t size, const fs::path& folder) {
  const auto* end = data + size;
  const auto* split = std::find(data, end, uint8_t{0});
  write_bytes(folder / "tfjs" / "model.json", data, static_cast<size_t>(split - data));
  const uint8_t* shard = split == end ? end : split + 1;
  write_bytes(folder / "tfjs" / "group1-shard1of1.bin", shard, static_cast<size_t>(end - shard));
  load_and_describe(folder / "tfjs" / "model.json");
}

// A checkpoint resumed by a trainer of a small MLP. The input is the libtorch archive; the harness
// adds the trailer (magic, length, CRC-32) that a checkpoint's writer adds, so the archive is what is
// fuzzed, except when the input's first byte is odd: then the bytes are the whole file as it is.
void checkpoint(const uint8_t* data, size_t size, const fs::path& folder) {
  std::string bytes = as_text(data, size);
  if (size == 0 || data[0] % 2 == 0) {
    uint64_t length = bytes.size();
    auto crc = static_cast<uint32_t>(crc32_z(0, data, size));
    bytes += "KDCKPT01";
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((length >> (8 * i)) & 0xff));
    for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  }
  fs::path file = folder / "student.ckpt";
  write_text(file, bytes);
  train::finished_training(file.string());
  torch::manual_seed(0);
  auto model = models::build_zoo_model(models::ZooSpec().arch("mlp").hidden({3}), {2}, 2);
  losses::Distiller ce({losses::LossTermOptions("ce")}, Task::classification);
  train::TrainData rows;
  rows.x = torch::zeros({4, 2});
  rows.y = torch::tensor({0, 1, 0, 1}, torch::kLong);
  auto validate = [&](models::Model& m) { return report::classification_metrics(train::predict(m, rows.x), rows.y); };
  auto options = train::TrainOptions().epochs(2).batch_size(2).checkpoint(file.string()).resume(true);
  train::Trainer(options, ce, "student").fit(*model, rows, validate);
}

// A BERT vocab.txt, then a few texts encoded with it.
void vocab(const uint8_t* data, size_t size, const fs::path& folder) {
  fs::path file = folder / "vocab.txt";
  write_bytes(file, data, size);
  auto tokenizer = text::load_wordpiece(file.string());
  for (const char* text : {"Hello, world!", "unaffable naïve Ünïcode 日本語 ##x [CLS]", ""}) tokenizer->encode(text, 16);
}

// Texts (any bytes: invalid UTF-8 included) tokenized with a fixed small vocab, and the same bytes as
// a text table (CSV, or JSON Lines when they start with "{").
void text_input(const uint8_t* data, size_t size, const fs::path& folder) {
  write_text(folder / "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n##s\nun\n##aff\n##able\na\n,\n!\n");
  auto tokenizer = text::load_wordpiece((folder / "vocab.txt").string());
  std::string text = as_text(data, size);
  tokenizer->encode(text, 64);
  tokenizer->pieces(text);
  fs::path table = folder / (size > 0 && data[0] == '{' ? "texts.jsonl" : "texts.csv");
  write_text(table, text);
  data::read_text_table(table.string(), data::TextOptions());
}

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"idx", "IDX array (the MNIST format)", idx},
      {"csv", "CSV table, labelled and encoded", csv},
      {"npy", "NumPy .npy array", npy},
      {"npz", "NumPy .npz archive", npz},
      {"image", "image of an image folder (PNG, JPEG, BMP), decoded and resized", image},
      {"recipe", "recipe YAML", recipe},
      {"kdm", ".kdm model file, loaded and run once", kdm},
      {"onnx", "ONNX model, loaded and run once", onnx},
      {"torchscript", "TorchScript file, loaded and run once", torchscript},
      {"tfjs", "TF.js model.json and weight shard, loaded and run once", tfjs},
      {"checkpoint", "training checkpoint, resumed", checkpoint},
      {"vocab", "WordPiece vocab.txt", vocab},
      {"text", "texts tokenized, and a text table (CSV or JSON Lines)", text_input},
  };
  return all;
}

const Target* find_target(const std::string& name) {
  for (const auto& target : targets()) {
    if (target.name == name) return &target;
  }
  return nullptr;
}

std::string run_target(const Target& target, const uint8_t* data, size_t size, const fs::path& folder) {
  std::error_code ec;
  fs::remove_all(folder, ec);
  fs::create_directories(folder);
  try {
    target.run(data, size, folder);
  } catch (const Error& e) {
    // refused, with a message: what bad input must give (KD_FUZZ_VERBOSE=1 prints it)
    if (std::getenv("KD_FUZZ_VERBOSE")) std::fprintf(stderr, "refused: %s\n", e.what());
  } catch (const std::exception& e) {
    std::ostringstream what;
    what << (dynamic_cast<const std::logic_error*>(&e) ? "std::logic_error" : typeid(e).name()) << ": "
         << first_line(e);
    return what.str();
  }
  return "";
}

fs::path scratch_folder() {
  std::error_code ec;
  std::string base = fs::is_directory("/dev/shm", ec) ? "/dev/shm" : fs::temp_directory_path().string();
  std::string pattern = base + "/kd_fuzz_XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("cannot make a folder under " + base);
  return pattern;
}

}  // namespace kd::fuzz
