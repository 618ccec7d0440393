"""Writes a benchmark's results: JSON in a temporary file beside the target, then renamed over it, so that an
interrupted run never leaves half a results file."""
import json
import os
import tempfile


def write_json(path, result):
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=folder, delete=False) as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(f.name, path)
