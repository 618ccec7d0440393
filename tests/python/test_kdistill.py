"""The Python package (python/kdistill) against the command line: run by ctest with Debian's python3,
PYTHONPATH=BUILD/python and KD_CLI_PATH=BUILD/kdistill (tests/CMakeLists.txt)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import kdistill

THREADS = 2
CLI = os.environ["KD_CLI_PATH"]


def digits():
    """scikit-learn's 8x8 digits (1,797 x 64 pixels of 0-16, 10 classes): 1,500 train, 297 test rows."""
    data = load_digits()
    x = data.data.astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    return x[:1500], y[:1500], x[1500:], y[1500:]


class Teacher(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))

    def forward(self, x):
        return self.net(x.flatten(1) / 16.0)


def train_teacher(x, y):
    """A teacher trained in PyTorch for 60 full-batch Adam steps, scripted."""
    torch.manual_seed(0)
    net = Teacher()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xs), ys).backward()
        opt.step()
    return torch.jit.script(net.eval())


RECIPE = {
    "task": "classification",
    "seed": 3,
    "data": {"val_fraction": 0.1, "normalize": "standard"},
    "teacher": {"input": "raw"},
    "student": {"model": {"arch": "mlp", "hidden": [16]}},
    "distill": {
        "losses": [{"kind": "kl", "weight": 0.7, "temperature": 4}, {"kind": "ce", "weight": 0.3}],
        "epochs": 6,
        "batch_size": 64,
        "optimizer": {"name": "adam", "lr": 0.01},
    },
}

MODELS = ("teacher", "baseline", "student")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One distillation from arrays and a ScriptModule teacher in Python, and the same recipe run by the
    command line on the same arrays saved as .npy files and the teacher saved as .pt."""
    folder = tmp_path_factory.mktemp("kdistill")
    x, y, x_test, y_test = digits()
    teacher = train_teacher(x, y)
    kdistill.setup(threads=THREADS, log_level="warn")
    metrics = kdistill.distill(RECIPE, out=folder / "python", x=x, y=torch.from_numpy(y), x_test=x_test,
                               y_test=y_test, teacher=teacher)

    for name, a in (("x", x), ("y", y), ("x_test", x_test), ("y_test", y_test)):
        np.save(folder / f"{name}.npy", a)
    teacher.save(str(folder / "teacher.pt"))
    recipe = json.loads(json.dumps(RECIPE))
    recipe["data"].update({"format": "npy", "train": {"inputs": "x.npy", "labels": "y.npy"},
                           "test": {"inputs": "x_test.npy", "labels": "y_test.npy"}})
    recipe["teacher"]["path"] = "teacher.pt"
    (folder / "recipe.yaml").write_text(json.dumps(recipe))  # JSON is YAML
    subprocess.run([CLI, "--threads", str(THREADS), "-q", "run", str(folder / "recipe.yaml"), "--out", str(folder / "cli")],
                   check=True)
    cli_metrics = json.loads((folder / "cli" / "metrics.json").read_text())
    return {"folder": folder, "metrics": metrics, "cli": cli_metrics, "x_test": x_test, "y_test": y_test}


def test_distilling_arrays_in_python_gives_the_numbers_of_the_command_line(run):
    for model in MODELS:
        python_test = run["metrics"]["models"][model]["test"]
        cli_test = run["cli"]["models"][model]["test"]
        for key in ("accuracy", "nll", "macro_f1"):
            assert python_test[key] == cli_test[key], (model, key, python_test[key], cli_test[key])
    # The teacher made in PyTorch was learned from: the distilled student is scored, and is a real model.
    assert run["metrics"]["models"]["teacher"]["test"]["accuracy"] > 0.9
    assert run["metrics"]["models"]["student"]["test"]["accuracy"] > 0.8
    assert (run["folder"] / "python" / "student.kdm").stat().st_size > 0


def test_predict_scores_the_student_as_the_run_did(run):
    student = run["folder"] / "python" / "student.kdm"
    probabilities = kdistill.predict(student, run["x_test"], softmax=True)
    assert isinstance(probabilities, torch.Tensor) and probabilities.shape == (len(run["y_test"]), 10)
    assert torch.allclose(probabilities.sum(1), torch.ones(len(run["y_test"])), atol=1e-5)
    accuracy = (probabilities.argmax(1).numpy() == run["y_test"]).mean()
    assert accuracy == pytest.approx(run["metrics"]["models"]["student"]["test"]["accuracy"], abs=1e-9)


def test_evaluate_and_the_torchscript_student(run):
    student = run["folder"] / "python" / "student.kdm"
    x, y, x_test, y_test = digits()
    result = kdistill.evaluate(student, RECIPE, x=x, y=y, x_test=x_test, y_test=y_test)
    assert result["metrics"]["test"]["accuracy"] == run["metrics"]["models"]["student"]["test"]["accuracy"]
    module = kdistill.load_torchscript(student)
    assert isinstance(module, torch.jit.ScriptModule)
    assert module(torch.zeros(3, 64)).shape == (3, 10)


def test_failures_are_kdistill_errors_with_the_command_lines_message(tmp_path):
    with pytest.raises(kdistill.Error) as bad_format:
        kdistill.distill({**RECIPE, "data": {"format": "parquet"}}, out=tmp_path / "a", x=np.zeros((4, 2)), y=np.zeros(4))
    assert str(bad_format.value).startswith("data.format: parquet with arrays in memory") and "\n" not in str(bad_format.value)
    with pytest.raises(kdistill.Error, match=r"x has shape \[4, 2\] and y \[3\]"):
        kdistill.distill(RECIPE, out=tmp_path / "b", x=np.zeros((4, 2)), y=np.zeros(3), teacher=train_teacher(*digits()[:2]))
    with pytest.raises(kdistill.Error, match="torch.jit.script"):
        kdistill.distill(RECIPE, out=tmp_path / "c", x=np.zeros((4, 2)), y=np.zeros(4), teacher=Teacher())
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: clasification\nteacher: {}\n")
    with pytest.raises(kdistill.Error, match=r"bad\.yaml:1: task: \"clasification\" is not a task"):
        kdistill.distill(bad, out=tmp_path / "d")
    with pytest.raises(kdistill.Error, match="no-such-file.kdm"):
        kdistill.predict(tmp_path / "no-such-file.kdm", np.zeros((1, 64)))


def test_version_is_the_command_lines():
    cli = subprocess.run([CLI, "--version"], check=True, capture_output=True, text=True).stdout.strip()
    assert cli == f"kdistill {kdistill.version()}"
    assert kdistill.__version__ == kdistill.version().split()[0]


def test_ctrl_c_writes_a_checkpoint_and_raises_keyboard_interrupt(tmp_path):
    """SIGINT during a run from Python: the step ends, a checkpoint is written, KeyboardInterrupt carries
    the command line's message (resume=True would go on from the checkpoint: tests/cli cover resuming)."""
    script = f"""
import sys, kdistill
sys.path.insert(0, {json.dumps(os.path.dirname(__file__))})
from test_kdistill import digits
x, y, _, _ = digits()
recipe = {{"task": "classification", "seed": 0,
           "teacher": {{"model": {{"arch": "mlp", "hidden": [256, 256]}}, "train": {{"epochs": 400, "batch_size": 32}}}},
           "student": {{"model": {{"arch": "mlp", "hidden": [8]}}}}, "distill": {{"epochs": 1}}}}
kdistill.setup(threads=1, log_level="warn")
print("started", flush=True)
try:
    kdistill.distill(recipe, out=sys.argv[1], x=x, y=y)
    print("finished", flush=True)
except KeyboardInterrupt as e:
    print("interrupted:", e, flush=True)
    sys.exit(130)
"""
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "started"
    # Signal once the teacher is in its epochs (its first checkpoint is on disk), not at a fixed
    # time: under load a fixed wait can land before the loop; the 400 epochs take minutes.
    deadline = time.time() + 120
    while not (out / "checkpoints" / "teacher.ckpt").exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, "the run ended before it could be interrupted"
    child.send_signal(signal.SIGINT)
    stdout, _ = child.communicate(timeout=120)
    assert child.returncode == 130, stdout
    assert "interrupted: teacher: stopped by SIGINT after epoch" in stdout
    assert "checkpoint written" in stdout
    assert any(p.suffix == ".ckpt" for p in out.rglob("*")), list(out.rglob("*"))
