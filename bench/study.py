#!/usr/bin/python3
"""The README's distillation study: each example recipe run with several seeds by
`kdistill run`, then teacher / baseline / distilled student summarised as mean ± std.

    /usr/bin/python3 bench/study.py --seeds 0 1 2 --json bench/results/study.json
    /usr/bin/python3 bench/study.py --setups cnn --methods --jobs 2 --threads 1 \
        --merge bench/results/study.json --json bench/results/study.json

A seed whose run folder already holds metrics.json for the same recipe is read, not
rerun (delete runs/study or pass --fresh to redo it). Prints a Markdown table.
--methods adds rows per teaching method on the CNN pair (seed 0's teacher, the same student
and epochs): plain KD, consistent bank views V = 1, 4, 16, online mixup function matching;
--methods mlp the same on the MLP pair (views of shifted, mixed and noisy images, longer schedules).
--merge keeps the rows of setups not run now from an earlier summary. cnn_ensemble and
mlp_ensemble use the cnn and mlp setups' three teacher files as one ensemble teacher (trained
first where missing).
"""
import concurrent.futures
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from results_file import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (recipe, one-line description for the table)
SETUPS = {
    "cnn": ("examples/fashion-mnist-cnn.yaml", "Fashion-MNIST, CNN teacher -> CNN student"),
    # The cnn setup's three teacher files (seeds 0, 1, 2) as one ensemble teacher, for every seed.
    "cnn_ensemble": ("examples/fashion-mnist-cnn.yaml",
                     "Fashion-MNIST, ensemble of the 3 CNN teachers -> the same CNN student (KD alone)",
                     ["teacher.model=null", "teacher.train=null", "distill.stages=null",
                      "teacher.path=[{out}/cnn/seed-0/teacher.kdm, {out}/cnn/seed-1/teacher.kdm, "
                      "{out}/cnn/seed-2/teacher.kdm]"]),
    "mlp": ("examples/fashion-mnist-mlp.yaml", "Fashion-MNIST, MLP 2x1200 -> MLP 2x32"),
    "mlp_ensemble": ("examples/fashion-mnist-mlp.yaml",
                     "Fashion-MNIST, ensemble of the 3 MLP 2x1200 teachers -> the same MLP 2x32",
                     ["teacher.model=null", "teacher.train=null",
                      "teacher.path=[{out}/mlp/seed-0/teacher.kdm, {out}/mlp/seed-1/teacher.kdm, "
                      "{out}/mlp/seed-2/teacher.kdm]"]),
    "labels1000": ("examples/fashion-mnist-1000-labels.yaml",
                   "Fashion-MNIST, 1,000 labels + 53,000 transfer images, MLP -> MLP 128"),
    "diabetes": ("examples/diabetes-regression.yaml", "diabetes (scikit-learn), 5-fold CV, MLP -> linear"),
    # The defaults: no distill section at all (objective, epochs, batch size and rate all kdistill's).
    "digits": ("examples/digits.yaml", "digits (scikit-learn), 5-fold CV, MLP 2x256 -> MLP 8, distill defaults",
               ["distill=null", "data.folds=5"]),
    "breast_cancer": ("examples/breast-cancer.yaml",
                      "breast cancer (scikit-learn), 5-fold CV, MLP 2x256 -> MLP 8, distill defaults",
                      ["distill=null", "data.folds=5"]),
}

# Alignment on the CNN pair (issue 23's table): the cnn setup's teacher file of the same seed, the same
# student, epochs and optimiser; the baseline is the cnn setup's own (same seed and steps), not rerun.
# Each row replaces the recipe's staged FitNets (a hint stage, then KD) with its own objective.
KD = "{kind: kl, weight: 0.5, temperature: 2}, {kind: ce, weight: 0.5}"
ALIGNMENT = {
    "cnn_hint": ("KD + hint (conv3_pool -> conv3_pool, weight 1)",
                 ["distill.losses=[" + KD + ", {kind: hint, weight: 1, student: conv3_pool, teacher: conv3_pool}]"]),
    "cnn_attention": ("KD + attention (conv2_pool, weight 1000)",
                      ["distill.losses=[" + KD + ", {kind: attention, weight: 1000, student: conv2_pool, "
                       "teacher: conv2_pool}]"]),
    "cnn_rkd": ("KD + rkd (gap -> gap, weight 25)",
                ["distill.losses=[" + KD + ", {kind: rkd, weight: 25, student: gap, teacher: gap}]"]),
    "cnn_dkd": ("DKD (T 4, alpha 1, beta 8) + ce", ["distill.losses=[{kind: dkd, temperature: 4}, {kind: ce}]"]),
    "cnn_kd": ("KD alone (the recipe without its hint stage: kl T 2 + ce, 0.5 each, 60 epochs)", []),
    "cnn_ensemble_correctness": ("KD from the three teachers, each row's members weighted by their precision "
                                 "(combine: correctness)",
                                 ["teacher.path=[{out}/cnn/seed-0/teacher.kdm, {out}/cnn/seed-1/teacher.kdm, "
                                  "{out}/cnn/seed-2/teacher.kdm]", "teacher.combine=correctness"]),
    "cnn_init_leading": ("KD, student initialised from the teacher (leading slices)", ["student.init=teacher"]),
    "cnn_init_importance": ("KD, student initialised from the teacher (units by L1 importance)",
                            ["student.init={from: teacher, units: importance}"]),
    "cnn_init_variance": ("KD, student initialised from the teacher (units by activation variance)",
                          ["student.init={from: teacher, units: variance}"]),
}
for _name, (_description, _sets) in ALIGNMENT.items():
    SETUPS[_name] = ("examples/fashion-mnist-cnn.yaml", "Fashion-MNIST CNN pair: " + _description,
                     ["teacher.model=null", "teacher.train=null", "teacher.path={out}/cnn/seed-{seed}/teacher.kdm",
                      "distill.baseline=false", "distill.stages=null"] + _sets)
# Setups whose baseline is another setup's (same student, seed and steps).
BASELINE_FROM = {name: "cnn" for name in ALIGNMENT}

# Ensemble setups -> the setup whose three teacher files (seeds 0, 1, 2) they combine.
ENSEMBLES = {"cnn_ensemble": "cnn", "mlp_ensemble": "mlp"}

# Teaching methods on the CNN pair: name -> --set values (on top of the cnn recipe, whose hint stage
# each drops: a bank holds outputs only).
METHODS = {name: ["distill.stages=null"] + sets for name, sets in {
    "plain KD, 20 epochs": ["distill.epochs=20"],
    "plain KD, 60 epochs (cached outputs, no augmentation)": [],
    "bank V=1 (shift 1)": ["distill.augment={shift: 1}", "distill.views=1"],
    "bank V=4 (shift 1)": ["distill.augment={shift: 1}", "distill.views=4"],
    "bank V=16 (shift 1)": ["distill.augment={shift: 1}", "distill.views=16"],
    "online function matching (shift 1 + mixup 0.2)": ["distill.augment={shift: 1, mixup: 0.2}", "distill.views=online"],
}.items()}
# Teaching methods on the MLP pair (seed 0's teacher, the same 2x32 student): the recipe before
# (no augmentation, 60 epochs), longer schedules and the views that do or do not help an MLP.
MLP_METHODS = {
    "plain KD, 60 epochs (the recipe before: cached outputs, no augmentation)":
        ["distill.augment=none", "distill.views=null", "distill.epochs=60"],
    "plain KD, 200 epochs": ["distill.augment=none", "distill.views=null", "distill.epochs=200"],
    "kl alone at T = 4, 200 epochs": ["distill.augment=none", "distill.views=null", "distill.epochs=200",
                                      "distill.losses=[{kind: kl, weight: 1, temperature: 4}]"],
    "bank V=8 (shift 1), 160 epochs": ["distill.augment={shift: 1}", "distill.views=8", "distill.epochs=160"],
    "online function matching (mixup 0.5), 100 epochs":
        ["distill.augment={mixup: 0.5}", "distill.views=online", "distill.epochs=100"],
    "bank V=8 (noise 0.2), 80 epochs": ["distill.augment={noise: 0.2}", "distill.views=8", "distill.epochs=80"],
    "bank V=16 (noise 0.2), 160 epochs (the recipe now)": [],
}
PAIR_METHODS = {"cnn": METHODS, "mlp": MLP_METHODS}


def methods_tag(pair):
    """The summary's key and the runs' folder for a pair's method rows ("methods": the CNN pair's)."""
    return "methods" if pair == "cnn" else f"{pair}_methods"


def run_setup(kdistill, name, seed, out_root, threads, fresh, sets=(), tag=None):
    recipe = os.path.join(ROOT, SETUPS[name][0])
    sets = [v.replace("{out}", out_root).replace("{seed}", str(seed))
            for v in (SETUPS[name][2] if len(SETUPS[name]) > 2 else [])] + list(sets)
    out = os.path.join(out_root, tag or name, f"seed-{seed}")
    metrics_file = os.path.join(out, "metrics.json")
    if not fresh and os.path.exists(metrics_file):
        with open(metrics_file) as f:
            metrics = json.load(f)
        if metrics.get("seed") == seed:
            print(f"[study] {name} seed {seed}: reusing {metrics_file}", file=sys.stderr)
            return metrics, None
    cmd = [kdistill, "--quiet", "--threads", str(threads), "--seed", str(seed), "run", recipe, "--out", out, "--force"]
    for value in sets:
        cmd += ["--set", value]
    print("[study] " + " ".join(cmd), file=sys.stderr)
    start = time.time()
    subprocess.run(cmd, check=True)
    seconds = time.time() - start
    with open(metrics_file) as f:
        return json.load(f), seconds


def fold_mean(value):
    return value["mean"] if isinstance(value, dict) else value


def summarise(name, runs, out_root):
    for r in runs:
        if "baseline" not in r["models"] and name in BASELINE_FROM:
            with open(os.path.join(out_root, BASELINE_FROM[name], f"seed-{r['seed']}", "metrics.json")) as f:
                r["models"]["baseline"] = json.load(f)["models"]["baseline"]
    regression = runs[0]["task"] == "regression"
    key = "rmse" if regression else "errors"
    row = {"setup": name, "description": SETUPS[name][1], "metric": key, "seeds": [r["seed"] for r in runs],
           "test_rows": runs[0]["data"]["test"]}
    for model in ("teacher", "baseline", "student"):
        values = [fold_mean(r["models"][model]["test"][key]) for r in runs]
        row[model] = {"values": values, "mean": statistics.mean(values),
                      "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                      "params": runs[0]["models"][model]["params"]}
    recovered = []
    for r in runs:
        t, b, s = (fold_mean(r["models"][m]["test"][key]) for m in ("teacher", "baseline", "student"))
        if b > t:  # errors and RMSE: lower is better; no gap to recover when the baseline is as good
            recovered.append(100.0 * (b - s) / (b - t))
    row["gap_recovered_percent"] = {"values": recovered, "mean": statistics.mean(recovered) if recovered else None,
                                    "seeds_with_a_gap": len(recovered)}
    epochs = [statistics.mean(r["timing"]["distill_epoch_seconds"]) for r in runs if r["timing"].get("distill_epoch_seconds")]
    row["student_seconds_per_epoch"] = statistics.mean(epochs) if epochs else None
    return row


def alignment_markdown(rows):
    """The CNN pair's methods side by side (issue 23's table): plain KD, the ensemble, the alignment setups."""
    by_name = {r["setup"]: r for r in rows}
    names = [n for n in ["cnn", "cnn_ensemble"] + list(ALIGNMENT) if n in by_name]
    if not any(n in ALIGNMENT for n in names):
        return ""
    baseline = by_name[names[0]]["baseline"]
    lines = ["| method | student test errors (seeds 0, 1, 2) | gap recovered | student s / epoch |", "|---|---|---|---|",
             f"| baseline (labels only) | {baseline['mean']:.0f} ± {baseline['std']:.0f} "
             f"({', '.join(f'{v:.0f}' for v in baseline['values'])}) | - | - |"]
    for name in names:
        r = by_name[name]
        label = {"cnn": "staged FitNets (the recipe: hint (conv3_pool) alone for 10 epochs, then KD for 50)",
                 "cnn_ensemble": "KD from the three teachers as one ensemble"}.get(name, ALIGNMENT.get(name, ("",))[0])
        s, gap = r["student"], r["gap_recovered_percent"]
        gap_text = "-" if gap["mean"] is None else f"{gap['mean']:.0f}% ({', '.join(f'{v:.0f}' for v in gap['values'])})"
        sec = r.get("student_seconds_per_epoch")
        lines.append(f"| {label} | {s['mean']:.0f} ± {s['std']:.0f} ({', '.join(f'{v:.0f}' for v in s['values'])}) | "
                     f"{gap_text} | {'-' if sec is None else f'{sec:.2f}'} |")
    return "\n".join(lines)


def method_row(method, metrics, seconds):
    timing = metrics["timing"]
    teaching = metrics["distill"]["teaching"]
    epochs = timing["distill_epoch_seconds"]
    return {"method": method, "errors": metrics["models"]["student"]["test"]["errors"],
            "baseline_errors": metrics["models"]["baseline"]["test"]["errors"],
            "teacher_errors": metrics["models"]["teacher"]["test"]["errors"],
            "verdict": metrics["distill"]["validation"].get("verdict"),
            "p_value": metrics["distill"]["validation"].get("p_value"),
            "teaching": teaching, "teacher_seconds_for_student": teaching.get("seconds", 0.0),
            "student_seconds_per_epoch": statistics.mean(epochs) if epochs else None,
            "run_seconds": seconds}


def methods_markdown(rows):
    lines = ["| method | student test errors | baseline | teacher | teacher s (bank) | student s / epoch | bank bytes | "
             "val verdict (p) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bank = r["teaching"]
        lines.append(f"| {r['method']} | {r['errors']:.0f} | {r['baseline_errors']:.0f} | {r['teacher_errors']:.0f} | "
                     f"{r['teacher_seconds_for_student']:.1f} | {r['student_seconds_per_epoch']:.2f} | "
                     f"{bank.get('bytes', 0):,} ({bank['mode']}) | {r['verdict']} ({r['p_value']:.3g}) |")
    return "\n".join(lines)


def markdown(rows):
    lines = ["| setup | metric | teacher | baseline | distilled | gap recovered |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        digits = 3 if row["metric"] == "rmse" else 0

        def cell(model):
            m = row[model]
            places = digits if row["metric"] == "rmse" or m["mean"] >= 100 else 1
            return f"{m['mean']:.{places}f} ± {m['std']:.{places}f} ({m['params']:,} params)"

        gap = row["gap_recovered_percent"]["mean"]
        with_gap = row["gap_recovered_percent"]["seeds_with_a_gap"]
        gap_text = "no gap" if gap is None else f"{gap:.0f}%" + (
            "" if with_gap == len(row["seeds"]) else f" ({with_gap} of {len(row['seeds'])} seeds had a gap)")
        metric = "test RMSE" if row["metric"] == "rmse" else f"test errors / {row.get('test_rows', 10000):,}"
        lines.append(f"| {row['description']} | {metric} | {cell('teacher')} | {cell('baseline')} | "
                     f"{cell('student')} | {gap_text} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kdistill", default=os.path.join(ROOT, "build", "kdistill"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "study"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", help="write the summary here (atomically)")
    parser.add_argument("--fresh", action="store_true", help="rerun seeds that already have metrics.json")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (give each --threads 1 on 2 cores)")
    parser.add_argument("--methods", nargs="*", choices=list(PAIR_METHODS),
                        help="also the rows per teaching method on these pairs (none named: the CNN pair)")
    parser.add_argument("--merge", help="keep the rows of setups not run now from this earlier summary")
    args = parser.parse_args()
    if args.methods == []:
        args.methods = ["cnn"]

    rows, seconds = [], {}
    for ensemble, base in list(ENSEMBLES.items()) + list(BASELINE_FROM.items()):
        if ensemble not in args.setups:
            continue
        # Its teachers are the base setup's: trained first where missing.
        missing = [seed for seed in (0, 1, 2)
                   if not os.path.exists(os.path.join(args.out, base, f"seed-{seed}", "teacher.kdm"))]
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(lambda seed: run_setup(args.kdistill, base, seed, args.out, args.threads, False), missing))
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        jobs = {(name, seed): pool.submit(run_setup, args.kdistill, name, seed, args.out, args.threads, args.fresh)
                for name in args.setups for seed in args.seeds}
        for name in args.setups:
            runs = []
            for seed in args.seeds:
                metrics, took = jobs[(name, seed)].result()
                runs.append(metrics)
                if took is not None:
                    seconds[f"{name}/seed-{seed}"] = round(took, 1)
            rows.append(summarise(name, runs, args.out))
    methods = {}
    for pair in args.methods or []:
        teacher = os.path.join(args.out, pair, f"seed-{args.seeds[0]}", "teacher.kdm")
        if not os.path.exists(teacher):
            run_setup(args.kdistill, pair, args.seeds[0], args.out, args.threads, False)
        tag = methods_tag(pair)
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            jobs = {}
            for i, (method, sets) in enumerate(PAIR_METHODS[pair].items()):
                values = ["teacher.path=" + teacher, "teacher.model=null", "teacher.train=null"] + sets
                jobs[method] = pool.submit(run_setup, args.kdistill, pair, args.seeds[0], args.out, args.threads,
                                           args.fresh, values, f"{tag}/{i}")
            methods[tag] = [method_row(method, *jobs[method].result()) for method in PAIR_METHODS[pair]]
    earlier = {}
    if args.merge and os.path.exists(args.merge):
        with open(args.merge) as f:
            earlier = json.load(f)
        done = {r["setup"] for r in rows}
        rows += [r for r in earlier["rows"] if r["setup"] not in done]
        rows.sort(key=lambda r: list(SETUPS).index(r["setup"]))
        for tag in map(methods_tag, PAIR_METHODS):
            if tag not in methods and earlier.get(tag):
                methods[tag] = earlier[tag]
    table = markdown(rows)
    print(table)
    alignment = alignment_markdown(rows)
    if alignment:
        print()
        print(alignment)
    for rows_of_methods in methods.values():
        print()
        print(methods_markdown(rows_of_methods))
    if args.json:
        result = {"command": "/usr/bin/python3 bench/study.py " + " ".join(sys.argv[1:]),
                  "machine": {"cpus": os.cpu_count(), "threads": args.threads, "platform": platform.platform()},
                  "seconds_per_run": seconds, "rows": rows, "markdown": table}
        if alignment:
            result["alignment_markdown"] = alignment
        for tag, rows_of_methods in methods.items():
            result[tag] = rows_of_methods
            result[tag + "_markdown"] = methods_markdown(rows_of_methods)
        for key, value in earlier.items():  # what the summary kept that this run does not make
            result.setdefault(key, value)
        write_json(args.json, result)


if __name__ == "__main__":
    main()
