"""gdstep's numpy engine and Session against a plain numpy loop and a plain torch CPU loop.

    python benchmarks/bench_engine.py [--steps 560] [--repeats 5]

Everything runs in one process, interleaved, on the same data, initial values and batch
order; the best of the repeats counts. Goals: engine ≥ 0.8 × plain numpy (same dtype) and
≥ 1.0 × plain torch CPU; Session.run (history and breakpoints on) ≥ 0.8 × plain numpy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from common import best_of, plain_numpy, plain_torch, scenario  # noqa: E402


def engine_loop(sc, dtype, steps):
    """The numpy engine alone: the backend's four phases in a loop, no Session."""
    from gdstep.backends.numpy_backend import NumpyBackend
    from common import batches

    backend = NumpyBackend(sc, dtype)
    it = batches(backend.n_samples, 64, sc.seed, steps * 64 // backend.n_samples + 2)
    start = time.perf_counter()
    for _ in range(steps):
        x, y = backend.batch(next(it))
        outputs = backend.forward(x)
        _, value = backend.loss(outputs, y)
        _, _, grads = backend.backward(x, outputs, y)
        backend.update(grads)
    return time.perf_counter() - start, value


def session_run(sc, dtype, steps):
    """Session.run with history, snapshots and breakpoints on (nan, loss up, exploding gradients)."""
    import gdstep
    s = gdstep.open(sc, dtype=dtype)
    s.add_breakpoint("grad_norm > 1e6", log=False)
    s.add_breakpoint("loss > 100 * prev_loss", log=False)
    start = time.perf_counter()
    result = s.run(max_steps=steps)
    assert result.reason == "max_steps", result
    return time.perf_counter() - start, s.loss_value


def session_phases(sc, dtype, steps):
    """Stepping phase by phase through the public API: s.next_phase() 4 × steps times."""
    import gdstep
    s = gdstep.open(sc, dtype=dtype)
    start = time.perf_counter()
    for _ in range(steps * 4):
        s.next_phase()
    return time.perf_counter() - start, s.loss_value


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=560, help="iterations per measurement (560 = 20 epochs)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    steps = args.steps
    try:
        import torch
        torch.set_num_threads(max(1, torch.get_num_threads()))
    except ImportError:
        torch = None

    print(f"MLP 64-128-128-10, ReLU, cross_entropy, Adam lr 1e-3, batch 64, 1792 samples; {steps} steps, best of {args.repeats}")
    for dtype in ("float64", "float32"):
        sc = scenario(dtype)
        from gdstep.backends.numpy_backend import NumpyBackend
        start = NumpyBackend(sc, dtype)
        params = {k: np.array(v) for k, v in start.params().items()}
        x, y = start.x, start.y
        rows = {}
        for _ in range(args.repeats):
            for name, fn in [("plain numpy", lambda: plain_numpy(x, y, params, steps)[:2]),
                             ("gdstep engine", lambda: engine_loop(sc, dtype, steps)),
                             ("Session.run", lambda: session_run(sc, dtype, steps)),
                             ("Session phase by phase", lambda: session_phases(sc, dtype, steps))] + (
                            [("plain torch cpu", lambda: plain_torch(x, y, params, steps, dtype=dtype))] if torch else []):
                elapsed, _ = fn()
                rows[name] = min(rows.get(name, float("inf")), elapsed)
        print(f"\n{dtype}:")
        base_np = steps / rows["plain numpy"]
        base_torch = steps / rows["plain torch cpu"] if torch else None
        for name, elapsed in rows.items():
            rate = steps / elapsed
            line = f"  {name:<24} {rate:9.0f} steps/s   × numpy {rate / base_np:5.2f}"
            if base_torch:
                line += f"   × torch {rate / base_torch:5.2f}"
            if name == "Session phase by phase":
                line += f"   ({4 * rate:.0f} phases/s)"
            print(line)


if __name__ == "__main__":
    main()
