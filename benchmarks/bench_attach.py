"""Attach mode (`dbg.step` and `dbg.watch`) against the bare training loop it sits in.

    python benchmarks/bench_attach.py [--steps 60] [--rounds 7] [--threads N] [--device cpu|cuda] [--no-memory]
                                      [--clock wall|cpu]

Two nets, random data of fixed seed: a CNN on 28×28 images, batch 64 (conv 1→16 3×3, ReLU,
max-pool, conv 16→32 3×3, ReLU, max-pool, linear 1568→10), and an MLP 784-1024-1024-10,
batch 256; Adam, cross-entropy. Two more on request: `--nets deep`, an MLP 32-64×41-10 of 84
parameter tensors, batch 64, where gdstep's per-tensor costs show; `--nets small`, an MLP
64-128-128-10, batch 64, whose iteration is short enough that gdstep's fixed cost an
iteration shows (as on a GPU where the host's launches bound the loop). Three loops over the same batches:

- bare:  zero_grad, loss_fn(model(x), y), backward, step;
- step:  `dbg.step(x, y)` (gdstep runs the four phases, breakpoints "nan" and a loss spike);
- watch: the bare loop with `dbg.watch(loss, y)` between backward and step.

Speed, two ways. Whole loops: every round runs the three loops once, back to back in one
process, from the same initial values (attaching included), and the ratios are taken within
the round; the median over rounds is reported. In lockstep: one model copy per loop, the
three advanced one iteration each in turn, so that a machine whose speed drifts from second
to second slows all three alike; the ratio of each round's summed iteration times, the
median over rounds, and apart from it what the first iteration (attaching, the first
checkpoint) costs more than the bare loop's first. Goal ≥ 0.95 × bare (issue 11: ≥ 0.9). Peak memory: each loop in its own process (peak RSS above
what the process held after building the net and its data: gradients, optimizer state,
activations and, for gdstep, checkpoints and records), the median of three processes each,
against the goal 1.2 × bare + the checkpoint budget that attach mode was given
(`history_budget`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import CLOCKS, now, use_clock  # noqa: E402

BUDGET = 64 * 2**20          # attach mode's default history budget


def nets():
    return {"cnn": (64, (1, 28, 28)), "mlp": (256, (784,)), "deep": (64, (32,)), "small": (64, (64,))}


TITLES = {"cnn": "CNN 28×28, batch 64", "mlp": "MLP 784-1024-1024-10, batch 256",
          "deep": "MLP of 84 parameter tensors (42 Linear ~64×64, ReLU), batch 64 (--nets deep; no goal of its own)",
          "small": "MLP 64-128-128-10, batch 64 (--nets small; no goal of its own: gdstep's fixed cost an iteration)"}


def build(kind: str, device: str):
    import torch
    from torch import nn

    torch.manual_seed(0)
    if kind == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
    elif kind == "deep":       # many small parameter tensors, as a practitioner's net has: gdstep's per-tensor costs
        layers = [nn.Linear(32, 64), nn.ReLU()]
        for _ in range(40):
            layers += [nn.Linear(64, 64), nn.ReLU()]
        model = nn.Sequential(*layers, nn.Linear(64, 10))
    elif kind == "small":      # an iteration of ~0.3 ms: gdstep's fixed cost an iteration shows, as on a host-bound GPU
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    else:
        model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    return model.to(device)


def data(kind: str, steps: int, device: str):
    import torch

    batch, shape = nets()[kind]
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(batch, *shape, generator=g).to(device) for _ in range(steps)]
    ys = [torch.randint(0, 10, (batch,), generator=g).to(device) for _ in range(steps)]
    return list(zip(xs, ys))


def sync(device: str) -> None:
    if device != "cpu":
        import torch
        torch.cuda.synchronize()


def iteration(mode: str, model, opt, dbg, loss_fn, x, y) -> None:
    """One training iteration: the bare loop's, `dbg.step`'s, or the bare loop with `dbg.watch`."""
    if mode == "step":
        dbg.step(x, y)
        return
    opt.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    if mode == "watch":
        dbg.watch(loss, y)
    opt.step()


def loop(mode: str, model, batches, device: str) -> float:
    """Seconds for one pass over `batches` in `mode` (bare, step or watch)."""
    import torch

    import gdstep

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    dbg = None
    if mode != "bare":
        dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["nan", "loss > 10 * prev_loss"], on_break="raise")
    sync(device)
    start = now()
    for x, y in batches:
        iteration(mode, model, opt, dbg, loss_fn, x, y)
    sync(device)
    elapsed = now() - start
    if dbg is not None:
        dbg.close()
    return elapsed


def speed(kind: str, steps: int, rounds: int, device: str) -> dict[str, list[float]]:
    model0 = build(kind, device)
    batches = data(kind, steps, device)
    times: dict[str, list[float]] = {"bare": [], "step": [], "watch": []}
    loop("bare", copy.deepcopy(model0), batches[:3], device)          # warm up
    for _ in range(rounds):
        for mode in times:
            times[mode].append(loop(mode, copy.deepcopy(model0), batches, device))
    return times


def lockstep(kind: str, steps: int, rounds: int, device: str, warmup: int = 5) -> tuple[dict, dict]:
    """The three loops in lockstep: one model copy each, advanced one iteration at a time
    in turn (the order rotating every iteration), each iteration timed alone, so that all
    three see the machine as it is at that moment. After `warmup` iterations (the first
    one's extra cost reported apart: attaching, the first checkpoint), `rounds` rounds of
    `steps` iterations; returns ({mode: [seconds of each round]}, {mode: first iteration's seconds})."""
    import torch

    import gdstep

    model0 = build(kind, device)
    batches = data(kind, steps, device)
    modes = ("bare", "step", "watch")
    loops = {}
    for mode in modes:          # each its own loss module too: attach hooks it, and the bare loop runs no hook
        model = copy.deepcopy(model0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.CrossEntropyLoss()
        dbg = None if mode == "bare" else gdstep.attach(model, opt, loss_fn, breakpoints=["nan", "loss > 10 * prev_loss"],
                                                        on_break="raise")
        loops[mode] = (model, opt, dbg, loss_fn)

    def one(mode: str, x, y) -> float:
        sync(device)
        start = now()
        iteration(mode, *loops[mode], x, y)
        sync(device)
        return now() - start

    first: dict[str, float] = {}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    i = 0
    for r in range(-1, rounds):
        n = warmup if r < 0 else steps
        spent = dict.fromkeys(modes, 0.0)
        for _ in range(n):
            x, y = batches[i % len(batches)]
            order = modes[i % 3:] + modes[:i % 3]
            for mode in order:
                t = one(mode, x, y)
                spent[mode] += t
                first.setdefault(mode, t)
            i += 1
        if r >= 0:
            for mode in modes:
                times[mode].append(spent[mode])
    for _, _, dbg, _ in loops.values():
        if dbg is not None:
            dbg.close()
    return times, first


def peak(kind: str, mode: str, steps: int, device: str) -> int:
    """Peak RSS growth of one loop in a fresh process (bytes)."""
    out = subprocess.run([sys.executable, __file__, "--child", kind, mode, str(steps), device],
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout.strip().splitlines()[-1])["peak"]


def reset_peak() -> None:
    """Linux: make the peak RSS (VmHWM) the current RSS, so the peak measured is this loop's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def vm(key: str) -> int:
    """A size from /proc/self/status (VmRSS, VmHWM) in bytes; ru_maxrss where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(kind: str, mode: str, steps: int, device: str) -> None:
    import torch
    model = build(kind, device)
    batches = data(kind, steps, device)
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    reset_peak()
    before = vm("VmRSS")
    loop(mode, model, batches, device)
    grown = vm("VmHWM") - before if device == "cpu" else torch.cuda.max_memory_allocated() - base
    print(json.dumps({"peak": grown}))


def lockstep_cli(doc: str, **counts: int):
    """The command line attach_parts.py and attach_floor.py share: --nets, --threads,
    --clock and their own counts (`steps=600`: an `--steps` option of default 600), parsed,
    the clock and torch's threads set, the nets checked. Returns (args, torch, the nets)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--nets", default="cnn")
    for name, default in counts.items():
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = ap.parse_args()
    use_clock(args.clock)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = args.nets.split(",")
    for kind in kinds:
        if kind not in nets():
            ap.error(f"--nets: no net {kind!r} (one of {', '.join(nets())})")
    return args, torch, kinds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--nets", default="cnn,mlp")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="cpu: the running thread's CPU time, which a busy machine does not inflate (CPU only)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    use_clock(args.clock)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        kind, mode, steps, device = args.child
        child(kind, mode, int(steps), device)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {args.device}; "
          f"{args.steps} steps a loop, median of {args.rounds} rounds, {args.clock} clock")
    for kind in args.nets.split(","):
        times = speed(kind, args.steps, args.rounds, args.device)
        bare = times["bare"]
        title = TITLES[kind]
        print(f"\n{title}: bare {args.steps / statistics.median(bare):.1f} steps/s")
        for mode in ("step", "watch"):
            ratios = [b / t for b, t in zip(bare, times[mode])]
            r = statistics.median(ratios)
            goal = f"goal ≥ 0.95: {'met' if r >= 0.95 else 'NOT met'}" if kind in ("cnn", "mlp") else "no goal of its own"
            print(f"  dbg.{mode:<6} × bare {r:5.2f} (range {min(ratios):.2f}–{max(ratios):.2f})   {goal}")
        times, first = lockstep(kind, args.steps, args.rounds, args.device)
        print(f"  in lockstep (the three loops one iteration each in turn, {args.rounds} rounds of {args.steps} "
              f"after 5 to warm up):")
        for mode in ("step", "watch"):
            ratios = [b / t for b, t in zip(times["bare"], times[mode])]
            r = statistics.median(ratios)
            more = statistics.median((t - b) / args.steps for b, t in zip(times["bare"], times[mode]))
            print(f"  dbg.{mode:<6} × bare {r:5.2f} (range {min(ratios):.2f}–{max(ratios):.2f}), "
                  f"{1e6 * more:+.0f} µs an iteration;   its first iteration {1e3 * (first[mode] - first['bare']):+.0f} ms against the bare loop's")
        if args.no_memory:
            continue
        # each a median of three fresh processes: one process's peak varies by ±10 MiB
        # (the heap's layout), which alone could move a verdict at the line
        peaks = {mode: statistics.median(peak(kind, mode, args.steps, args.device) for _ in range(3))
                 for mode in ("bare", "step", "watch")}
        goal = 1.2 * peaks["bare"] + BUDGET
        for mode in ("step", "watch"):
            print(f"  peak memory dbg.{mode:<6} {peaks[mode] / 2**20:7.1f} MiB vs bare {peaks['bare'] / 2**20:6.1f} MiB "
                  f"({peaks[mode] / max(peaks['bare'], 1):.2f}×); goal ≤ 1.2 × bare + {BUDGET / 2**20:.0f} MiB budget "
                  f"= {goal / 2**20:.1f} MiB: {'met' if peaks[mode] <= goal else 'NOT met'}")


if __name__ == "__main__":
    main()
