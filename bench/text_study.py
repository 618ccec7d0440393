#!/usr/bin/env python3
"""Text distillation study: a BERT-style transformer teacher -> a transformer student and a textcnn student
of about a tenth of its parameters (and a bidirectional GRU student), on Debian package descriptions -> sections (examples/apt-sections.yaml),
seeds 0, 1, 2.

  /usr/bin/python3 bench/text_study.py [--threads 1] [--jobs 2] [--setups ...] [--json bench/results/text_study.json]

The corpus is made first where missing (scripts/apt_corpus.py --sample 20000 --seed 0 into runs/apt/apt.csv):
it comes from this machine's package index, so another machine's numbers differ a little. Each seed trains
the teacher once (the transformer setup); the textcnn setup reads that seed's teacher file. Runs whose
metrics.json exists are reused (--fresh reruns them). Prints a markdown table: test accuracy mean +- std over
the seeds for baseline and distilled student, the gain, params, MACs, latency per text at batch 1, and on how
many seeds the validation McNemar test says distillation helped.
"""
import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys

from results_file import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "examples", "apt-sections.yaml")
CORPUS = os.path.join(ROOT, "runs", "apt", "apt.csv")

TEACHER = ["teacher.model={arch: transformer, embedding: 128, layers: 4, heads: 4, activation: gelu, dropout: 0.1}",
           "teacher.train={epochs: 10, batch_size: 64, optimizer: {name: adamw, lr: 0.001, weight_decay: 0.01}}"]
SETUPS = {
    "transformer": ("transformer 1 x 16, 2 heads", TEACHER + [
        "student.model={arch: transformer, embedding: 16, layers: 1, heads: 2, activation: gelu}"]),
    "textcnn": ("textcnn 16, [32]", ["teacher.model=null", "teacher.train=null",
                                     "teacher.path={out}/transformer/seed-{seed}/teacher.kdm",
                                     "student.model={arch: textcnn, embedding: 16, channels: [32]}"]),
}
SETUPS["bigru"] = ("bigru 16, [32]", ["teacher.model=null", "teacher.train=null",
                                      "teacher.path={out}/transformer/seed-{seed}/teacher.kdm",
                                      "student.model={arch: bigru, embedding: 16, channels: [32]}"])
# The transformer student with transformer-specific terms besides KD, on the same teacher file.
READ_TEACHER = ["teacher.model=null", "teacher.train=null", "teacher.path={out}/transformer/seed-{seed}/teacher.kdm",
                "student.model={arch: transformer, embedding: 16, layers: 1, heads: 2, activation: gelu}"]
KD = "{kind: kl, weight: 0.5, temperature: 2}, {kind: ce, weight: 0.5}"
MINILM = "{kind: attention_map, weight: 0.2, student: layer1.attention, teacher: layer4.attention}"
TINYBERT = "{kind: hint, weight: 0.1, student: layer1, teacher: layer4}"
SETUPS.update({
    "transformer_minilm": ("transformer 1 x 16 + attention maps (MiniLM)", READ_TEACHER + [
        f"distill.losses=[{KD}, {MINILM}]"]),
    "transformer_tinybert": ("transformer 1 x 16 + attention maps + hidden states (TinyBERT)", READ_TEACHER + [
        f"distill.losses=[{KD}, {MINILM}, {TINYBERT}]"]),
})


def run(kdistill, name, seed, out_root, threads, fresh):
    out = os.path.join(out_root, name, f"seed-{seed}")
    metrics_file = os.path.join(out, "metrics.json")
    if not fresh and os.path.exists(metrics_file):
        with open(metrics_file) as f:
            return json.load(f)
    cmd = [kdistill, "--quiet", "--threads", str(threads), "--seed", str(seed), "run", RECIPE, "--out", out, "--force"]
    for value in SETUPS[name][1]:
        cmd += ["--set", value.replace("{out}", out_root).replace("{seed}", str(seed))]
    print("[text-study] " + " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    with open(metrics_file) as f:
        return json.load(f)


def summary(runs):
    def stat(model, key, scale=1.0):
        values = [r["models"][model]["test"][key] * scale for r in runs]
        return {"values": values, "mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0}
    teacher, student = runs[0]["models"]["teacher"], runs[0]["models"]["student"]
    return {"teacher": stat("teacher", "accuracy", 100), "baseline": stat("baseline", "accuracy", 100),
            "student": stat("student", "accuracy", 100),
            "teacher_size": {k: teacher[k] for k in ("params", "macs")} | {"latency_ms": teacher["latency_ms"]["batch1"]},
            "student_size": {k: student[k] for k in ("params", "macs")} | {"latency_ms": student["latency_ms"]["batch1"]},
            "helped_on_validation": sum(r["distill"]["validation"].get("verdict") == "helped" for r in runs),
            "seeds": [r["seed"] for r in runs]}


def markdown(rows):
    lines = ["| model | params | MACs | ms per text (batch 1) | test accuracy % (seeds 0, 1, 2) | gain | "
             "validation: helped |", "|---|---|---|---|---|---|---|"]
    first = rows[next(iter(rows))]
    t, ts = first["teacher"], first["teacher_size"]
    lines.append(f"| teacher: transformer 4 x 128, 4 heads | {ts['params']:,} | {ts['macs']:,} | {ts['latency_ms']:.3f} | "
                 f"{t['mean']:.2f} ± {t['std']:.2f} | | |")
    for name, row in rows.items():
        s, b, size = row["student"], row["baseline"], row["student_size"]
        values = lambda m: ", ".join(f"{v:.2f}" for v in m["values"])
        lines.append(f"| {SETUPS[name][0]}: baseline | {size['params']:,} | {size['macs']:,} | {size['latency_ms']:.3f} | "
                     f"{b['mean']:.2f} ± {b['std']:.2f} ({values(b)}) | | |")
        lines.append(f"| {SETUPS[name][0]}: distilled | {size['params']:,} | {size['macs']:,} | {size['latency_ms']:.3f} | "
                     f"{s['mean']:.2f} ± {s['std']:.2f} ({values(s)}) | {s['mean'] - b['mean']:+.2f} | "
                     f"{row['helped_on_validation']} of {len(row['seeds'])} seeds |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kdistill", default=os.path.join(ROOT, "build", "kdistill"))
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "text-study"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--setups", nargs="+", choices=list(SETUPS), default=["transformer", "textcnn"])
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    if not os.path.exists(CORPUS):
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "apt_corpus.py"), "--out", CORPUS,
                        "--sample", "20000", "--seed", "0"], check=True)
    rows = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        # The transformer setup trains each seed's teacher; the others read it.
        for name in ["transformer"] + [n for n in args.setups if n != "transformer"]:
            runs = list(pool.map(lambda s: run(args.kdistill, name, s, args.out, args.threads, args.fresh), args.seeds))
            if name in args.setups:
                rows[name] = summary(runs)
    table = markdown(rows)
    print(table)
    if args.json:
        result = {"command": " ".join(sys.argv), "rows": rows, "markdown": table}
        write_json(args.json, result)


if __name__ == "__main__":
    main()
