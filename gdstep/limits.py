"""Limits that refuse, early and in one line, what would run for minutes or exhaust memory.

gdstep shows every number of a small net; these bounds are far above any lesson and far
below what would hang the machine. Each is checked before anything is allocated.
"""

from __future__ import annotations

import errno
import os

MAX_SAMPLES = 10_000_000        # data.n, and rows of a csv
MAX_FEATURES = 100_000          # data.features
MAX_CLASSES = 100_000           # data.classes, and integer labels (gdstep.data.MAX_CLASSES)
MAX_VALUES = 100_000_000        # samples × features
MAX_WIDTH = 1_000_000           # out_features of one layer
MAX_PARAMETERS = 50_000_000     # in the whole model
MAX_SCENARIO_BYTES = 16 * 2**20  # a scenario file
COPIES = 8                      # params, grads, optimizer state and history hold about this many copies


def available_memory() -> int | None:
    """Bytes of memory available now (Linux), else None."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def data_problem(kind: str, options) -> tuple[str, str] | None:
    """(key, message) for a generator asked for too much data, else None."""
    n = options.get("n")
    for key, limit in (("n", MAX_SAMPLES), ("classes", MAX_CLASSES), ("features", MAX_FEATURES)):
        value = options.get(key)
        if isinstance(value, int) and value > limit:
            return key, f"at most {limit:,}, got {value:,}"
    features = options.get("features") if isinstance(options.get("features"), int) else 2
    if isinstance(n, int) and n * features > MAX_VALUES:
        return "n", f"{n:,} samples × {features:,} features is more than {MAX_VALUES:,} values"
    return None


def model_problem(specs, in_features: int, n_samples: int, itemsize: int = 8) -> tuple[int | None, str] | None:
    """(layer index or None, message) for a model too large to build here, else None."""
    features, total, widest = in_features, 0, in_features
    for i, spec in enumerate(specs):
        out = getattr(spec, "out_features", None) if "out_features" in dict(spec.options) else None
        if out is None:
            continue
        if out > MAX_WIDTH:
            return i, f"a layer of {out:,} outputs; at most {MAX_WIDTH:,}"
        total += (features + 1) * out
        features, widest = out, max(widest, out)
    if total > MAX_PARAMETERS:
        return None, f"{total:,} parameters; gdstep steps through at most {MAX_PARAMETERS:,}"
    need = (COPIES * total + 3 * n_samples * widest) * itemsize
    free = available_memory()
    if free is not None and need > free:
        return None, f"needs about {need / 2**30:.1f} GiB of memory and {free / 2**30:.1f} GiB is available"
    return None


def check_data_size(table, options) -> None:
    """Raise the scenario's error at the data key asking for too much."""
    problem = data_problem("", options)
    if problem:
        table.fail(table.key_path(problem[0]), problem[1])


def check_model_size(specs, in_features: int, n_samples: int, file: str) -> None:
    from gdstep.errors import ScenarioError
    problem = model_problem(specs, in_features, n_samples)
    if problem:
        where = "model.layers" + (f"[{problem[0]}]" if problem[0] is not None else "")
        raise ScenarioError(file, where, problem[1])


def read_scenario_text(path) -> str:
    """A scenario file's text, refused (OSError) beyond MAX_SCENARIO_BYTES before it fills memory."""
    with open(path, "rb") as f:
        data = f.read(MAX_SCENARIO_BYTES + 1)
    if len(data) > MAX_SCENARIO_BYTES:
        raise OSError(errno.EFBIG, f"larger than {MAX_SCENARIO_BYTES:,} bytes")
    return data.decode("utf-8")
