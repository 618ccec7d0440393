"""The peer of kdistill's performance benchmark (bench/bench_distill.cpp): what users write today, the
PyTorch knowledge-distillation tutorial's loop (pytorch.org/tutorials/beginner/
knowledge_distillation_tutorial.html), run with Debian's python3-torch.

Per training step, as in the tutorial: the teacher's forward under no_grad, the student's forward,
soft-target loss sum(p_t * (log p_t - log p_s)) / N * T^2 plus cross-entropy, backward, Adam step.
Batches come from a torch DataLoader over a TensorDataset (the tutorial's loader over in-memory
tensors), shuffled.

Usage:
  peer_tutorial.py SETUP PHASE --threads T --epochs E --batch B --out DIR [--data DIR]
    SETUP  mlp | cnn | tabular     (the models and data of bench/bench_distill.cpp's setups)
    PHASE  teacher   train the teacher with cross-entropy, save DIR/teacher.pt (TorchScript; kdistill
                     loads the same file as its fixed teacher)
           student   train the student alone with cross-entropy (framework overhead)
           distill   the tutorial loop with DIR/teacher.pt as the teacher
  --shift S (distill): each batch's images shifted by up to S pixels each way (the uncovered border
                     takes the background, the smallest training value), the teacher run live on that
                     same augmented batch: the tutorial loop with augmentation.
Prints one JSON line: phase, seconds (training loop only), samples_per_second, epochs, rows,
params, test_accuracy, load_seconds.
"""
import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FASHION = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(setup, data_dir):
    """Training rows (the first 90%, as kdistill holds out 10% for validation) and test rows,
    normalised with the training mean and std (kdistill's `normalize: standard`)."""
    if setup in ("mlp", "cnn"):
        x = read_idx(f"{FASHION}/train-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
        y = read_idx(f"{FASHION}/train-labels-idx1-ubyte.gz").astype(np.int64)
        xt = read_idx(f"{FASHION}/t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
        yt = read_idx(f"{FASHION}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
        mean, std = x.mean(), x.std()
    else:
        def csv(name):
            table = np.loadtxt(os.path.join(data_dir, name), delimiter=",", skiprows=1, dtype=np.float32)
            return table[:, :-1], table[:, -1].astype(np.int64)
        x, y = csv("tabular_train.csv")
        xt, yt = csv("tabular_test.csv")
        mean, std = x.mean(0), x.std(0)
    rows = int(round(len(x) * 0.9))
    norm = lambda a: torch.from_numpy((a - mean) / std)
    return norm(x[:rows]), torch.from_numpy(y[:rows]), norm(xt), torch.from_numpy(yt)


def mlp(inputs, hidden, classes):
    layers, width = [nn.Flatten()], inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, classes))


def cnn(channels, hidden, classes):
    """kdistill's zoo cnn with batch_norm: per stage conv 3x3 (no bias) + BN + ReLU + max pool 2,
    then global average pooling, hidden Linear + ReLU layers, the head."""
    layers, width = [], 1
    for c in channels:
        layers += [nn.Conv2d(width, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
        width = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, classes))


MODELS = {
    "mlp": (lambda: mlp(784, [1200, 1200], 10), lambda: mlp(784, [32], 10)),
    "cnn": (lambda: cnn([32, 64], [128], 10), lambda: cnn([16, 32], [32], 10)),
    "tabular": (lambda: mlp(40, [512, 512], 4), lambda: mlp(40, [16], 4)),
}


def shifted(images, shift, background):
    """Each image of [B, C, H, W] moved by its own random offset in [-shift, shift] per axis."""
    b, c, h, w = images.shape
    padded = F.pad(images, (shift, shift, shift, shift), value=background)
    dy = torch.randint(0, 2 * shift + 1, (b,))
    dx = torch.randint(0, 2 * shift + 1, (b,))
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(b, c, h, w)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(b, c, h, w)
    flat = padded.reshape(b, c, -1)
    return flat.gather(2, (rows * (w + 2 * shift) + cols).reshape(b, c, -1)).reshape(b, c, h, w)


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        correct = sum((model(xb).argmax(1) == yb).sum().item() for xb, yb in zip(x.split(1024), y.split(1024)))
    return correct / len(y)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("setup", choices=sorted(MODELS))
    parser.add_argument("phase", choices=["teacher", "student", "distill"])
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--soft-weight", type=float, default=0.25)
    parser.add_argument("--ce-weight", type=float, default=0.75)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shift", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    start = time.perf_counter()
    x, y, xt, yt = load(args.setup, args.data)
    make_teacher, make_student = MODELS[args.setup]
    teacher = None
    if args.phase == "teacher":
        model = make_teacher()
    else:
        model = make_student()
        if args.phase == "distill":
            teacher = torch.jit.load(os.path.join(args.out, "teacher.pt"))
            teacher.eval()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=args.batch, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    T = args.temperature
    background = float(x.min())
    load_seconds = time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        for inputs, labels in loader:
            if args.shift > 0:
                inputs = shifted(inputs, args.shift, background)
            optimizer.zero_grad()
            logits = model(inputs)
            loss = F.cross_entropy(logits, labels)
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(inputs)
                soft_targets = F.softmax(teacher_logits / T, dim=-1)
                soft_prob = F.log_softmax(logits / T, dim=-1)
                soft_loss = torch.sum(soft_targets * (soft_targets.log() - soft_prob)) / soft_prob.size(0) * T ** 2
                loss = args.soft_weight * soft_loss + args.ce_weight * loss
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start

    if args.phase == "teacher":
        model.eval()
        torch.jit.script(model).save(os.path.join(args.out, "teacher.pt"))
    print(json.dumps({"phase": args.phase, "seconds": seconds, "samples_per_second": len(x) * args.epochs / seconds,
                      "epochs": args.epochs, "rows": len(x), "params": sum(p.numel() for p in model.parameters()),
                      "test_accuracy": accuracy(model, xt, yt), "load_seconds": load_seconds}))


if __name__ == "__main__":
    main()
