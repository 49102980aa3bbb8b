"""Datasets: the generators, inline arrays and csv files a scenario can name.

Every generator takes the scenario's data RNG, so one seed fixes the data. Classification
sets give integer labels `y` of shape (n,); regression sets give `y` of shape (n, k).
`targets_for` adapts labels to what the loss and the model's output expect.
"""

from __future__ import annotations

import csv
import io
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gdstep.errors import MissingColumn
from gdstep.text import clean, excerpt

MAX_CSV_BYTES = 256 * 2**20         # a larger file is refused before it is read
from gdstep.limits import MAX_CLASSES, MAX_SAMPLES  # integer labels at or above it are read as numbers, not classes

# kind -> {option: default}; `None` means required or computed.
DATA_OPTIONS: dict[str, dict[str, Any]] = {
    "xor": {"n": 200, "noise": 0.1},
    "moons": {"n": 200, "noise": 0.1},
    "circles": {"n": 200, "noise": 0.05, "factor": 0.5},
    "spiral": {"n": 300, "classes": 3, "noise": 0.2},
    "blobs": {"n": 200, "classes": 3, "features": 2, "std": 1.0},
    "linear": {"n": 100, "features": 1, "noise": 0.1, "weights": None, "bias": None},
    "sine": {"n": 100, "noise": 0.05},
    "inline": {"x": None, "y": None},
    "csv": {"path": None, "target": None, "features": None},
}


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray                       # (n, features), float64
    y: np.ndarray                       # (n,) int labels, or (n, k) float targets
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...] | None = None  # labels of a classification set

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def n_features(self) -> int:
        return self.x.shape[1]

    @property
    def is_classification(self) -> bool:
        return self.y.ndim == 1

    @property
    def n_classes(self) -> int:
        return len(self.class_names) if self.class_names is not None else int(self.y.max()) + 1

    def standardized(self) -> "Dataset":
        """Each feature shifted and scaled to mean 0 and standard deviation 1 (a constant
        feature is only shifted)."""
        std = self.x.std(axis=0)
        x = (self.x - self.x.mean(axis=0)) / np.where(std > 0, std, 1.0)
        return Dataset(x, self.y, self.feature_names, self.class_names)


def _classes(x: np.ndarray, y: np.ndarray, k: int, feature_names: tuple[str, ...] | None = None) -> Dataset:
    names = feature_names or tuple(f"x{i + 1}" for i in range(x.shape[1]))
    return Dataset(x, y.astype(np.int64), names, tuple(str(i) for i in range(k)))


def _shuffled(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(len(x))
    return x[order], y[order]


def xor(rng, n, noise):
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    which = np.arange(n) % 4
    x = corners[which] + noise * rng.standard_normal((n, 2))
    return _classes(x, np.array([0, 1, 1, 0])[which], 2)


def moons(rng, n, noise):
    n_out = n // 2
    n_in = n - n_out
    t_out, t_in = np.linspace(0, math.pi, n_out), np.linspace(0, math.pi, n_in)
    x = np.vstack([np.column_stack([np.cos(t_out), np.sin(t_out)]),
                   np.column_stack([1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5])])
    y = np.concatenate([np.zeros(n_out), np.ones(n_in)])
    x = x + noise * rng.standard_normal(x.shape)
    x, y = _shuffled(rng, x, y)
    return _classes(x, y, 2)


def circles(rng, n, noise, factor):
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0, 2 * math.pi, n_out, endpoint=False)
    t_in = np.linspace(0, 2 * math.pi, n_in, endpoint=False)
    x = np.vstack([np.column_stack([np.cos(t_out), np.sin(t_out)]),
                   factor * np.column_stack([np.cos(t_in), np.sin(t_in)])])
    y = np.concatenate([np.zeros(n_out), np.ones(n_in)])
    x = x + noise * rng.standard_normal(x.shape)
    x, y = _shuffled(rng, x, y)
    return _classes(x, y, 2)


def spiral(rng, n, classes, noise):
    """CS231n's spiral: `classes` arms of n/classes points each."""
    per = n // classes
    xs, ys = [], []
    for k in range(classes):
        r = np.linspace(0.0, 1.0, per)
        t = np.linspace(k * 4.0, (k + 1) * 4.0, per) + noise * rng.standard_normal(per)
        xs.append(np.column_stack([r * np.sin(t), r * np.cos(t)]))
        ys.append(np.full(per, k))
    x, y = _shuffled(rng, np.vstack(xs), np.concatenate(ys))
    return _classes(x, y, classes)


def blobs(rng, n, classes, features, std):
    centers = rng.uniform(-5.0, 5.0, size=(classes, features))
    y = np.arange(n) % classes
    x = centers[y] + std * rng.standard_normal((n, features))
    x, y = _shuffled(rng, x, y)
    return _classes(x, y, classes)


def linear(rng, n, features, noise, weights, bias):
    """y = x·w + b + noise; w and b are drawn from the seed unless given."""
    w = rng.uniform(-2.0, 2.0, size=features) if weights is None else np.asarray(weights, dtype=float)
    b = float(rng.uniform(-1.0, 1.0)) if bias is None else float(bias)
    x = rng.uniform(-1.0, 1.0, size=(n, features))
    y = x @ w + b + noise * rng.standard_normal(n)
    return Dataset(x, y[:, None], feature_names=tuple(f"x{i + 1}" for i in range(features)))


def sine(rng, n, noise):
    x = rng.uniform(-math.pi, math.pi, size=(n, 1))
    return Dataset(x, np.sin(x) + noise * rng.standard_normal((n, 1)), feature_names=("x",))


def inline(x, y):
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    y_arr = np.asarray(y)
    if y_arr.ndim == 1 and np.issubdtype(y_arr.dtype, np.integer):
        return _classes(x, y_arr, int(y_arr.max()) + 1)
    y_arr = y_arr.astype(float)
    if y_arr.ndim == 1:
        y_arr = y_arr[:, None]
    return Dataset(x, y_arr, feature_names=tuple(f"x{i + 1}" for i in range(x.shape[1])))


def data_file(text: str, base_dir: Path | None) -> Path:
    """The file a scenario's `data.path` names, checked before anything is read.

    The rule: a relative path, to a file in the scenario's folder or below it (`..` may not
    leave it), with no symbolic link on the way, that is a regular file (not a FIFO, a
    device or a folder) of at most MAX_CSV_BYTES. Raises ValueError (FileNotFoundError when
    there is nothing there)."""
    base = (base_dir if base_dir is not None else Path.cwd()).absolute()
    rel = Path(text)
    if rel.is_absolute():
        raise ValueError(f"{clean(text)!r}: a data path is relative to the scenario's folder")
    parts = os.path.normpath(rel).split(os.sep)
    if parts and parts[0] == "..":
        raise ValueError(f"{clean(text)!r}: a data path stays inside the scenario's folder")
    where = base
    for part in parts:
        where = where / part
        if where.is_symlink():
            raise ValueError(f"{clean(text)!r}: {clean(part)!r} is a symbolic link; a data path does not follow one")
    return where


def _read_text(path: Path) -> str:
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)        # non-blocking: a FIFO opens at once, then is refused
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{clean(path.name)!r} is not a regular file")
        if st.st_size > MAX_CSV_BYTES:
            raise ValueError(f"{clean(path.name)!r} is {st.st_size:,} bytes; at most {MAX_CSV_BYTES:,}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_CSV_BYTES + 1)
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8-sig")             # a BOM is not part of the first column's name
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {e.start})") from None


def read_csv(path: Path, target: str | None, features: list[str] | None) -> Dataset:
    """A csv with a header row: numeric feature columns and one target column.

    A target that is not numeric is a class label: the distinct values, sorted, become
    classes 0, 1, …; an all-integer target below MAX_CLASSES is kept as numbers and read as
    labels by a classification loss. Raises ValueError with the row number for anything it
    cannot read; it quotes the file only in short, escaped excerpts.
    """
    try:
        rows = list(csv.reader(io.StringIO(_read_text(path), newline="")))
    except csv.Error as e:          # a field over csv.field_size_limit(), a NUL byte
        raise ValueError(f"not a csv file: {clean(str(e))}") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise ValueError("the file is empty")
    header = [clean(h.strip()) for h in rows[0]]
    seen = set()
    for name in header:
        if name in seen:
            raise ValueError(f"the header names the column {excerpt(name)} twice")
        seen.add(name)
    body = rows[1:]
    if len(body) > MAX_SAMPLES:
        raise ValueError(f"{len(body):,} rows; at most {MAX_SAMPLES:,}")
    if not body:
        raise ValueError("no data rows after the header")
    target = header[-1] if target is None else target
    if target not in header:
        raise MissingColumn(target, header)
    features = [h for h in header if h != target] if features is None else list(features)
    if not features:
        raise ValueError("no feature columns: a model needs at least one input")
    for name in features:
        if name not in header:
            raise MissingColumn(name, header)
    cols = {name: header.index(name) for name in header}
    x = np.empty((len(body), len(features)))
    raw_y = []
    for r, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(f"row {r} has {len(row)} fields, the header has {len(header)}")
        for j, name in enumerate(features):
            try:
                x[r - 2, j] = float(row[cols[name]])
            except ValueError:
                raise ValueError(f"row {r}, column {excerpt(name)}: {excerpt(row[cols[name]])} is not a number") from None
            if not math.isfinite(x[r - 2, j]):
                raise ValueError(f"row {r}, column {excerpt(name)}: {excerpt(row[cols[name]])} is not a finite number")
        raw_y.append(row[cols[target]].strip())
    try:
        y = np.array([float(v) for v in raw_y])
    except ValueError:
        names = tuple(sorted(set(raw_y)))
        if len(names) > MAX_CLASSES:
            raise ValueError(f"the target has {len(names):,} distinct labels; at most {MAX_CLASSES:,} classes") from None
        lookup = {name: i for i, name in enumerate(names)}
        return Dataset(x, np.array([lookup[v] for v in raw_y], dtype=np.int64), tuple(features), names)
    if not np.all(np.isfinite(y)):
        raise ValueError(f"the target column {excerpt(target)} has a value that is not a finite number")
    if (np.all(y == np.round(y)) and y.min() >= 0 and y.max() < MAX_CLASSES
            and len(np.unique(y)) <= max(2, len(y) // 2)):
        labels = y.astype(np.int64)
        k = int(labels.max()) + 1
        return Dataset(x, labels, tuple(features), tuple(str(i) for i in range(k)))
    return Dataset(x, y[:, None], tuple(features))


def make_dataset(kind: str, options: Mapping[str, Any], rng: np.random.Generator, base_dir: Path | None = None) -> Dataset:
    if kind == "csv":
        return read_csv(data_file(options["path"], base_dir), options.get("target"), options.get("features"))
    generator = {"xor": xor, "moons": moons, "circles": circles, "spiral": spiral, "blobs": blobs,
                 "linear": linear, "sine": sine, "inline": inline}[kind]
    return generator(rng, **options) if kind != "inline" else inline(**options)


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the samples in an epoch: a function of (seed, epoch) alone, so any epoch
    can be recomputed after a rewind. A counter-based generator keyed by the seed, with the
    epoch in the counter's top word, gives each epoch its own stream without a SeedSequence."""
    key = np.array([seed & 0xFFFFFFFFFFFFFFFF, 2], dtype=np.uint64)
    counter = np.array([0, 0, 0, epoch], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key, counter=counter)).permutation(n)


def targets_for(dataset: Dataset, loss_kind: str, out_features: int) -> np.ndarray:
    """The targets in the form the loss takes (its class's `targets`): class indices, or float
    columns (one column of 0/1 for labels and one output, one-hot for k > 1 outputs)."""
    from gdstep.nn.losses import LOSSES

    return LOSSES[loss_kind].targets(dataset.y, out_features)
