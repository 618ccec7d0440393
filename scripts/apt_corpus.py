#!/usr/bin/env python3
"""A text-classification corpus from the Debian package index, which every Debian machine has.

`apt-cache dumpavail` lists every package the machine knows of (about 63,000 after `apt-get update`)
with its one-line `Description:` and its `Section:` (libs, python, devel, games, science, sound, ...).
Each distinct description becomes one example: the text is the description, the label the section
(its last component: "contrib/games" -> "games"). Packages whose description another package of
another section also has are dropped (the label would be a coin toss); sections with fewer than
--min-count examples are dropped; --sample draws a seeded stratified sample.

Usage:
  scripts/apt_corpus.py --out apt.csv [--sample 20000] [--seed 0] [--min-count 200] [--format csv|jsonl]
The CSV has the columns text,section; JSON Lines has {"text": ..., "section": ...}. Deterministic: the
same package index, sample size and seed give the same file.
"""
import argparse
import collections
import csv
import json
import os
import random
import subprocess
import sys
import tempfile


def packages():
    """(description, section) for every package of `apt-cache dumpavail`, in its order."""
    try:
        text = subprocess.run(["apt-cache", "dumpavail"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"apt_corpus: apt-cache dumpavail failed ({e}); is this a Debian machine after apt-get update?")
    for record in text.split("\n\n"):
        fields = {}
        for line in record.splitlines():
            key, sep, value = line.partition(": ")
            if sep and not line.startswith(" "):
                fields[key] = value.strip()
        if "Description" in fields and "Section" in fields:
            yield fields["Description"], fields["Section"].rsplit("/", 1)[-1]


def corpus(min_count):
    sections = collections.defaultdict(set)
    for description, section in packages():
        sections[description].add(section)
    rows = sorted((d, next(iter(s))) for d, s in sections.items() if len(s) == 1)
    counts = collections.Counter(section for _, section in rows)
    return [(d, s) for d, s in rows if counts[s] >= min_count]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--sample", type=int, default=0, help="this many examples, stratified by section (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-count", type=int, default=200, help="drop sections with fewer examples")
    parser.add_argument("--format", choices=["csv", "jsonl"], default=None, help="default: from --out's extension")
    args = parser.parse_args()
    rows = corpus(args.min_count)
    if not rows:
        sys.exit("apt_corpus: the package index has no section with enough packages; run apt-get update")
    if 0 < args.sample < len(rows):
        by_section = collections.defaultdict(list)
        for row in rows:
            by_section[row[1]].append(row)
        rng = random.Random(args.seed)
        picked = []
        for section in sorted(by_section):
            members = by_section[section]
            picked += rng.sample(members, max(1, round(args.sample * len(members) / len(rows))))
        rows = sorted(picked)
        rng.shuffle(rows)
    else:
        random.Random(args.seed).shuffle(rows)
    form = args.format or ("jsonl" if args.out.endswith((".jsonl", ".json")) else "csv")
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, newline="", encoding="utf-8") as f:
        if form == "csv":
            writer = csv.writer(f)
            writer.writerow(["text", "section"])
            writer.writerows(rows)
        else:
            for text, section in rows:
                f.write(json.dumps({"text": text, "section": section}, ensure_ascii=False) + "\n")
    os.replace(f.name, args.out)
    counts = collections.Counter(s for _, s in rows)
    print(f"apt_corpus: {len(rows)} examples, {len(counts)} sections -> {args.out}")


if __name__ == "__main__":
    main()
