"""gdstep's torch backend in run mode (Session.run) against a plain torch loop.

    python benchmarks/bench_torch.py [--steps 560] [--rounds 9] [--cuda-steps 300] [--threads N] [--clock wall|cpu]

(`--clock cpu` times the CPU loops by their thread's CPU time, on one torch thread: on a
busy machine other processes do not inflate it. The CUDA comparison always uses the wall.)

1. CPU: the MLP 64-128-128-10 (ReLU, cross_entropy, Adam lr 1e-3, batch 64, float32), and
   the MLP 784-1024-1024-10, batch 256. Goal: Session.run ≥ 0.95 × the plain loop.
2. CUDA, where a GPU is available: the large net 784-2048-2048-10, batch 512, float32.
   Goal: Session.run ≥ 0.95 × a plain torch CUDA loop; the GPU's steps/s are printed
   (benchmarks/bench_cuda.py also counts host synchronisations and covers attach mode).

Both sides of a comparison run in one process, interleaved, on the same data, initial values
and batch order. Each round runs both once, back to back, and the ratio is taken within the
round; the median over rounds is reported (this machine's speed drifts from second to second,
a ratio within a round does not). Session.run has what a run keeps on: the loss and gradient
norms of every iteration, checkpoints for rewinding, non-finite checks and two breakpoints;
the full records of the iteration it stops at are made when read. On the CPU the plain loop
draws its batches in the timed loop, each epoch's order as it comes (as gdstep and the plain
numpy loop do); the same loop with every batch's index tensor made before the clock starts,
the baseline until this was changed, is reported beside it ("batches made before"). So is
the plain loop with `torch.optim.Adam(foreach=True)`: gdstep steps its own optimizers by
torch's multi-tensor arithmetic on kept lists (gdstep.backends.torch_step, the same bits as the
default step), and a plain loop can ask torch for its multi-tensor step too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import BREAKPOINTS, SCENARIO, now, plain_torch, scenario, use_clock  # noqa: E402

LARGE = (SCENARIO.replace('name = "benchmark MLP 64-128-128-10"', 'name = "benchmark MLP 784-2048-2048-10"')
         .replace("n = 1792", "n = 8192").replace("features = 64", "features = 784")
         .replace('layers = [ { linear = 128 }, "relu", { linear = 128 }, "relu", { linear = 10 } ]',
                  'layers = [ { linear = 2048 }, "relu", { linear = 2048 }, "relu", { linear = 10 } ]')
         .replace("batch_size = 64", "batch_size = 512"))


MEDIUM = (LARGE.replace("2048", "1024").replace("n = 8192", "n = 4096").replace("batch_size = 512", "batch_size = 256"))


def medium_scenario(dtype: str = "float32"):
    from gdstep.scenario import parse_scenario
    return parse_scenario(MEDIUM.replace("{dtype}", dtype))


def large_scenario(dtype: str = "float32"):
    from gdstep.scenario import parse_scenario
    return parse_scenario(LARGE.replace("{dtype}", dtype))


def session_run(sc, steps: int, device: str, look_ahead: bool = True):
    """Session.run on the torch backend, breakpoints on (loss spike, exploding gradients);
    `look_ahead=False`: checking each phase as it goes (gdstep.run_ahead off), for an A/B."""
    import torch

    import gdstep
    s = gdstep.open(sc, backend="torch", device=device, dtype="float32")
    s.look_ahead = look_ahead
    for condition in BREAKPOINTS:
        s.add_breakpoint(condition, log=False)
    if device != "cpu":
        torch.cuda.synchronize()
    start = now()
    result = s.run(max_steps=steps)
    if device != "cpu":
        torch.cuda.synchronize()
    elapsed = now() - start
    assert result.reason == "max_steps", result
    return elapsed, s.loss_value


def compare(sc, steps: int, rounds: int, device: str, batch_size: int, sizes,
            each_phase: bool = False) -> dict[str, list[float]]:
    """Steps/s of each contender in each round."""
    from gdstep.backends.numpy_backend import NumpyBackend

    start = NumpyBackend(sc, "float32")
    params = {k: v.copy() for k, v in start.params().items()}
    x, y = start.x.copy(), start.y.copy()           # writable, as torch.as_tensor wants
    runs = [("plain torch", lambda: plain_torch(x, y, params, steps, batch_size=batch_size, device=device, sizes=sizes)),
            ("gdstep Session.run", lambda: session_run(sc, steps, device))]
    if each_phase:
        runs.append(("  each phase checked", lambda: session_run(sc, steps, device, look_ahead=False)))
    if device == "cpu":           # the baseline as it was: the batches' index tensors made before the clock
        runs.append(("  plain, batches made before", lambda: plain_torch(
            x, y, params, steps, batch_size=batch_size, device=device, sizes=sizes, precomputed=True)))
        # gdstep steps its own Adam by torch's multi-tensor arithmetic (gdstep.backends.torch_step):
        # a plain loop that asks torch for it, beside the default one
        runs.append(("  plain, Adam(foreach=True)", lambda: plain_torch(
            x, y, params, steps, batch_size=batch_size, device=device, sizes=sizes, foreach=True)))
    rates: dict[str, list[float]] = {name: [] for name, _ in runs}
    for _ in range(rounds):
        for name, fn in runs:
            elapsed, _ = fn()
            rates[name].append(steps / elapsed)
    return rates


def report(title: str, rates: dict[str, list[float]], goal: float = 0.95) -> float:
    base = rates["plain torch"]
    print(f"\n{title}")
    for name, rs in rates.items():
        ratios = [r / b for r, b in zip(rs, base)]
        print(f"  {name:<28} {statistics.median(rs):9.1f} steps/s   × plain {statistics.median(ratios):5.2f} "
              f"(range {min(ratios):.2f}–{max(ratios):.2f})")
    ratio = statistics.median(r / b for r, b in zip(rates["gdstep Session.run"], base))
    print(f"  ratio {ratio:.2f} (goal ≥ {goal}): {'met' if ratio >= goal else 'NOT met'}")
    return ratio


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=560, help="CPU iterations per measurement (560 = 20 epochs)")
    ap.add_argument("--cuda-steps", type=int, default=300, help="CUDA iterations per measurement")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    ap.add_argument("--small-only", action="store_true", help="skip the 784-1024-1024-10 CPU comparison")
    ap.add_argument("--each-phase", action="store_true",
                    help="also Session.run checking each phase as it goes (looking ahead off): an A/B on the CPU")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="time with the wall clock, or with the running thread's CPU time (robust on a busy machine)")
    args = ap.parse_args(argv)
    use_clock(args.clock)
    import torch
    if args.clock == "cpu":
        args.threads = 1                         # the thread's CPU time counts no other thread's work
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.clock} clock")
    rates = compare(scenario("float32"), args.steps, args.rounds, "cpu", 64, (64, 128, 128, 10), args.each_phase)
    report(f"CPU: MLP 64-128-128-10, Adam, batch 64, float32; {args.steps} steps, median of {args.rounds} rounds", rates)
    if not args.small_only:
        steps = max(args.steps // 20, 10)
        rates = compare(medium_scenario(), steps, args.rounds, "cpu", 256, (784, 1024, 1024, 10), args.each_phase)
        report(f"CPU: MLP 784-1024-1024-10, Adam, batch 256, float32; {steps} steps, median of {args.rounds} rounds",
               rates)
    if torch.cuda.is_available():
        use_clock("wall")                        # a GPU's work is not the host thread's CPU time
        name = torch.cuda.get_device_name()
        rates = compare(large_scenario(), args.cuda_steps, args.rounds, "cuda", 512, (784, 2048, 2048, 10))
        report(f"CUDA ({name}): MLP 784-2048-2048-10, Adam, batch 512, float32; {args.cuda_steps} steps, "
               f"median of {args.rounds} rounds", rates)
        print(f"  GPU steps/s: gdstep {statistics.median(rates['gdstep Session.run']):.1f}, "
              f"plain torch {statistics.median(rates['plain torch']):.1f}")
    else:
        print("\nCUDA: no GPU here; the 784-2048-2048-10 comparison runs where one is available")


if __name__ == "__main__":
    main()
