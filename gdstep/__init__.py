"""gdstep: a step-debugger for neural-network training by gradient descent.

    import gdstep
    s = gdstep.open("scenarios/xor.toml")
    s.forward(); s.loss(); s.backward(); s.update()
    print(s.explain("2.weight", (0, 1)))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gdstep.errors import GdstepError, ScenarioError
from gdstep.scenario import Scenario, load_scenario
from gdstep.session import Session

__version__ = "0.1.0"


def open(scenario: str | Path | Scenario | None = None, backend: str = "numpy", device: str | None = None,
         dtype: str | None = None, history_budget: int = 64 * 2**20) -> Session:
    """Open a scenario (a path, a bundled name, or a Scenario) on a backend: "numpy" (exact,
    float64 by default) or "torch" (device "cpu", "cuda" or "auto", float32 by default)."""
    from gdstep.bundled import resolve

    if dtype is not None and dtype not in ("float64", "float32"):
        raise GdstepError(f"dtype must be \"float64\" or \"float32\", got {dtype!r}")
    if isinstance(scenario, Scenario):
        loaded = scenario
    else:
        path = resolve(scenario)
        if path.suffix == ".py":
            from gdstep.backends.python_scenario import open_python_scenario
            return open_python_scenario(path, device=device, dtype=dtype, history_budget=history_budget)
        loaded = load_scenario(path)
    if backend not in ("numpy", "torch"):
        raise GdstepError(f"unknown backend {backend!r} (expected \"numpy\" or \"torch\")")
    if backend == "numpy" and device not in (None, "cpu"):
        raise GdstepError(f"the numpy backend runs on the cpu only (asked for device {device!r}); "
                          "use the torch backend (--backend torch)")
    try:
        if backend == "numpy":
            from gdstep.backends.numpy_backend import NumpyBackend
            engine: Any = NumpyBackend(loaded, dtype)
        else:
            from gdstep.backends.torch_backend import TorchBackend
            engine = TorchBackend(loaded, device=device, dtype=dtype)
    except MemoryError:
        import math
        count = sum(math.prod(shape) for shape in loaded.build_model().param_shapes.values())
        raise ScenarioError(loaded.file, "model.layers", f"the model's {count:,} parameters do not fit in memory") from None
    return Session(loaded, engine, history_budget=history_budget)


def attach(model, optimizer, loss_fn, breakpoints=("nan",), **kw):
    """Debug a training loop you already have (torch): call `dbg.step(x, y)` in the loop."""
    from gdstep.debugger import attach as _attach
    return _attach(model, optimizer, loss_fn, breakpoints=breakpoints, **kw)


def set_trace(**kw) -> None:
    """Open the TUI here, on the latest attached iteration, as breakpoint() opens pdb."""
    from gdstep.debugger import set_trace as _set_trace
    return _set_trace(**kw)


__all__ = ["GdstepError", "Scenario", "ScenarioError", "Session", "attach", "load_scenario", "open", "set_trace"]
