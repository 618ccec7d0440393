"""Writes the fuzz targets' seed corpora, fuzz/corpus/NAME/, from real files: arrays NumPy writes,
models and checkpoints kdistill writes (two short runs), a TorchScript module PyTorch writes, the
examples' recipes. The seeds are kept in the repository; this script is how they were made.

Usage: /usr/bin/python3 fuzz/make_seeds.py [KDISTILL]   (default build/kdistill)
"""
import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
KDISTILL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "kdistill")


def put(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def idx_bytes(array, code):
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def idx_seeds():
    rng = np.random.default_rng(0)
    put("idx", "images-u8", idx_bytes(rng.integers(0, 255, (3, 4, 4), dtype=np.uint8), 0x08))
    put("idx", "labels-u8", idx_bytes(np.array([0, 1, 2, 1], dtype=np.uint8), 0x08))
    put("idx", "i8", idx_bytes(np.array([[-1, 2], [3, -4]], dtype=np.int8), 0x09))
    put("idx", "i16", idx_bytes(np.array([1, -300], dtype=np.int16), 0x0B))
    put("idx", "i32", idx_bytes(np.array([[1], [70000]], dtype=np.int32), 0x0C))
    put("idx", "f32", idx_bytes(rng.standard_normal((2, 3)).astype(np.float32), 0x0D))
    put("idx", "f64", idx_bytes(rng.standard_normal((3,)), 0x0E))
    put("idx", "gzip", gzip.compress(idx_bytes(np.arange(8, dtype=np.uint8).reshape(2, 4), 0x08), mtime=0))


def csv_seeds():
    put("csv", "iris", "sepal_length,sepal_width,petal_length,petal_width,target\n"
        "5.1,3.5,1.4,0.2,0\n4.9,3.0,1.4,0.2,0\n7.0,3.2,4.7,1.4,1\n6.3,3.3,6.0,2.5,2\n")
    put("csv", "categorical", 'age,colour,city,label\n39,red,"New York, NY",yes\n50,blue,Paris,no\n'
        '38,,"Quote ""x""",yes\nNA,red,Paris,no\n')
    put("csv", "semicolon", "a;b;y\n1,5;2;x\n3;4;z\n")
    put("csv", "tabs-no-header", "1\t2\t0.5\n3\t4\t1.5\n5\t6\t2.5\n")
    put("csv", "whitespace", "  1.0   2.0  A\n  3.0 4.0 B\n")
    put("csv", "crlf-bom", "\ufeffx,y\r\n1,a\r\n2,b\r\n")


def npy_seeds():
    arrays = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "f64-fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        "i64": np.array([3, -1, 2], dtype=np.int64),
        "u8-3d": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        "bool": np.array([True, False]),
        "f4-big-endian": np.arange(4, dtype=">f4"),
        "f16": np.arange(3, dtype=np.float16),
        "scalar": np.float32(2.5),
    }
    for name, array in arrays.items():
        buffer = io.BytesIO()
        np.save(buffer, array)
        put("npy", name, buffer.getvalue())
    for name, save in (("stored", np.savez), ("deflated", np.savez_compressed)):
        buffer = io.BytesIO()
        save(buffer, x=np.arange(6, dtype=np.float32).reshape(3, 2), y=np.array([0, 1, 1]))
        put("npz", name, buffer.getvalue())


def png(width, height, channels, pixels):
    kind = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\x00" + bytes(pixels[y * width * channels:(y + 1) * width * channels]) for y in range(height))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, kind, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def bmp(width, height, pixels):
    stride = (width * 3 + 3) // 4 * 4
    rows = b"".join(bytes(pixels[y * width * 3:(y + 1) * width * 3]).ljust(stride, b"\0") for y in reversed(range(height)))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(rows), 0, 0, 14 + len(info)) + info + rows


def image_seeds():
    put("image", "gray.png", png(4, 3, 1, [i * 20 for i in range(12)]))
    put("image", "gray-alpha.png", png(2, 2, 2, [10, 255, 20, 128, 30, 0, 40, 255]))
    put("image", "rgb.png", png(3, 2, 3, list(range(0, 180, 10))))
    put("image", "rgba.png", png(2, 2, 4, list(range(0, 160, 10))))
    put("image", "rgb.bmp", bmp(3, 2, list(range(0, 180, 10))))
    jpeg = "/usr/share/doc/nodejs/thin-white-stripe.jpg"  # a small JPEG from Debian's nodejs docs
    if os.path.exists(jpeg):
        shutil.copy(jpeg, os.path.join(CORPUS, "image", "stripe.jpg"))


def recipe_seeds():
    os.makedirs(os.path.join(CORPUS, "recipe"), exist_ok=True)
    for name in sorted(os.listdir(os.path.join(ROOT, "examples"))):
        if name.endswith(".yaml"):
            shutil.copy(os.path.join(ROOT, "examples", name), os.path.join(CORPUS, "recipe", name))


def text_seeds():
    put("vocab", "bert-uncased", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nhello\n,\n!\nworld\nun\n##aff\n##able\nna\n##ive\n")
    put("vocab", "cased-crlf", "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nHello\r\n##s\r\n日\r\n本\r\n")
    put("text", "csv", "text,label\n\"the unaffable, one\",a\nhello world!,b\n")
    put("text", "jsonl", '{"text": "the unaffable", "label": "x"}\n{"text": "na\\u00efve \\ud83d\\ude00", "label": "y"}\n')
    put("text", "utf8", "Ünïcode 日本語 ##x [CLS] naïve\tcafé\n")
    put("text", "invalid-utf8", b"text,label\n\xff\xfe bad \xc3,a\n")


def run_kdistill(folder, args):
    subprocess.run([KDISTILL] + args + ["--out", folder, "--threads", "1"], check=True, stdout=subprocess.DEVNULL)


def model_seeds(work):
    # Iris: MLP teacher and student, every export; digits: a small CNN student (8x8 images).
    iris = os.path.join(work, "iris")
    run_kdistill(iris, ["run", os.path.join(ROOT, "examples", "iris.yaml"),
                        "--set", "data.folds=0", "--set", "teacher.model.hidden=[8]",
                        "--set", "teacher.train.epochs=2", "--set", "distill.epochs=2",
                        "--set", "export=[torchscript, onnx, tfjs]"])
    digits = os.path.join(work, "digits")
    run_kdistill(digits, ["run", os.path.join(ROOT, "examples", "digits.yaml"),
                          "--set", "data.folds=0", "--set", "teacher.model={arch: mlp, hidden: [8]}",
                          "--set", "teacher.train.epochs=1", "--set", "distill.epochs=1",
                          "--set", "student.model={arch: cnn, channels: [2, 4], batch_norm: true, hidden: [4]}",
                          "--set", "export=[torchscript, onnx, tfjs]"])
    # The checkpoint harness resumes an MLP of 2 inputs, 3 hidden units and 2 classes: a run of that
    # student on a 2-feature table writes the checkpoints it can load.
    table = os.path.join(work, "pairs.csv")
    with open(table, "w") as f:
        f.write("a,b,y\n" + "".join(f"{i % 5},{i % 3},{i % 2}\n" for i in range(40)))
    pairs = os.path.join(work, "pairs")
    run_kdistill(pairs, ["run", os.path.join(ROOT, "examples", "iris.yaml"), "--set", f"data.train={table}",
                         "--set", "data.folds=0", "--set", "teacher.model.hidden=[4]",
                         "--set", "teacher.train.epochs=2", "--set", "distill.epochs=3",
                         "--set", "student.model.hidden=[3]", "--set", "export=[]"])
    for name in os.listdir(os.path.join(pairs, "checkpoints")):
        data = open(os.path.join(pairs, "checkpoints", name), "rb").read()
        if name.endswith(".ckpt"):
            put("checkpoint", f"pairs-{name}", data[:-20])  # the harness adds the trailer
    for run_name, folder in (("iris", iris), ("digits", digits)):
        for root, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(root, name)
                data = open(path, "rb").read()
                if name.endswith(".kdm"):
                    put("kdm", f"{run_name}-{name}", data)
                elif name.endswith(".onnx"):
                    put("onnx", f"{run_name}-{name}", data)
                elif name.endswith(".pt"):
                    put("torchscript", f"{run_name}-{name}", data)
                elif name == "model.json":
                    manifest = json.load(open(path))
                    shards = [p for group in manifest["weightsManifest"] for p in group["paths"]]
                    if len(shards) != 1:
                        continue
                    shard = open(os.path.join(root, shards[0]), "rb").read()
                    for group in manifest["weightsManifest"]:
                        group["paths"] = ["group1-shard1of1.bin"]
                    text = json.dumps(manifest).encode()
                    put("tfjs", f"{run_name}-{os.path.basename(root)}", text + b"\0" + shard)
    # A TorchScript module as PyTorch writes it, with a submodule and a buffer.
    module = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.ReLU()))
    buffer = io.BytesIO()
    torch.jit.save(module.eval(), buffer)
    put("torchscript", "pytorch-sequential.pt", buffer.getvalue())


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    idx_seeds()
    csv_seeds()
    npy_seeds()
    image_seeds()
    recipe_seeds()
    text_seeds()
    with tempfile.TemporaryDirectory() as work:
        model_seeds(work)
    for target in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, target))
        size = sum(os.path.getsize(os.path.join(CORPUS, target, f)) for f in files)
        print(f"{target}: {len(files)} seeds, {size} bytes")


if __name__ == "__main__":
    main()
