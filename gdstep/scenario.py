"""Scenario files: a small TOML file read into a frozen, typed, fully checked Scenario.

Everything a user can get wrong is found here, before any training starts, and reported
as one ScenarioError naming the file, the key path (`optimizer.lr`, `model.layers[2]`) or
the TOML line, and what is wrong.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from gdstep.data import DATA_OPTIONS, Dataset, make_dataset, targets_for
from gdstep.errors import ConditionError, HyperparameterError, MissingColumn, ScenarioError, suggest
from gdstep.nn.init import INITS
from gdstep.nn.layers import LAYERS, layer_class
from gdstep.nn.losses import LOSSES, loss_class
from gdstep.nn.model import Sequential, build_model
from gdstep.optim import OPTIMIZERS, Optimizer, make_optimizer
from gdstep.limits import MAX_CLASSES, check_data_size, check_model_size, read_scenario_text
from gdstep.text import clean
from gdstep.toml_table import Table, numeric_array, toml_error, type_name

DTYPES = ("float64", "float32")


@dataclass(frozen=True, init=False)
class LayerSpec:
    """A layer as the scenario names it: its kind and the options its class takes, e.g.
    `LayerSpec("linear", 5, bias=False)`, `LayerSpec("leaky_relu", negative_slope=0.2)`."""

    kind: str                                   # a key of gdstep.nn.layers.LAYERS
    options: tuple[tuple[str, Any], ...]        # (name, value) of every option, defaults filled in

    def __init__(self, kind: str, *args: Any, **kwargs: Any):
        cls = layer_class(kind)
        if cls is None:
            raise ValueError(f"unknown layer {kind!r}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "options", tuple(cls.options(*args, **kwargs).items()))

    def __getattr__(self, name: str) -> Any:        # spec.out_features, spec.negative_slope
        for key, value in self.__dict__.get("options", ()):
            if key == name:
                return value
        raise AttributeError(name)

    def __str__(self) -> str:
        return LAYERS[self.kind].spec_text(dict(self.options))


@dataclass(frozen=True)
class DataConfig:
    kind: str
    options: Mapping[str, Any]
    standardize: bool = False       # scale each feature to mean 0, standard deviation 1


@dataclass(frozen=True)
class ModelConfig:
    layers: tuple[LayerSpec, ...]
    init: str = "torch"
    init_scale: float | None = None
    frozen: tuple[str, ...] = ()
    dtype: str | None = None        # None: the backend's default (numpy float64, torch float32)


@dataclass(frozen=True)
class LossConfig:
    kind: str                                           # a key of gdstep.nn.losses.LOSSES (or a user's loss)
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # its class's arguments, e.g. huber's delta

    def __getattr__(self, name: str) -> Any:        # loss.delta
        options = self.__dict__.get("options", {})
        if name in options:
            return options[name]
        raise AttributeError(name)

    def __str__(self) -> str:
        cls = loss_class(self.kind)
        return cls.config_text(self.options) if cls is not None else self.kind


@dataclass(frozen=True)
class TrainingConfig:
    batch_size: int | None = None   # None: the full dataset in every batch
    epochs: int = 100
    shuffle: bool = True
    stop_when: str | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    seed: int
    data: DataConfig
    model: ModelConfig
    init: Mapping[str, np.ndarray]
    loss: LossConfig
    optimizer: Optimizer
    training: TrainingConfig
    breakpoints: tuple[str, ...]
    path: Path | None = None
    dataset: Dataset = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    @property
    def file(self) -> str:
        return str(self.path) if self.path else "<scenario>"

    def build_model(self) -> Sequential:
        return build_model(self.model.layers, self.dataset.n_features)

    @property
    def is_classifier(self) -> bool:
        return getattr(loss_class(self.loss.kind), "classification", False)


# -- reading -------------------------------------------------------------------------------------

def _read_layers(model: Table) -> tuple[LayerSpec, ...]:
    raw = model.get("layers", list)
    where_all = model.key_path("layers")
    if not raw:
        model.fail(where_all, "needs at least one layer")
    specs = []
    for i, item in enumerate(raw):
        where = f"{where_all}[{i}]"
        if isinstance(item, str):
            cls = layer_class(item)
            if cls is None:
                model.fail(where, f"unknown layer {item!r}" + suggest(item, list(LAYERS)))
            specs.append(LayerSpec(item, **cls.read_name(lambda message: model.fail(where, message))))
        elif isinstance(item, dict):
            t = Table(item, where, model.file)
            cls = next((LAYERS[key] for key in item if key in LAYERS and LAYERS[key].table_form), None)
            if cls is None:
                forms = " or ".join(c.table_form for c in LAYERS.values() if c.table_form)
                t.fail(where, f"expected {forms} or an activation name")
            specs.append(LayerSpec(cls.kind, **cls.read_table(t)))
            t.done()
        else:
            model.fail(where, f"expected a layer such as {{ linear = 4 }} or \"tanh\", got {type_name(item)}")
    if not any(LAYERS[s.kind].affine for s in specs):
        model.fail(where_all, "needs at least one { linear = N } layer")
    return tuple(specs)


def _read_data(top: Table) -> DataConfig:
    t = top.table("data", required=True)
    kind = t.get("kind", str)
    if kind not in DATA_OPTIONS:
        t.fail(t.key_path("kind"), f"unknown data kind {kind!r} (expected one of: {', '.join(DATA_OPTIONS)})")
    options: dict[str, Any] = {}
    for key, default in DATA_OPTIONS[kind].items():
        where = t.key_path(key)
        if key in ("x", "y"):
            value = t.get(key, list)
            options[key] = numeric_array(value, where, t.file).tolist() if key == "x" else value
        elif key == "path":
            options[key] = t.get(key, str)
        elif key == "target":
            options[key] = t.get(key, str, None)
        elif key in ("features",) and kind == "csv":
            value = t.get(key, list, None)
            if value is not None and not all(isinstance(v, str) for v in value):
                t.fail(where, "expected a list of column names")
            options[key] = value
        elif key == "weights":
            value = t.get(key, list, None)
            options[key] = None if value is None else numeric_array(value, where, t.file, (1,)).tolist()
        elif key == "bias":
            options[key] = t.get(key, float, None)
        elif isinstance(default, int):
            value = t.get(key, int, default)
            if value < 1:
                t.fail(where, f"must be at least 1, got {value}")
            options[key] = value
        else:
            value = t.get(key, float, default)
            if value < 0:
                t.fail(where, f"must be >= 0, got {value}")
            options[key] = value
    standardize = t.get("standardize", bool, False)
    t.done(list(DATA_OPTIONS[kind]) + ["kind", "standardize"])
    check_data_size(t, options)
    if kind == "spiral" and options["n"] < options["classes"]:
        t.fail(t.key_path("n"), "needs at least one sample per class")
    if kind == "linear" and options["weights"] is not None and len(options["weights"]) != options["features"]:
        t.fail(t.key_path("weights"), f"has {len(options['weights'])} values for {options['features']} features")
    if kind == "inline":
        y = options["y"]
        y_arr = np.array(y, dtype=object)
        try:
            y_num = np.array(y, dtype=float)
        except (ValueError, TypeError):
            t.fail(t.key_path("y"), "expected numbers (class labels or targets)")
        if y_num.ndim not in (1, 2) or not np.all(np.isfinite(y_num)):
            t.fail(t.key_path("y"), "expected a list of numbers or a list of equal-length lists")
        if len(y_num) != len(options["x"]):
            t.fail(t.key_path("y"), f"has {len(y_num)} rows but x has {len(options['x'])}")
        all_int = y_arr.ndim == 1 and all(isinstance(v, int) and not isinstance(v, bool) for v in y)
        if all_int and any(abs(v) >= MAX_CLASSES for v in y):
            t.fail(t.key_path("y"), f"a class label is at most {MAX_CLASSES - 1:,} (write a number as 1.0e29 for a target)")
        options["y"] = np.array(y, dtype=np.int64) if all_int else y_num
    return DataConfig(kind, MappingProxyType(options), standardize)


def _read_model(top: Table) -> ModelConfig:
    t = top.table("model", required=True)
    layers = _read_layers(t)
    init = t.get("init", str, "torch")
    if init not in INITS:
        t.fail(t.key_path("init"), f"unknown init {init!r} (expected one of: {', '.join(INITS)})")
    scale = t.get("init_scale", float, None)
    if scale is not None and scale <= 0:
        t.fail(t.key_path("init_scale"), f"must be positive, got {scale}")
    frozen = t.get("frozen", list, [])
    if not all(isinstance(n, str) for n in frozen):
        t.fail(t.key_path("frozen"), "expected a list of parameter names such as \"0.bias\"")
    dtype = t.get("dtype", str, None)
    if dtype is not None and dtype not in DTYPES:
        t.fail(t.key_path("dtype"), f"expected \"float64\" or \"float32\", got {dtype!r}")
    t.done()
    return ModelConfig(layers, init, scale, tuple(frozen), dtype)


def _read_loss(top: Table) -> LossConfig:
    t = top.table("loss", required=True)
    kind = t.get("kind", str)
    if kind not in LOSSES:
        t.fail(t.key_path("kind"), f"unknown loss {kind!r}" + suggest(kind, LOSSES))
    options = LOSSES[kind].read_options(t)
    t.done()
    return LossConfig(kind, MappingProxyType(options))


def _read_optimizer(top: Table) -> Optimizer:
    t = top.table("optimizer", required=True)
    kind = t.get("kind", str)
    if kind not in OPTIMIZERS:
        t.fail(t.key_path("kind"), f"unknown optimizer {kind!r}" + suggest(kind, OPTIMIZERS))
    cls = OPTIMIZERS[kind]
    defaults = cls()
    args: dict[str, Any] = {}
    field_names = [f.name for f in dataclasses.fields(cls)]
    for name in field_names:
        default = getattr(defaults, name)
        if name not in t.data:
            t.used.add(name)
            continue
        if isinstance(default, bool):
            args[name] = t.get(name, bool)
        elif name == "betas":
            value = t.get(name, list)
            if len(value) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in value):
                t.fail(t.key_path(name), f"expected two numbers such as [0.9, 0.999], got {value!r}")
            args[name] = tuple(float(b) for b in value)
        else:
            args[name] = t.get(name, float)
    t.done(["kind", *field_names])
    try:
        return make_optimizer(kind, **args)
    except HyperparameterError as e:
        named = e.key in field_names
        message = e.message if named else str(e)
        if e.key == "lr" and "must be >= 0" in message:
            message = f"the learning rate must be >= 0, got {args['lr']}"
        raise ScenarioError(t.file, t.key_path(e.key) if named else t.path, message) from None


def _read_training(top: Table) -> TrainingConfig:
    t = top.table("training")
    raw_batch = t.get("batch_size", (int, str), "full")
    if isinstance(raw_batch, str):
        if raw_batch != "full":
            t.fail(t.key_path("batch_size"), f'expected a positive integer or "full", got {raw_batch!r}')
        batch_size = None
    else:
        if raw_batch < 1:
            t.fail(t.key_path("batch_size"), f"must be at least 1, got {raw_batch}")
        batch_size = raw_batch
    epochs = t.get("epochs", int, 100)
    if epochs < 1:
        t.fail(t.key_path("epochs"), f"must be at least 1, got {epochs}")
    shuffle = t.get("shuffle", bool, True)
    stop_when = t.get("stop_when", str, None)
    t.done()
    return TrainingConfig(batch_size, epochs, shuffle, stop_when)


def _read_breakpoints(top: Table) -> tuple[str, ...]:
    top.used.add("breakpoints")
    raw = top.data.get("breakpoints", [])
    if not isinstance(raw, list):
        top.fail("breakpoints", 'expected [[breakpoints]] tables with when = "CONDITION"')
    conditions = []
    for i, item in enumerate(raw):
        t = Table(item, f"breakpoints[{i}]", top.file)
        conditions.append(t.get("when", str))
        t.done()
    return tuple(conditions)


def parse_scenario(text: str, path: Path | None = None) -> Scenario:
    """Read and check a scenario from TOML text; `path` places csv files and names errors."""
    file = str(path) if path else "<scenario>"
    try:
        raw = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as e:
        raise toml_error(file, e, text) from None
    except RecursionError:
        raise ScenarioError(file, None, "invalid TOML: nested too deep") from None
    top = Table(raw, "", file)
    name = clean(top.get("name", str, path.stem if path else "scenario"))[:200]
    description = clean(top.get("description", str, ""))[:2000]
    seed = top.get("seed", int, 0)
    if seed < 0:
        top.fail("seed", f"must be >= 0, got {seed}")
    data = _read_data(top)
    model = _read_model(top)
    loss = _read_loss(top)
    optimizer = _read_optimizer(top)
    training = _read_training(top)
    breakpoints = _read_breakpoints(top)
    init_table = top.table("init")
    top.done(["name", "description", "seed", "data", "model", "init", "loss", "optimizer", "training", "breakpoints"])

    try:
        dataset = make_dataset(data.kind, data.options, np.random.default_rng([seed, 0]),
                               base_dir=path.parent if path else None)
    except OSError as e:
        raise ScenarioError(file, "data.path", f"cannot read {e.filename}: {e.strerror}") from None
    except MissingColumn as e:                                    # name the key that names the column
        where = "data.target" if e.column == data.options["target"] else "data.features"
        raise ScenarioError(file, where, str(e)) from None
    except (ValueError, MemoryError) as e:                        # MemoryError: n far too large
        raise ScenarioError(file, "data.path" if data.kind == "csv" else "data", str(e)) from None
    if data.standardize:
        dataset = dataset.standardized()
    check_model_size(model.layers, dataset.n_features, dataset.n, file)
    net = build_model(model.layers, dataset.n_features)
    problem = LOSSES[loss.kind].check_layers(tuple(spec.kind for spec in model.layers))
    if problem:
        raise ScenarioError(file, "loss.kind", problem)
    try:
        targets_for(dataset, loss.kind, net.out_features)
    except ValueError as e:
        raise ScenarioError(file, "model.layers", str(e)) from None
    except MemoryError:
        raise ScenarioError(file, "model.layers", f"{net.out_features:,} outputs for {dataset.n:,} samples do not fit in memory") from None
    for i, name_ in enumerate(model.frozen):
        if name_ not in net.param_shapes:
            raise ScenarioError(file, f"model.frozen[{i}]", f"no parameter {name_!r} (parameters: {', '.join(net.param_names)})")
    init: dict[str, np.ndarray] = {}
    for key in init_table.data:
        where = init_table.key_path(key)
        init_table.used.add(key)
        if key not in net.param_shapes:
            raise ScenarioError(file, where, "no such parameter" + suggest(key, net.param_names, "parameters"))
        arr = numeric_array(init_table.data[key], where, file)
        if arr.shape != net.param_shapes[key]:
            raise ScenarioError(file, where, f"has shape {arr.shape}, the model's {key} has shape {net.param_shapes[key]}")
        arr.setflags(write=False)
        init[key] = arr
    if training.batch_size is not None and training.batch_size > dataset.n:
        training = TrainingConfig(None, training.epochs, training.shuffle, training.stop_when)
    from gdstep.conditions import parse_condition
    for where, cond in [("training.stop_when", training.stop_when)] + [(f"breakpoints[{i}].when", c) for i, c in enumerate(breakpoints)]:
        if cond is None:
            continue
        try:
            parse_condition(cond).check_names(net.param_shapes)
        except ConditionError as e:
            raise ScenarioError(file, where, str(e)) from None
    return Scenario(name, description, seed, data, model, MappingProxyType(init), loss, optimizer, training,
                    breakpoints, path, dataset)


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario file (`.toml`); raises ScenarioError for anything wrong with it."""
    path = Path(path)
    try:
        text = read_scenario_text(path)
    except FileNotFoundError:
        raise ScenarioError(str(path), None, "no such file") from None
    except IsADirectoryError:
        raise ScenarioError(str(path), None, "is a directory, not a scenario file") from None
    except UnicodeDecodeError:
        raise ScenarioError(str(path), None, "is not a UTF-8 text file") from None
    except OSError as e:
        raise ScenarioError(str(path), None, e.strerror or str(e)) from None
    return parse_scenario(text, path)
