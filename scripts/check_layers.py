#!/usr/bin/env python3
"""Checks that includes between the source folders point down the flow (docs/architecture.md).

Usage: check_layers.py [REPO]   exit 0 when every include of src/<a>/ and include/kd/<a>/ names a
folder below <a> in LAYERS (or <a> itself); otherwise prints each offending line and exits 1.
"""
import pathlib
import re
import sys

# Lowest first: a folder may include the folders before it.
LAYERS = ["util", "text", "data", "models", "io", "export", "losses", "report", "dist", "train", "teacher", "flow", "search", "recipe", "api", "cli"]
# A header directly in include/kd/ (kd/kdistill.h, the stable API) is of the "api" layer.

repo = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
include = re.compile(r'#include\s+"(?:(kd/[a-z_]+\.h)"|(?:kd/)?([a-z_]+)/)')


def layer_of(match):
    """The folder an include names; "api" for a header directly in kd/."""
    return "api" if match.group(1) else match.group(2)


problems = []
for root in (repo / "src", repo / "include" / "kd"):
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".h", ".cpp") or not path.is_file():
            continue
        parts = path.relative_to(root).parts
        folder = parts[0] if len(parts) > 1 else "api"
        if folder not in LAYERS:
            problems.append(f"{path}: folder {folder!r} is not in LAYERS (scripts/check_layers.py)")
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = include.match(line.strip())
            if not match or layer_of(match) == folder:
                continue
            target = layer_of(match)
            if target not in LAYERS or LAYERS.index(target) > LAYERS.index(folder):
                problems.append(f"{path}:{number}: {folder} includes {target}, which sits above it: {line.strip()}")
for problem in problems:
    print(problem)
sys.exit(1 if problems else 0)
