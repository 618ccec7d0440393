"""kdistill from Python: knowledge distillation on kdistill's C++ core (docs/python.md).

    import kdistill
    metrics = kdistill.distill("examples/iris.yaml", out="runs/iris")
    metrics = kdistill.distill(recipe_dict, out="runs/mine", x=x_train, y=y_train,
                               x_test=x_test, y_test=y_test, teacher=torch.jit.script(net))
    student = kdistill.load_torchscript("runs/mine/student.kdm")     # a torch.jit.ScriptModule
    probabilities = kdistill.predict("runs/mine/student.kdm", x_new, softmax=True)

Recipes are the command line's (docs/recipes.md): a YAML file, or a dict of the same keys. Arrays
(NumPy or torch) are handed to the C++ core without copies and read as the same arrays in .npy
files would be: a run gives the numbers `kdistill run` gives on those files with the same seed and
threads. Failures raise kdistill.Error with the command line's one-line message; progress lines go
to stderr, as the command line's.
"""
import json
import os
import tempfile

import torch  # first: loads libtorch and torch's Python types, which the C++ core shares

from . import _kdistill
from ._kdistill import Error

__all__ = ["Error", "setup", "distill", "evaluate", "predict", "export", "load_torchscript", "version"]
__version__ = _kdistill.version()
_threads = None


def version():
    """The release and the source it was built from, as `kdistill --version` prints it."""
    return _kdistill.build_version()


def setup(threads=0, log_level="info"):
    """Threads (0: every core), the fitting BLAS kernels and the log level (trace, debug, info, warn,
    error, off). Called with the defaults by the first run when not called before; returns the
    threads in force."""
    global _threads
    _threads = _kdistill.setup(int(threads), str(log_level))
    return _threads


def _ensure_setup():
    if _threads is None:
        setup()


def _recipe(recipe):
    """(YAML text, its name in messages, folder that relative paths are relative to) of a recipe path or dict."""
    if isinstance(recipe, (str, os.PathLike)):
        path = os.fspath(recipe)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise Error(f"{path}: cannot read the recipe: {e.strerror}") from None
        return text, path, os.path.dirname(os.path.abspath(path))
    if isinstance(recipe, dict):
        try:
            return json.dumps(recipe), "recipe", os.getcwd()  # JSON is YAML
        except TypeError as e:
            raise Error(f"recipe: {e} (a recipe dict holds strings, numbers, lists and dicts)") from None
    raise Error(f"recipe: expected a YAML file's path or a dict, got {type(recipe).__name__}")


def _tensor(name, a):
    if a is None:
        return None
    if isinstance(a, torch.Tensor):
        return a
    try:
        return torch.as_tensor(a)  # a NumPy array's memory, not a copy
    except (TypeError, ValueError, RuntimeError) as e:
        raise Error(f"{name}: not an array of numbers ({e})") from None


def _model_file(name, model, folder):
    """A path for a model argument: a file's path as it is, a ScriptModule saved in `folder`."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    if isinstance(model, torch.jit.ScriptModule):
        path = os.path.join(folder, f"{name}.pt")
        model.save(path)
        return path
    if isinstance(model, torch.nn.Module):
        raise Error(f"{name}: a torch.nn.Module; pass torch.jit.script(module) or torch.jit.trace(module, example)")
    raise Error(f"{name}: expected a model file's path or a torch.jit.ScriptModule, got {type(model).__name__}")


def _arrays(x, y, x_test, y_test):
    return [_tensor(n, a) for n, a in (("x", x), ("y", y), ("x_test", x_test), ("y_test", y_test))]


def distill(recipe, out="runs/latest", *, x=None, y=None, x_test=None, y_test=None, teacher=None, student=None,
            overrides=(), force=False, resume=False):
    """`kdistill run`: trains (or loads) the teacher, a baseline student and the distilled student, scores
    them on the same test rows, and writes the run folder `out` (report.html, metrics.json, student.kdm).

    recipe: a YAML file's path or a dict of its keys. x, y (and x_test, y_test): arrays in place of the
    recipe's data files. teacher, student: a torch.jit.ScriptModule or a model file, in place of the
    recipe's teacher.path / student.path. overrides: "key=value" strings, as --set. force: write over a
    finished run in `out`; resume: continue an interrupted one. Returns metrics.json as a dict."""
    _ensure_setup()
    text, name, base = _recipe(recipe)
    overrides = [str(o) for o in overrides]
    with tempfile.TemporaryDirectory(prefix="kdistill-") as folder:
        for key, model in (("teacher", teacher), ("student", student)):
            if model is not None:
                overrides.append(f"{key}.path={json.dumps(_model_file(key, model, folder))}")
        metrics = _kdistill.distill(text, name, base, overrides, os.fspath(out), bool(force), bool(resume),
                                    *_arrays(x, y, x_test, y_test))
    return json.loads(metrics)


def evaluate(model, recipe, *, x=None, y=None, x_test=None, y_test=None, fold=1, teacher=None, input="auto",
             overrides=()):
    """`kdistill eval`: the model's test metrics (with size and latency) on the recipe's data or the
    arrays given. Returns a dict: task, model, fold, input (how the model was fed), metrics."""
    _ensure_setup()
    text, name, base = _recipe(recipe)
    with tempfile.TemporaryDirectory(prefix="kdistill-") as folder:
        path = _model_file("model", model, folder)
        teacher_path = _model_file("teacher", teacher, folder) if teacher is not None else ""
        result = _kdistill.evaluate(path, text, name, base, [str(o) for o in overrides], int(fold), teacher_path, str(input),
                                    *_arrays(x, y, x_test, y_test))
    return json.loads(result)


def predict(model, inputs, *, softmax=False, normalized=False, output=""):
    """`kdistill predict`: the model's outputs [N, outputs] (a torch.Tensor) on raw inputs [N, ...] (the
    model's preprocessing applied, uint8 pixels scaled), or on a list of texts for a text model.
    softmax: class probabilities; normalized: the inputs are normalised already; output: which output
    of a multi-output model."""
    _ensure_setup()
    with tempfile.TemporaryDirectory(prefix="kdistill-") as folder:
        path = _model_file("model", model, folder)
        if isinstance(inputs, (list, tuple)) and all(isinstance(t, str) for t in inputs):
            return _kdistill.predict_texts(path, list(inputs), bool(softmax), str(output))
        return _kdistill.predict(path, _tensor("inputs", inputs), bool(normalized), bool(softmax), str(output))


def export(model, format, out):
    """`kdistill export`: a model kdistill trained (.kdm) as torchscript, onnx or tfjs at `out`."""
    _ensure_setup()
    _kdistill.export(os.fspath(model), str(format), os.fspath(out))


def load_torchscript(model):
    """A model kdistill trained (.kdm) as a torch.jit.ScriptModule (its TorchScript export). It takes the
    inputs the model trained on (normalised as the recipe's data.normalize says); kdistill.predict on the
    model's file takes raw inputs and applies that preprocessing itself."""
    with tempfile.TemporaryDirectory(prefix="kdistill-") as folder:
        path = os.path.join(folder, "model.pt")
        export(model, "torchscript", path)
        return torch.jit.load(path)
