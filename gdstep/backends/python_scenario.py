"""Python scenarios: a `.py` file that builds its own model, loss, optimizer and data.

    model      any torch.nn.Module                                   (required)
    loss_fn    loss_fn(model(x), y) -> a one-element tensor          (required)
    optimizer  any torch.optim optimizer over the model's parameters (required)
    data       (x, y): tensors (or arrays) with one row per sample   (required)
    name, description, seed, batch_size, epochs, shuffle, stop_when, breakpoints   (optional)
    scheduler  an lr scheduler of `optimizer`, stepped after every update   (optional)
    before_update  a function of no arguments run between backward and the optimizer's
               step, e.g. clipping: lambda: clip_grad_norm_(model.parameters(), 1.0)  (optional)

The model's whole output (a tuple, a dict) goes to `loss_fn`.

The file runs as Python, so gdstep loads one only when the user names it. Anything wrong
with it — a missing name, a wrong type, an exception while it runs, a model that does not
take the data — is a ScenarioError naming the file, the line or variable, and what is wrong.
"""

from __future__ import annotations

import ast
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from gdstep.backends.torch_support import needs_closure
from gdstep.conditions import parse_condition
from gdstep.data import Dataset
from gdstep.errors import ConditionError, GdstepError, ScenarioError
from gdstep.scenario import DataConfig, LossConfig, ModelConfig, Scenario, TrainingConfig
from gdstep.text import clean

REQUIRED = ("model", "loss_fn", "optimizer", "data")


@dataclass(frozen=True)
class PythonScenario(Scenario):
    """A Scenario whose model, loss, optimizer and data came from a Python file; it runs on
    the torch backend only."""

    module: Any = None

    def build_model(self):
        raise GdstepError(f"{self.file} is a Python scenario: it runs on the torch backend only")


def _where_in_file(path: Path, tb) -> str | None:
    line = None
    for frame in traceback.extract_tb(tb):
        if Path(frame.filename) == path:
            line = frame.lineno
    return f"line {line}" if line else None


def _literal_seed(tree: ast.Module) -> int:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "seed" for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, int):
                return node.value.value
    return 0


def execute(path: Path) -> types.ModuleType:
    """Run the file as a module of its own; its mistakes become ScenarioErrors."""
    torch = _torch()
    file = str(path)
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(file, None, "no such file") from None
    except IsADirectoryError:
        raise ScenarioError(file, None, "is a directory, not a scenario file") from None
    except UnicodeDecodeError:
        raise ScenarioError(file, None, "is not a UTF-8 text file") from None
    except OSError as e:
        raise ScenarioError(file, None, e.strerror or str(e)) from None
    try:
        tree = ast.parse(source, filename=file)
        code = compile(tree, file, "exec")
    except SyntaxError as e:
        raise ScenarioError(file, f"line {e.lineno}" if e.lineno else None, f"syntax error: {e.msg}") from None
    name = f"gdstep_scenario_{path.stem}_{abs(hash(path.resolve()))}"
    module = types.ModuleType(name, ast.get_docstring(tree))
    module.__file__ = str(path)
    torch.manual_seed(_literal_seed(tree))      # a file that draws without seeding still repeats
    sys.modules[name] = module
    directory = str(path.resolve().parent)
    sys.path.insert(0, directory)
    try:
        exec(code, module.__dict__)
    except KeyboardInterrupt:
        raise
    except SystemExit as e:
        raise ScenarioError(file, None, f"the file called exit({e.code!r})") from None
    except BaseException as e:  # the user's code: report it in one line, never a traceback
        where = _where_in_file(path, e.__traceback__)
        raise ScenarioError(file, where, f"{type(e).__name__} while running the file: {e}") from None
    finally:
        try:
            sys.path.remove(directory)
        except ValueError:
            pass
    return module


def _torch():
    from gdstep.backends.torch_support import require_torch
    return require_torch()


def _get(module, key: str, kind, default, file: str, what: str):
    value = getattr(module, key, default)
    if value is default:
        return default
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ScenarioError(file, key, f"expected {what}, got {value!r}")
    if not isinstance(value, kind):
        raise ScenarioError(file, key, f"expected {what}, got {type(value).__name__} {value!r}")
    return value


def _as_tensor(value, file: str, where: str):
    torch = _torch()
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise ScenarioError(file, where, f"expected a tensor or a numpy array, got {type(value).__name__}")


def _training(module, file: str, n: int) -> TrainingConfig:
    batch = getattr(module, "batch_size", "full")
    if batch is None or batch == "full":
        batch_size = None
    elif isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1:
        batch_size = batch if batch < n else None
    else:
        raise ScenarioError(file, "batch_size", f'expected a positive integer or "full", got {batch!r}')
    epochs = _get(module, "epochs", int, 100, file, "a positive integer")
    if epochs < 1:
        raise ScenarioError(file, "epochs", f"must be at least 1, got {epochs}")
    shuffle = _get(module, "shuffle", bool, True, file, "True or False")
    stop_when = _get(module, "stop_when", str, None, file, 'a condition such as "loss < 0.01"')
    return TrainingConfig(batch_size, epochs, shuffle, stop_when)


def _dataset(x, y) -> Dataset | None:
    """The data as numpy, for the views that plot it (2-D decision boundaries)."""
    if x.numel() > 2**24 or x.ndim != 2:
        return None
    xs = x.detach().cpu().double().numpy()
    ys = y.detach().cpu().numpy() if not y.is_floating_point() else y.detach().cpu().double().numpy()
    names = tuple(f"x{i + 1}" for i in range(xs.shape[1]))
    if ys.ndim == 1 and ys.dtype.kind in "iu":
        k = int(ys.max()) + 1 if len(ys) else 0
        return Dataset(xs, ys.astype(np.int64), names, tuple(str(i) for i in range(k)))
    ys = ys.astype(float)
    return Dataset(xs, ys[:, None] if ys.ndim == 1 else ys.reshape(len(ys), -1), names)


def load_python_scenario(path: str | Path, device: str | None = None, dtype: str | None = None):
    """(PythonScenario, ModuleBackend) from a `.py` file."""
    from gdstep.backends.torch_loss import ModuleLoss
    from gdstep.backends.torch_user import UserModuleBackend
    from gdstep.backends.torch_optim import config_of
    from gdstep.backends.torch_support import resolve_device, torch_dtype

    torch = _torch()
    path = Path(path)
    file = str(path)
    dev, note = resolve_device(device) if device is not None else (None, None)
    module = execute(path)
    missing = [k for k in REQUIRED if not hasattr(module, k)]
    if missing:
        raise ScenarioError(file, None, f"defines no {', '.join(missing)} (a Python scenario defines model, "
                                        "loss_fn, optimizer and data = (x, y))")
    model, loss_fn, optimizer, data = module.model, module.loss_fn, module.optimizer, module.data
    if not isinstance(model, torch.nn.Module):
        raise ScenarioError(file, "model", f"expected a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise ScenarioError(file, "loss_fn", f"expected a function loss_fn(output, target), got {type(loss_fn).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ScenarioError(file, "optimizer", f"expected a torch.optim optimizer, got {type(optimizer).__name__}")
    if needs_closure(optimizer):
        raise ScenarioError(file, "optimizer", f"{type(optimizer).__name__} needs a closure for step(); gdstep steps "
                            "forward, loss, backward and update one at a time and takes optimizers that step without one")
    owned = {id(p) for p in model.parameters()}
    if any(id(p) not in owned for g in optimizer.param_groups for p in g["params"]):
        raise ScenarioError(file, "optimizer", "updates parameters that are not the model's")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ScenarioError(file, "data", f"expected a pair (x, y), got {type(data).__name__}")
    x, y = _as_tensor(data[0], file, "data[0]"), _as_tensor(data[1], file, "data[1]")
    if len(x) == 0 or len(x) != len(y):
        raise ScenarioError(file, "data", f"x and y need the same number of rows (≥ 1), got {len(x)} and {len(y)}")
    params = list(model.parameters())
    target_device = dev if dev is not None else (params[0].device if params else torch.device("cpu"))
    target_dtype = torch_dtype(dtype) if dtype is not None else None
    if dev is not None or target_dtype is not None:
        model.to(device=target_device, dtype=target_dtype)
        optimizer.load_state_dict(optimizer.state_dict())     # moves any state made already
    float_dtype = target_dtype or (params[0].dtype if params and params[0].is_floating_point() else None)
    x = x.to(device=target_device, dtype=float_dtype if x.is_floating_point() and float_dtype else None)
    y = y.to(device=target_device, dtype=float_dtype if y.is_floating_point() and float_dtype else None)
    scheduler = getattr(module, "scheduler", None)
    if scheduler is not None and getattr(scheduler, "optimizer", None) is not optimizer:
        raise ScenarioError(file, "scheduler", f"expected an lr scheduler of `optimizer`, got {type(scheduler).__name__}")
    before_update = getattr(module, "before_update", None)
    if before_update is not None and not callable(before_update):
        raise ScenarioError(file, "before_update", f"expected a function of no arguments, got {type(before_update).__name__}")
    loss = ModuleLoss(loss_fn)
    backend = UserModuleBackend(model, loss, optimizer, x, y, track_rng=True, config=config_of(optimizer),
                                scheduler=scheduler, step_scheduler=True, before_update=before_update)
    _probe(backend, file)
    if note:
        backend.notes.append(note)
    name = clean(_get(module, "name", str, path.stem, file, "a string"))     # printed: no control characters
    description = _get(module, "description", str, None, file, "a string")
    if description is None:
        doc = (module.__doc__ or "").strip()
        description = doc.split("\n\n")[0].replace("\n", " ") if doc else ""
    description = clean(description)
    seed = _get(module, "seed", int, 0, file, "an integer >= 0")
    if seed < 0:
        raise ScenarioError(file, "seed", f"must be >= 0, got {seed}")
    training = _training(module, file, len(x))
    breakpoints = _get(module, "breakpoints", (list, tuple), (), file, 'a list of conditions such as ["grad_norm > 100"]')
    for i, cond in enumerate(breakpoints):
        if not isinstance(cond, str):
            raise ScenarioError(file, f"breakpoints[{i}]", f"expected a condition string, got {cond!r}")
    for where, cond in [("stop_when", training.stop_when)] + [(f"breakpoints[{i}]", c) for i, c in enumerate(breakpoints)]:
        if cond is not None:
            try:
                parse_condition(cond).check_names(backend.param_shapes)
            except ConditionError as e:
                raise ScenarioError(file, where, str(e)) from None
    frozen = tuple(n for n in backend.param_shapes if n not in backend.trainable)
    scenario = PythonScenario(
        name=name, description=description, seed=seed,
        data=DataConfig("python", MappingProxyType({})),
        model=ModelConfig(layers=(), init="set by the file", frozen=frozen, dtype=backend.dtype),
        init=MappingProxyType({}), loss=LossConfig(loss.kind), optimizer=backend.optimizer, training=training,
        breakpoints=tuple(breakpoints), path=path, dataset=_dataset(x, y), module=module)
    return scenario, backend


def _probe(backend, file: str) -> None:
    """Run the model and the loss once on two samples (no training, in eval mode): a model
    that does not take the data fails here, named; the layers it never calls are dropped."""
    torch = _torch()
    x, y = backend.x[:2], backend.y[:2]
    try:
        out, called = backend.probe(x)
    except Exception as e:
        raise ScenarioError(file, "model", f"model(x) fails on the data: {type(e).__name__}: {e}") from None
    try:
        with torch.no_grad():
            backend.loss_fn(out, y)
    except Exception as e:
        raise ScenarioError(file, "loss_fn", f"loss_fn(model(x), y) fails: {type(e).__name__}: {e}") from None
    backend.drop_layers([i for i, c in enumerate(called) if not c])
