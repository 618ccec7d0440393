#!/usr/bin/env python3
"""Data-parallel scaling on this machine: the student's distillation on Fashion-MNIST (54,000 training
rows), the MLP and CNN setups of examples/, with a fixed teacher file, on 1 rank with 1 thread, 2 ranks
with 1 thread each (kdistill launch --nproc 2, c10d Gloo over 127.0.0.1), and 1 rank with 2 threads
(the same two cores used by one process).

  /usr/bin/python3 bench/distributed.py [--epochs 3] [--auto-budget 90] [--json bench/results/distributed.json]

Also `kdistill auto` trials per minute on examples/fashion-mnist-cnn.yaml (10,000 training rows, the study's
teacher file, no augmentation, the student's size fixed (the example's 8-16-32) and its training searched,
9 epochs a trial with rungs at 3 and 9, a target no student reaches so
that the budget ends the search, --no-final; trial epochs per minute counts the epochs the trials trained, which pruning makes differ
from trials): 1 rank of 1 thread, 2 ranks of 1 thread (trials shared through
the group's store), and one process of 2 threads with --workers 2 (trials shared through a locked file).
--parts auto reruns only that part and keeps the scaling rows of the --json file.

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

from results_file import write_json

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
                f"distill.epochs={epochs}", "distill.stages=null", "distill.augment=none", "distill.views=null",
                "distill.baseline=false", "export=[]"]
    else:  # the teacher's training, one epoch (without augmentation), then one short student epoch
        sets = ["teacher.train.epochs=1", "teacher.train.augment=null", "distill.epochs=1", "distill.stages=null",
                "distill.baseline=false", "export=[]"]
    args = ["run", os.path.join(ROOT, recipe), "--out", out, "--force"]
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


AUTO_LAYOUTS = [("1 rank", ["--threads", "1"], []), ("2 ranks", ["--threads", "1", "launch", "--nproc", "2",
                                                                  "--master", "127.0.0.1:29610", "--"], []),
                ("1 process, --workers 2", ["--threads", "2"], ["--workers", "2"])]


def auto_rate(kdistill, budget, out, prefix, extra):
    teacher = os.path.join(ROOT, SETUPS["cnn"][2])
    cmd = [kdistill, "--quiet"] + prefix + ["auto", os.path.join(ROOT, "examples", "fashion-mnist-cnn.yaml"),
                                            "--budget", f"{budget}s", "--no-final", "--out", out, "--force",
                                            "--target", "accuracy >= 100",
                                            "--set", "search={width: 1, depth: 3, min_epochs: 3}",
                                            "--set", "data.train_limit=10000", "--set", "distill.epochs=9",
                                            "--set", "distill.augment=null",
                                            "--set", "teacher.model=null", "--set", "teacher.train=null",
                                            "--set", f"teacher.path={teacher}"] + extra
    print("[distributed] " + " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    with open(os.path.join(out, "search.json")) as f:
        s = json.load(f)
    with open(os.path.join(out, "trials.json")) as f:
        trials = json.load(f)["trials"]
    seconds = s.get("search_seconds") or budget
    epochs = sum(t["epochs"] for t in trials)
    return {"trials": len(trials), "epochs": epochs, "search_seconds": seconds,
            "trials_per_minute": 60.0 * len(trials) / seconds, "epochs_per_minute": 60.0 * epochs / seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kdistill", default=os.path.join(ROOT, "build", "kdistill"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--setups", nargs="+", choices=list(SETUPS), default=list(SETUPS))
    parser.add_argument("--auto-budget", type=float, default=120.0, help="seconds of each auto search")
    parser.add_argument("--parts", nargs="+", choices=["scaling", "auto"], default=["scaling", "auto"])
    parser.add_argument("--json")
    args = parser.parse_args()
    rows, auto = {}, {}
    if set(args.parts) != {"scaling", "auto"}:  # the part not run comes from the earlier results
        with open(args.json) as f:
            earlier = json.load(f)
        rows = earlier["rows"] if "scaling" not in args.parts else {}
        auto = earlier["auto"] if "auto" not in args.parts else {}
    with tempfile.TemporaryDirectory() as scratch:
        for setup in (args.setups if "scaling" in args.parts else []):
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
    with tempfile.TemporaryDirectory() as scratch:
        for i, (name, prefix, extra) in enumerate(AUTO_LAYOUTS if "auto" in args.parts else []):
            auto[name] = auto_rate(args.kdistill, args.auto_budget, os.path.join(scratch, f"auto-{i}"), prefix, extra)
    lines += ["", "| kdistill auto, Fashion-MNIST CNN student (10k rows), " + f"{args.auto_budget:.0f} s budget | trials | "
              "trials per minute | trial epochs per minute |", "|---|---|---|---|"]
    for name, r in auto.items():
        lines.append(f"| {name} | {r['trials']} | {r['trials_per_minute']:.1f} | {r['epochs_per_minute']:.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.json:
        result = {"command": " ".join(sys.argv), "epochs": args.epochs, "rows": rows, "auto": auto, "markdown": table}
        write_json(args.json, result)


if __name__ == "__main__":
    main()
