// `kdistill run` on text: a seeded sample of the Debian package index (scripts/apt_corpus.py:
// description -> section), a SentencePiece tokenizer trained on the training texts, a textcnn teacher
// and student; the student's TorchScript file loads in Python (its outputs equal the zoo model's:
// tests/export/torchscript_export_test.cpp); what it refuses.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "cli/cli_util.h"
#include "data/python_helper.h"
#include "kd/util/fs.h"
#include "kd/util/strings.h"
#include "test_util.h"

namespace kd::test {
namespace {

class TextRun : public RunFolder {
 protected:
  // 3,000 descriptions of the sections with at least 600 packages (about a dozen classes).
  std::string corpus(const std::string& name) {
    auto path = (dir_ / name).string();
    auto made = run_python("import subprocess, sys\n"
                           "sys.exit(subprocess.call(['/usr/bin/python3', '" KD_SOURCE_DIR "/scripts/apt_corpus.py', "
                           "'--out', '" + path + "', '--sample', '3000', '--min-count', '600', '--seed', '1']))\n");
    EXPECT_EQ(made.status, 0) << made.output;
    return path;
  }

  static std::string text_recipe(const std::string& train, const std::string& extra_data = "") {
    return "task: classification\nseed: 1\n"
           "data:\n  format: text\n  train: " + train + "\n  target: section\n"
           "  tokenizer: {train: sentencepiece, vocab_size: 2000}\n" + extra_data +
           "teacher:\n  model: {arch: textcnn, embedding: 64, channels: [128], dropout: 0.2}\n"
           "  train: {epochs: 6, batch_size: 64, optimizer: {name: adamw, lr: 0.003}}\n"
           "student:\n  model: {arch: textcnn, embedding: 16, channels: [24]}\n"
           "distill:\n  epochs: 8\n  batch_size: 64\n  optimizer: {name: adamw, lr: 0.005}\n"
           "  losses: [{kind: kl, weight: 0.5, temperature: 2}, {kind: ce, weight: 0.5}]\n"
           "export: [torchscript]\n";
  }
};

TEST_F(TextRun, PackageDescriptionsToSectionsEndToEnd) {
  std::string train = corpus("apt.csv");
  auto r = run_kdistill("run " + recipe(text_recipe(train)) + " --out " + out() + " --force");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("token ids (sentencepiece tokenizer, "), std::string::npos) << r.output;
  auto m = metrics();
  int64_t classes = m["data"]["class_names"].size();
  ASSERT_GE(classes, 5) << m["data"].dump();
  double chance = 1.0 / static_cast<double>(classes);
  EXPECT_GT(m["models"]["teacher"]["test"]["accuracy"].get<double>(), chance + 0.3);
  EXPECT_GT(m["models"]["student"]["test"]["accuracy"].get<double>(), chance + 0.2);
  EXPECT_LT(m["models"]["student"]["params"].get<int64_t>(), m["models"]["teacher"]["params"].get<int64_t>() / 4);

  // The TorchScript student in Python: token ids in, one score per section out.
  auto python = run_python(
      "import numpy, torch\n"
      "m = torch.jit.load('" + out() + "/student.torchscript.pt')\n"
      "print('shape', tuple(m.forward(torch.ones(2, " + std::to_string(m["data"]["input_shape"][0].get<int64_t>()) +
      ")).shape))\n");
  ASSERT_EQ(python.status, 0) << python.output;
  EXPECT_NE(python.output.find("shape (2, " + std::to_string(classes) + ")"), std::string::npos) << python.output;

  // inspect shows the tokenizer by its sizes, not its serialised model.
  auto inspect = run_kdistill("inspect " + out() + "/student.kdm");
  ASSERT_EQ(inspect.status, 0) << inspect.output;
  EXPECT_NE(inspect.output.find("\"tokenizer\":{\"kind\":\"sentencepiece\",\"model\":\"<"), std::string::npos)
      << inspect.output.substr(0, 2000);
  EXPECT_LT(inspect.output.size(), 4000u) << inspect.output.substr(0, 2000);

  // A kdistill teacher reads the ids of its own tokenizer: another tokenizer's are refused.
  auto other = run_kdistill("run " + recipe(text_recipe(train)) + " --out " + (dir_ / "other").string() +
                            " --set data.tokenizer.vocab_size=1000 --set teacher.model=null --set teacher.train=null" +
                            " --set teacher.path=" + out() + "/teacher.kdm");
  EXPECT_EQ(other.status, 2) << other.output;
  EXPECT_NE(other.output.find("teacher.kdm: the textcnn model was trained on the ids of another tokenizer"),
            std::string::npos) << other.output;

  // TF.js export of a text model is refused before anything trains.
  auto tfjs = run_kdistill("run " + recipe(text_recipe(train)) + " --out " + out() + " --force" + " --set 'export=[tfjs]'");
  EXPECT_EQ(tfjs.status, 2) << tfjs.output;
  EXPECT_NE(tfjs.output.find("export[0]: arch textcnn (token ids in) does not export to tfjs yet; torchscript and onnx do"),
            std::string::npos) << tfjs.output;
  // A student of the image zoo cannot read token ids.
  auto mlp = run_kdistill("run " + recipe(text_recipe(train)) + " --out " + out() + " --force" +
                          " --set 'student.model={arch: textcnn, channels: []}'");
  EXPECT_EQ(mlp.status, 2) << mlp.output;
  EXPECT_NE(mlp.output.find("student.model.channels: arch textcnn needs at least one stage"), std::string::npos)
      << mlp.output;
  // Augmentation of token ids makes ids of other tokens: refused, for the student and the teacher.
  for (std::string set : {"distill.augment=noise", "distill.augment=mixup", "teacher.train.augment=feature_dropout"}) {
    auto augmented = run_kdistill("run " + recipe(text_recipe(train)) + " --out " + out() + " --force --set " + set);
    EXPECT_EQ(augmented.status, 2) << augmented.output;
    EXPECT_NE(augmented.output.find(set.substr(0, set.find('=')) + ": "), std::string::npos) << augmented.output;
    EXPECT_NE(augmented.output.find("the rows are texts' token ids"), std::string::npos) << augmented.output;
  }
}

// `kdistill predict` on raw text (a text file, or JSON Lines) tokenizes with the model's own tokenizer:
// the outputs equal the run's own outputs on its test rows, from the .kdm, the TorchScript and the ONNX file.
TEST_F(TextRun, PredictOnRawTextEqualsTheRunsOutputs) {
  std::string all = corpus("apt.csv");
  auto lines = kd::split(read_file(all), '\n');
  std::string train = lines[0] + "\n", test = lines[0] + "\n";
  for (size_t i = 1; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    (i % 5 == 0 ? test : train) += lines[i] + "\n";
  }
  write_file_atomic(dir_ / "train.csv", train);
  write_file_atomic(dir_ / "test.csv", test);
  std::string text = text_recipe((dir_ / "train.csv").string(), "  test: " + (dir_ / "test.csv").string() + "\n");
  auto r = run_kdistill("run " + recipe(text) + " --out " + out() + " --force" + " --set distill.epochs=3 --set teacher.train.epochs=2" +
                        " --set 'export=[torchscript, onnx]'");
  ASSERT_EQ(r.status, 0) << r.output;
  auto texts = run_python("import csv, json\n"
                          "rows = list(csv.DictReader(open('" + (dir_ / "test.csv").string() + "')))\n"
                          "open('" + (dir_ / "test.txt").string() + "', 'w').write(''.join(r['text'] + '\\n' for r in rows))\n"
                          "open('" + (dir_ / "test.jsonl").string() + "', 'w').write(''.join(json.dumps({'text': r['text']}) + '\\n' for r in rows))\n");
  ASSERT_EQ(texts.status, 0) << texts.output;
  for (std::string model : {"student.kdm", "student.torchscript.pt", "student.onnx"}) {
    for (std::string input : {"test.txt", "test.jsonl"}) {
      auto p = run_kdistill("predict " + out() + "/" + model + " --input " + (dir_ / input).string() + " --output " +
                            (dir_ / "p.npy").string());
      ASSERT_EQ(p.status, 0) << p.output;
      auto same = run_python("import numpy\n"
                             "a = numpy.load('" + (dir_ / "p.npy").string() + "')\n"
                             "b = numpy.load('" + out() + "/test_outputs/student.npy')\n"
                             "assert a.shape == b.shape, (a.shape, b.shape)\n"
                             "print('max difference', abs(a - b).max())\n"
                             "assert abs(a - b).max() < 1e-4\n");
      EXPECT_EQ(same.status, 0) << model << " " << input << ": " << same.output;
    }
  }
  // `kdistill eval` on the recipe's text scores each file as the run scored the student.
  double accuracy = metrics()["models"]["student"]["test"]["accuracy"].get<double>();
  for (std::string model : {"student.kdm", "student.onnx"}) {
    auto e = run_kdistill("eval " + out() + "/" + model + " --data " + recipe(text) + " --json " +
                          (dir_ / "eval.json").string());
    ASSERT_EQ(e.status, 0) << model << ": " << e.output;
    auto scored = nlohmann::json::parse(read_file(dir_ / "eval.json"));
    EXPECT_NEAR(scored["metrics"]["test"]["accuracy"].get<double>(), accuracy, 1e-9) << model;
  }
}

// BERT-style: a transformer teacher and a one-layer student of its width, started from the teacher's
// embeddings, positions and first layer (DistilBERT's every other layer: every: 2), with a hint from
// its hidden states to the teacher's last layer's (TinyBERT) and its attention maps to that layer's (MiniLM).
TEST_F(TextRun, TransformerTeacherAndStudentInitialisedFromEveryOtherLayer) {
  std::string text = text_recipe(corpus("apt.csv"));
  text.replace(text.find("  model: {arch: textcnn, embedding: 64"), std::string("  model: {arch: textcnn, embedding: 64, channels: [128], dropout: 0.2}").size(),
               "  model: {arch: transformer, embedding: 32, layers: 2, heads: 4, activation: gelu}");
  text.replace(text.find("  model: {arch: textcnn, embedding: 16, channels: [24]}"),
               std::string("  model: {arch: textcnn, embedding: 16, channels: [24]}").size(),
               "  model: {arch: transformer, embedding: 32, layers: 1, heads: 4, activation: gelu}\n"
               "  init: {from: teacher, every: 2}");
  // TinyBERT's hidden-state term besides KD: the student's layer 1 onto the teacher's layer 2, token by token.
  auto r = run_kdistill("run " + recipe(text) + " --out " + out() + " --force" + " --set distill.epochs=4 --set teacher.train.epochs=4" +
                        " --set 'distill.losses=[{kind: kl, weight: 0.5, temperature: 2}, {kind: ce, weight: 0.5}, "
                        "{kind: hint, weight: 0.1, student: layer1, teacher: layer2}, "
                        "{kind: attention_map, weight: 0.1, student: layer1.attention, teacher: layer2.attention}]'");
  ASSERT_EQ(r.status, 0) << r.output;
  auto m = metrics();
  EXPECT_EQ(m["distill"]["loss_parameters"], 32 * 32 + 32);  // the projection: per token, 32 -> 32
  // MiniLM's term: the teacher's attention maps cached with its outputs (float16 [4, L, L] a row).
  EXPECT_EQ(m["distill"]["loss"][3]["kind"], "attention_map") << m["distill"]["loss"].dump();
  EXPECT_EQ(m["distill"]["loss"][3]["measure"], "kl") << m["distill"]["loss"].dump();
  EXPECT_GT(m["distill"]["teaching"]["taps_bytes"].get<int64_t>(), 0) << m["distill"]["teaching"].dump();
  auto init = m["distill"]["student_init_from_teacher"];
  EXPECT_EQ(init["every"], 2);
  // embed, positions, layer1 (12 tensors), the final norm, head: every student tensor has its counterpart.
  EXPECT_EQ(init["tensors"], 2 + 12 + 2 + 2) << init.dump();
  int64_t classes = m["data"]["class_names"].size();
  EXPECT_GT(m["models"]["teacher"]["test"]["accuracy"].get<double>(), 1.0 / classes + 0.3);
  EXPECT_GT(m["models"]["student"]["test"]["accuracy"].get<double>(), 1.0 / classes + 0.2);
  EXPECT_GT(m["models"]["teacher"]["macs"].get<double>(), 1.9 * m["models"]["student"]["macs"].get<double>());
}

// A BERT-style teacher made by PyTorch, as a user's would be: forward(input_ids, attention_mask) -> a dict
// with "logits", scripted, trained in Python on ids from the independent WordPiece reference
// (tests/fixtures/wordpiece_reference.py) with a vocab.txt made from the training texts. kdistill reads
// the same vocab.txt: the teacher's test accuracy in the run equals the one Python measured, from the
// TorchScript file and from its ONNX export.
TEST_F(TextRun, APyTorchTeacherTakingInputIdsAndAttentionMask) {
  std::string all = corpus("apt.csv");
  auto python = run_python(R"(
import collections, csv, json, subprocess, sys, torch
sys.path.insert(0, ')" KD_SOURCE_DIR R"(/tests/fixtures')
import wordpiece_reference as wp
d = ')" + dir_.path().string() + R"('
rows = list(csv.DictReader(open(f'{d}/apt.csv')))
train, test = [r for i, r in enumerate(rows) if i % 5], [r for i, r in enumerate(rows) if i % 5 == 0]
for name, part in (('train', train), ('test', test)):
    with open(f'{d}/{name}.csv', 'w', newline='') as f:
        w = csv.writer(f); w.writerow(['text', 'section']); w.writerows((r['text'], r['section']) for r in part)
words = collections.Counter(t for r in train for t in wp.basic_tokens(r['text'], True, True))
tokens = ['[PAD]', '[UNK]', '[CLS]', '[SEP]'] + sorted(w for w, c in words.items() if c >= 2)
open(f'{d}/vocab.txt', 'w').write('\n'.join(tokens) + '\n')
_, vocab = wp.load_vocab(f'{d}/vocab.txt')
classes = sorted({r['section'] for r in train})
def ids(rows, length=24):
    out = []
    for r in rows:
        pieces = [p for word in wp.basic_tokens(r['text'], True, True) for p in wp.wordpieces(word, vocab)]
        row = [vocab['[CLS]']] + [vocab[p] for p in pieces][:length - 2] + [vocab['[SEP]']]
        out.append(row + [0] * (length - len(row)))
    return torch.tensor(out)
class Bert(torch.nn.Module):
    def __init__(self, n, k):
        super().__init__()
        self.embed = torch.nn.Embedding(n, 64)
        self.layer = torch.nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
        self.classifier = torch.nn.Linear(64, k)
    def forward(self, input_ids, attention_mask):
        x = self.layer(self.embed(input_ids), src_key_padding_mask=attention_mask == 0)
        m = attention_mask.unsqueeze(2).to(x.dtype)
        return {'logits': self.classifier((x * m).sum(1) / m.sum(1))}
torch.manual_seed(0)
model = Bert(len(tokens), len(classes))
x, y = ids(train), torch.tensor([classes.index(r['section']) for r in train])
opt = torch.optim.Adam(model.parameters(), 0.003)
for epoch in range(6):
    for i in range(0, len(x), 64):
        opt.zero_grad()
        out = model(x[i:i + 64], (x[i:i + 64] != 0).long())['logits']
        torch.nn.functional.cross_entropy(out, y[i:i + 64]).backward()
        opt.step()
model.eval()
scripted = torch.jit.script(model)
scripted.save(f'{d}/bert.pt')
xt, yt = ids(test), torch.tensor([classes.index(r['section']) for r in test])
torch.onnx.export(model, (xt[:2], (xt[:2] != 0).long()), f'{d}/bert.onnx', input_names=['input_ids', 'attention_mask'],
                  output_names=['logits'], opset_version=13,
                  dynamic_axes={'input_ids': {0: 'n'}, 'attention_mask': {0: 'n'}, 'logits': {0: 'n'}})
with torch.no_grad():
    accuracy = (scripted(xt, (xt != 0).long())['logits'].argmax(1) == yt).double().mean().item()
print(json.dumps({'accuracy': accuracy, 'classes': len(classes)}))
)");
  ASSERT_EQ(python.status, 0) << python.output;
  auto expected = nlohmann::json::parse(python.output.substr(python.output.rfind('{')));
  std::string text = "task: classification\nseed: 1\n"
                     "data:\n  format: text\n  train: " + (dir_ / "train.csv").string() + "\n  test: " +
                     (dir_ / "test.csv").string() + "\n  target: section\n  max_length: 24\n"
                     "  tokenizer: {vocab: " + (dir_ / "vocab.txt").string() + "}\n"
                     "teacher:\n  path: " + (dir_ / "bert.pt").string() + "\n  output: logits\n"
                     "student:\n  model: {arch: textcnn, embedding: 16, channels: [24]}\n"
                     "distill:\n  epochs: 4\n  batch_size: 64\n  optimizer: {name: adamw, lr: 0.005}\n"
                     "export: []\n";
  auto r = run_kdistill("run " + recipe(text) + " --out " + out() + " --force");
  ASSERT_EQ(r.status, 0) << r.output;
  auto m = metrics();
  EXPECT_NEAR(m["models"]["teacher"]["test"]["accuracy"].get<double>(), expected["accuracy"].get<double>(), 1e-9);
  EXPECT_GT(expected["accuracy"].get<double>(), 1.0 / expected["classes"].get<double>() + 0.3);
  EXPECT_GT(m["models"]["student"]["test"]["accuracy"].get<double>(), 1.0 / expected["classes"].get<double>() + 0.2);

  // The same model exported by torch.onnx.export (Gather, Equal, Where, Expand, MatMul, Softmax, Erf,
  // ReduceSum, ...) runs on kdistill's ONNX executor to the same test accuracy (within one row of
  // PyTorch's, where a near tie can fall the other way).
  std::string onnx = text;
  onnx.replace(onnx.find("bert.pt"), 7, "bert.onnx");
  auto o = run_kdistill("run " + recipe(onnx) + " --out " + out() + " --force" + " --set distill.epochs=1");
  ASSERT_EQ(o.status, 0) << o.output;
  double rows = metrics()["data"]["test"].get<double>();
  EXPECT_NEAR(metrics()["models"]["teacher"]["test"]["accuracy"].get<double>(), expected["accuracy"].get<double>(),
              1.0 / rows + 1e-9);
}

// `kdistill auto` on text: trials resize the textcnn student; the chosen one exports to ONNX.
TEST_F(TextRun, AutoSearchesTextStudents) {
  auto r = run_kdistill("auto " + recipe(text_recipe(corpus("apt.csv"))) + " --budget 5m --trials 3 --out " + out() +
                        " --set distill.epochs=2 --set teacher.train.epochs=2 --set 'export=[onnx]'");
  ASSERT_EQ(r.status, 0) << r.output;
  auto trials = kd::split(read_file(dir_ / "out/trials.csv"), '\n');
  EXPECT_GE(trials.size(), 4u) << read_file(dir_ / "out/trials.csv");  // the header and 3 trials
  EXPECT_TRUE(std::filesystem::exists(dir_ / "out/student.onnx")) << r.output;
  EXPECT_GT(metrics()["models"]["student"]["test"]["accuracy"].get<double>(), 0.0);
}

// JSON Lines in, a transfer file of unlabelled texts that only the teacher labels.
TEST_F(TextRun, JsonLinesAndATransferFile) {
  std::string train = corpus("apt.jsonl");
  auto lines = kd::split(read_file(train), '\n');
  std::string transfer;
  for (size_t i = 0; i < 200 && i < lines.size(); ++i) {
    auto record = nlohmann::json::parse(lines[i]);
    transfer += record["text"].get<std::string>() + "\n";
  }
  write_file_atomic(dir_ / "more.txt", transfer);
  auto r = run_kdistill("run " + recipe(text_recipe(train, "  transfer: " + (dir_ / "more.txt").string() + "\n")) +
                        " --out " + out() + " --force" + " --set distill.epochs=2 --set teacher.train.epochs=2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("transfer 200"), std::string::npos) << r.output;
  EXPECT_EQ(metrics()["data"]["text"]["tokenizer"], "sentencepiece");
  EXPECT_EQ(metrics()["data"]["transfer"], 200);
}

}  // namespace
}  // namespace kd::test
