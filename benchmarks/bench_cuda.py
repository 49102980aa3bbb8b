"""On a GPU, in one command: the torch backend's Session.run and attach mode against plain
loops, with the host synchronisations each makes per iteration.

    python benchmarks/bench_cuda.py [--steps 200] [--rounds 7] [--each-phase] [--device cpu]

The net: MLP 784-2048-2048-10, ReLU, cross-entropy, Adam lr 1e-3, batch 512, float32.

1. Session.run (breakpoints on a loss spike and exploding gradients) vs a plain torch loop
   over the same data, initial values and batch order.
2. Attach mode, `dbg.step(x, y)` and `dbg.watch(loss, y)`, vs the bare loop they sit in.

Each round runs every contender once, back to back in one process; the ratio is taken
within the round and the median over rounds reported. Goal ≥ 0.95 × plain. Host
synchronisations are counted with `torch.cuda.set_sync_debug_mode("warn")` (each
synchronising call warns once) over a separate pass, and reported per iteration.
Without a GPU it says so and exits 0. `--each-phase` adds Session.run checking each phase
as it goes (gdstep.run_ahead off), for an A/B; `--device cpu` runs the script on the CPU, to
try it where there is no GPU (no synchronisations to count there).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_torch import large_scenario  # noqa: E402
from bench_attach import loop  # noqa: E402
from common import BREAKPOINTS, plain_torch  # noqa: E402

SIZES = (784, 2048, 2048, 10)
BATCH = 512


DEVICE = "cuda"


def sync() -> None:
    if DEVICE != "cpu":
        import torch
        torch.cuda.synchronize()


def count_syncs(fn) -> float:
    """How many synchronising CUDA calls `fn` makes (NaN on the CPU)."""
    import torch

    if DEVICE == "cpu":
        fn()
        return float("nan")
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum(1 for w in caught if "synchroniz" in str(w.message).lower())


def session(sc, start: int = 0, look_ahead: bool = True):
    import gdstep

    s = gdstep.open(sc, backend="torch", device=DEVICE, dtype="float32")
    s.look_ahead = look_ahead
    for condition in BREAKPOINTS:
        s.add_breakpoint(condition, log=False)
    if start:
        s.run(max_steps=start)
    return s


def timed_session(sc, steps: int, look_ahead: bool = True) -> float:
    s = session(sc, look_ahead=look_ahead)
    sync()
    t = time.perf_counter()
    result = s.run(max_steps=steps)
    sync()
    assert result.reason == "max_steps", result
    return time.perf_counter() - t


def attach_loop(mode: str, model, data) -> float:
    """bench_attach's timed loop (bare, dbg.step or dbg.watch), on the GPU."""
    return loop(mode, model, data, DEVICE)


def report(title: str, base: list[float], others: dict[str, list[float]], syncs: dict[str, float]) -> None:
    print(f"\n{title}")
    for name, times in others.items():
        ratios = [b / t for b, t in zip(base, times)]
        r = statistics.median(ratios)
        print(f"  {name:<20} × plain {r:5.2f} (range {min(ratios):.2f}–{max(ratios):.2f}), "
              f"{syncs.get(name, float('nan')):.2f} host syncs/iteration   goal ≥ 0.95: {'met' if r >= 0.95 else 'NOT met'}")
    if "plain" in syncs:
        print(f"  (the plain loop: {syncs['plain']:.2f} host syncs/iteration)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--each-phase", action="store_true", help="also Session.run with looking ahead off (an A/B)")
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu to try the script without a GPU")
    args = ap.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    try:
        import torch
    except ImportError:
        print("bench_cuda: torch is not installed; skipped")
        return
    if DEVICE != "cpu" and not torch.cuda.is_available():
        print("bench_cuda: no GPU here (torch.cuda.is_available() is False); skipped")
        return
    name = torch.cuda.get_device_name() if DEVICE != "cpu" else "the CPU"
    print(f"torch {torch.__version__} on {name}; {args.steps} steps a run, "
          f"median of {args.rounds} rounds")
    from gdstep.backends.numpy_backend import NumpyBackend

    steps = args.steps
    sc = large_scenario()
    start = NumpyBackend(sc, "float32")
    params = {k: v.copy() for k, v in start.params().items()}
    x, y = start.x.copy(), start.y.copy()

    # 1. Session.run vs plain
    runs = {"Session.run": True, "  each phase checked": False} if args.each_phase else {"Session.run": True}
    plain_times, run_times = [], {name: [] for name in runs}
    plain_torch(x, y, params, 5, batch_size=BATCH, device=DEVICE, sizes=SIZES)          # warm up
    timed_session(sc, 5)
    for _ in range(args.rounds):
        plain_times.append(plain_torch(x, y, params, steps, batch_size=BATCH, device=DEVICE, sizes=SIZES)[0])
        for name, look_ahead in runs.items():
            run_times[name].append(timed_session(sc, steps, look_ahead))
    n = min(50, steps)
    syncs = {}
    for name, look_ahead in runs.items():
        s = session(sc, start=20, look_ahead=look_ahead)
        syncs[name] = count_syncs(lambda: s.run(max_steps=n)) / n
    syncs["plain"] = count_syncs(lambda: plain_torch(x, y, params, n, batch_size=BATCH, device=DEVICE, sizes=SIZES)) / n
    report("torch backend Session.run vs plain torch, MLP 784-2048-2048-10, batch 512", plain_times, run_times, syncs)

    # 2. attach mode vs the bare loop
    torch.manual_seed(0)
    from torch import nn
    model0 = nn.Sequential(nn.Linear(784, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                           nn.Linear(2048, 10)).to(DEVICE)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(BATCH, 784, generator=g).to(DEVICE), torch.randint(0, 10, (BATCH,), generator=g).to(DEVICE))
            for _ in range(steps)]
    times: dict[str, list[float]] = {"bare": [], "step": [], "watch": []}
    attach_loop("bare", copy.deepcopy(model0), data[:5])
    for _ in range(args.rounds):
        for mode in times:
            times[mode].append(attach_loop(mode, copy.deepcopy(model0), data))
    syncs = {f"dbg.{mode}": count_syncs(lambda: attach_loop(mode, copy.deepcopy(model0), data[:n])) / n
             for mode in ("step", "watch")}
    syncs["plain"] = count_syncs(lambda: attach_loop("bare", copy.deepcopy(model0), data[:n])) / n
    report("attach mode vs the bare loop, MLP 784-2048-2048-10, batch 512", times["bare"],
           {"dbg.step": times["step"], "dbg.watch": times["watch"]}, syncs)


if __name__ == "__main__":
    main()
