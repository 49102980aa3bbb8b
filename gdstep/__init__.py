"""gdstep: a step-debugger for neural-network training by gradient descent.

    import gdstep
    s = gdstep.open("scenarios/xor.toml")
    s.forward(); s.loss(); s.backward(); s.update()
    print(s.explain("2.weight", (0, 1)))
"""

from __future__ import annotations

from pathlib import Path
from gdstep.errors import BreakpointHit, GdstepError, ScenarioError
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
            from gdstep.backends.python_scenario import load_python_scenario
            loaded, engine = load_python_scenario(path, device=device, dtype=dtype)
            return Session(loaded, engine, history_budget=history_budget)
        loaded = load_scenario(path)
    return Session(loaded, make_backend(loaded, backend, device, dtype), history_budget=history_budget)


def make_backend(scenario: Scenario, backend: str = "numpy", device: str | None = None, dtype: str | None = None):
    """The backend for a scenario file, built from its prepared problem (gdstep.problem)."""
    from gdstep.problem import prepare

    if backend not in ("numpy", "torch"):
        raise GdstepError(f"unknown backend {backend!r} (expected \"numpy\" or \"torch\")")
    if backend == "numpy" and device not in (None, "cpu"):
        raise GdstepError(f"the numpy backend runs on the cpu only (asked for device {device!r}); "
                          "use the torch backend (--backend torch)")
    try:
        problem = prepare(scenario)
        if backend == "numpy":
            from gdstep.backends.numpy_backend import NumpyBackend
            return NumpyBackend(problem, dtype)
        from gdstep.backends.torch_backend import TorchBackend
        return TorchBackend(problem, device=device, dtype=dtype)
    except MemoryError:
        import math
        count = sum(math.prod(shape) for shape in scenario.build_model().param_shapes.values())
        raise ScenarioError(scenario.file, "model.layers", f"the model's {count:,} parameters do not fit in memory") from None


def compare_backends(scenario, steps: int = 5, device: str | None = None):
    """Run a scenario `steps` iterations on numpy and on torch (float64) from the same start
    and compare every parameter, the optimizer state and the loss (gdstep.parity)."""
    from gdstep.parity import compare_backends as compare
    return compare(scenario, steps=steps, device=device, session_class=Session)


def attach(model, optimizer, loss_fn, breakpoints=("nan",), **kw):
    """Debug a training loop you already have (torch): call `dbg.step(x, y)` in the loop."""
    from gdstep.debugger import attach as _attach
    return _attach(model, optimizer, loss_fn, breakpoints=breakpoints, **kw)


def set_trace(**kw) -> None:
    """Open the TUI here, on the latest attached iteration, as breakpoint() opens pdb."""
    from gdstep.debugger import set_trace as _set_trace
    return _set_trace(**kw)


__all__ = ["BreakpointHit", "GdstepError", "Scenario", "ScenarioError", "Session", "attach", "compare_backends", "load_scenario",
           "make_backend", "open", "set_trace"]
