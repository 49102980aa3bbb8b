"""gdstep's numpy engine and Session against a plain numpy loop and a plain torch CPU loop.

    python benchmarks/bench_engine.py [--steps 280] [--rounds 9] [--clock wall|cpu]

(On a machine with few or shared cores set OPENBLAS_NUM_THREADS=1: a multithreaded BLAS
there measures the scheduler more than the code, for every contender. On a busy machine
`--clock cpu` times each loop by its thread's CPU time, which other processes do not
inflate; it needs OPENBLAS_NUM_THREADS=1, and runs torch on one thread.)

Everything runs in one process on the same data, initial values and batch order. Each
round runs every contender once, back to back, and the ratio to the plain numpy loop is
taken within the round; the median over rounds is reported (this machine's speed drifts
from second to second, a ratio within a round does not). Goals: engine ≥ 0.8 × plain
numpy (same dtype) and ≥ 1.0 × plain torch CPU; Session.run with history and breakpoints
on ≥ 0.95 × plain numpy (records on demand: a run keeps lean records). Also reported: phases/s when stepping phase by phase, and how
long the longest rewind takes after 10,000 iterations (goal: under a second).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from common import BREAKPOINTS, batches, now, plain_numpy, plain_torch, scenario, use_clock  # noqa: E402


def engine_loop(sc, dtype, steps):
    """The numpy engine alone: the backend's four phases in a loop, no Session."""
    from gdstep.backends.numpy_backend import NumpyBackend

    backend = NumpyBackend(sc, dtype)
    it = batches(backend.n_samples, 64, sc.seed, steps * 64 // backend.n_samples + 2)
    start = now()
    with np.errstate(all="ignore"):
        for _ in range(steps):
            x, y = backend.batch(next(it))
            outputs = backend.forward(x)
            _, value = backend.loss(outputs, y)
            _, _, grads = backend.backward(x, outputs, y)
            backend.update(grads)
    return now() - start


def session_run(sc, dtype, steps, look_ahead: bool = True):
    """Session.run with history, snapshots and breakpoints on (non-finite, loss spike,
    exploding gradients); `look_ahead=False`: checking each phase as it goes
    (gdstep.run_ahead off), for an A/B."""
    import gdstep
    s = gdstep.open(sc, dtype=dtype)
    s.look_ahead = look_ahead
    for condition in BREAKPOINTS:
        s.add_breakpoint(condition, log=False)
    start = now()
    result = s.run(max_steps=steps)
    elapsed = now() - start
    assert result.reason == "max_steps", result
    return elapsed


def session_phases(sc, dtype, steps):
    """Stepping phase by phase through the public API: s.next_phase(), 4 × steps times."""
    import gdstep
    s = gdstep.open(sc, dtype=dtype)
    start = now()
    for _ in range(steps * 4):
        s.next_phase()
    return now() - start


def longest_rewind(sc, dtype, iterations=10_000):
    """Run `iterations`, then rewind to points just before snapshots (the worst case: the
    most recomputation) and to the start; the slowest rewind counts."""
    import gdstep
    s = gdstep.open(sc, dtype=dtype)
    s.run(max_steps=iterations)
    end = s.position
    steps = s._timeline.steps
    gaps = sorted(((b - a, b) for a, b in zip(steps, steps[1:])), reverse=True)[:3]
    targets = [4 * (b - 1) + 3 for _, b in gaps] + [4 * 17 + 2, 0]
    worst = 0.0
    for target in targets:
        s.seek(end)
        start = now()
        s.seek(target)
        worst = max(worst, now() - start)
    return worst, len(steps), s._timeline.nbytes, s._timeline.interval


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=280, help="iterations per measurement (280 = 10 epochs)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--no-rewind", action="store_true", help="skip the 10,000-iteration rewind measurement")
    ap.add_argument("--each-phase", action="store_true",
                    help="also Session.run checking each phase as it goes (looking ahead off): an A/B")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="time with the wall clock, or with the running thread's CPU time (robust on a busy machine)")
    args = ap.parse_args(argv)
    use_clock(args.clock)
    if args.clock == "cpu" and os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        ap.error("--clock cpu counts one thread's time: run with OPENBLAS_NUM_THREADS=1")
    steps = args.steps
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and args.clock == "cpu":
        torch.set_num_threads(1)

    print(f"MLP 64-128-128-10, ReLU, cross_entropy, Adam lr 1e-3, batch 64, 1792 samples; {steps} steps a run, "
          f"median of {args.rounds} rounds; {args.clock} clock")
    from gdstep.backends.numpy_backend import NumpyBackend
    for dtype in ("float64", "float32"):
        sc = scenario(dtype)
        start = NumpyBackend(sc, dtype)
        params = {k: np.array(v) for k, v in start.params().items()}
        x, y = np.array(start.x), np.array(start.y)
        contenders = [("gdstep engine", lambda: engine_loop(sc, dtype, steps)),
                      ("Session.run", lambda: session_run(sc, dtype, steps)),
                      ("Session phase by phase", lambda: session_phases(sc, dtype, steps))]
        if args.each_phase:
            contenders.insert(2, ("  each phase checked", lambda: session_run(sc, dtype, steps, look_ahead=False)))
        if torch is not None:
            contenders.append(("plain torch cpu", lambda: plain_torch(x, y, params, steps, dtype=dtype)[0]))
        ratios = {name: [] for name, _ in contenders}
        rates = {name: [] for name, _ in contenders}
        base_rates = []
        for _ in range(args.rounds):
            base = plain_numpy(x, y, params, steps)[0]
            base_rates.append(steps / base)
            for name, fn in contenders:
                elapsed = fn()
                ratios[name].append(base / elapsed)
                rates[name].append(steps / elapsed)
        print(f"\n{dtype}:   plain numpy {statistics.median(base_rates):7.0f} steps/s")
        torch_ratio = statistics.median(ratios["plain torch cpu"]) if torch is not None else None
        for name in ratios:
            r = statistics.median(ratios[name])
            line = (f"  {name:<24} {statistics.median(rates[name]):7.0f} steps/s   × plain numpy {r:5.2f} "
                    f"(range {min(ratios[name]):.2f}–{max(ratios[name]):.2f})")
            if torch_ratio and name != "plain torch cpu":
                line += f"   × plain torch {r / torch_ratio:5.2f}"
            if name == "Session phase by phase":
                line += f"   = {4 * statistics.median(rates[name]):.0f} phases/s"
            if name == "Session.run":
                line += f"   goal ≥ 0.95: {'met' if r >= 0.95 else 'NOT met'}"
            print(line)
    if not args.no_rewind:
        worst, kept, nbytes, interval = longest_rewind(scenario("float64"), "float64")
        print(f"\nrewind after 10,000 iterations (float64): longest {worst * 1000:.0f} ms; "
              f"{kept} snapshots kept, {nbytes / 2**20:.1f} MiB, every {interval} steps before the last 16")


if __name__ == "__main__":
    main()
