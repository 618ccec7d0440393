#!/usr/bin/env python3
"""Data-parallel scaling on this machine: the student's distillation on Fashion-MNIST (54,000 training
rows), the MLP and CNN setups of examples/, with a fixed teacher file, on 1 rank with 1 thread, 2 ranks
with 1 thread each (kdistill launch --nproc 2, c10d Gloo over 127.0.0.1), and 1 rank with 2 threads
(the same two cores used by one process).

  /usr/bin/python3 bench/distributed.py [--epochs 3] [--json bench/results/distributed.json]

Samples/s = training rows / the median distillation epoch's seconds (metrics.json timing), or / the
teacher's training seconds for one epoch (the *_teacher setups); scaling efficiency = 2-rank samples/s /
(2 x 1-rank samples/s). The fixed teachers are the study's (runs/study/*/seed-0, made by bench/study.py);
the baseline is left out (distill.baseline: false).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name: (label, recipe, teacher file or None: the teacher's own training is timed, one epoch)
SETUPS = {
    "mlp": ("MLP student 32x32 (7.4k params)", "examples/fashion-mnist-mlp.yaml", "runs/study/mlp/seed-0/teacher.kdm"),
    "cnn": ("CNN student 8-16-32, BN (7.4k params)", "examples/fashion-mnist-cnn.yaml", "runs/study/cnn/seed-0/teacher.kdm"),
    "mlp_teacher": ("MLP teacher 2x1200 (2.4M params), training", "examples/fashion-mnist-mlp.yaml", None),
    "cnn_teacher": ("CNN teacher 32-64-128, BN (111k params), training", "examples/fashion-mnist-cnn.yaml", None),
}
LAYOUTS = [(1, 1), (2, 1), (1, 2)]  # (ranks, threads a rank)


def run(kdistill, setup, ranks, threads, epochs, out, port):
    _, recipe, teacher = SETUPS[setup]
    if teacher:
        sets = ["teacher.model=null", "teacher.train=null", f"teacher.path={os.path.join(ROOT, teacher)}",
                f"distill.epochs={epochs}", "distill.baseline=false", "export=[]"]
    else:  # the teacher's training, one epoch (without augmentation), then one short student epoch
        sets = ["teacher.train.epochs=1", "teacher.train.augment=null", "distill.epochs=1", "distill.baseline=false",
                "export=[]"]
    args = ["run", os.path.join(ROOT, recipe), "--out", out]
    for s in sets:
        args += ["--set", s]
    cmd = [kdistill, "--quiet", "--threads", str(threads)]
    if ranks > 1:
        cmd += ["launch", "--nproc", str(ranks), "--master", f"127.0.0.1:{port}", "--"]
    print("[distributed] " + " ".join(cmd + args), file=sys.stderr)
    subprocess.run(cmd + args, check=True)
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    seconds = statistics.median(m["timing"]["distill_epoch_seconds"]) if teacher else m["timing"]["teacher_seconds"]
    return {"epoch_seconds": seconds, "samples_per_second": m["data"]["train"] / seconds,
            "student_test_accuracy": m["models"]["student"]["test"]["accuracy"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kdistill", default=os.path.join(ROOT, "build", "kdistill"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--setups", nargs="+", choices=list(SETUPS), default=list(SETUPS))
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        for setup in args.setups:
            rows[setup] = {}
            for i, (ranks, threads) in enumerate(LAYOUTS):
                out = os.path.join(scratch, f"{setup}-{ranks}x{threads}")
                rows[setup][f"{ranks}x{threads}"] = run(args.kdistill, setup, ranks, threads, args.epochs, out, 29600 + i)
    lines = ["| setup | 1 rank x 1 thread: samples/s | 2 ranks x 1 thread: samples/s | scaling efficiency | "
             "1 rank x 2 threads: samples/s |", "|---|---|---|---|---|"]
    for setup, r in rows.items():
        one, two, threads = r["1x1"], r["2x1"], r["1x2"]
        efficiency = two["samples_per_second"] / (2 * one["samples_per_second"])
        r["efficiency"] = efficiency
        lines.append(f"| {SETUPS[setup][0]} | {one['samples_per_second']:,.0f} | {two['samples_per_second']:,.0f} | "
                     f"{efficiency:.0%} | {threads['samples_per_second']:,.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.json:
        result = {"command": " ".join(sys.argv), "epochs": args.epochs, "rows": rows, "markdown": table}
        folder = os.path.dirname(os.path.abspath(args.json))
        with tempfile.NamedTemporaryFile("w", dir=folder, delete=False) as f:
            json.dump(result, f, indent=2)
        os.replace(f.name, args.json)


if __name__ == "__main__":
    main()
