"""Where attach mode's time goes: the bare loop and the loop with `dbg.watch`, part by part.

    python benchmarks/attach_parts.py [--nets cnn] [--steps 600] [--threads 1] [--clock cpu]

bench_attach.py says how much slower a loop runs with gdstep; this says where. The two loops
(bare, and the bare loop with `dbg.watch(loss, y)` between backward and step; gdstep's hooks
on the model's call, the loss module, the gradients' accumulation and the optimizer's step
as attach installs them) run in lockstep over the same batches, one iteration each in turn,
the order alternating. Each part of an iteration is timed alone — zero_grad, the model's
call (with gdstep: its forward hooks), the loss, backward (gradient hooks), watch(), and
step (step hooks) — and the report gives each part's µs an iteration and what gdstep adds
to it.

Then, without timing, how much Python each loop runs an iteration (`sys.setprofile`,
10 iterations): function calls, and distinct functions (gdstep's own, and in how many
modules). Unlike the times, these counts are exact and the same on any machine. They
matter because gdstep's Python runs cold: the loop's forward and backward stream megabytes
through the caches between gdstep's calls, so each function gdstep runs once an iteration
costs several times what the same call costs in a tight loop (measured on the CNN in
benchmarks/HISTORY.md, 2026-12-02, sixth session: ~10× for the forward pre-hook).

Last, what a call costs at the point of the bare loop where `dbg.watch` runs, right after
backward (`cold`), against the same call in a tight loop (`warm`): an empty Python call, a
trivial call into torch, one fused norm of the gradients with its reads (what watch()
reads for the history), and that norm twice in a row. The first torch reduction after
backward pays for bringing torch's machinery back into the caches; the second costs what
it costs warm. So the cost of a hook is mostly whether it touches torch at all, and an
iteration of attach mode has a floor of one such re-warming for each point of the
iteration where gdstep reads a tensor (the forward's start, watch(), after the step).
"""

from __future__ import annotations

import collections
import copy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_attach import build, data, lockstep_cli  # noqa: E402
from common import now  # noqa: E402

PARTS = ("zero_grad", "model(x)", "loss", "backward", "watch", "step")
MODES = ("bare", "watch")


def loops(kind: str):
    """For each loop its own model copy, optimizer and loss module (attach hooks the loss
    module: one shared would run gdstep's hook in the bare loop too); gdstep attached to the
    watch loop's."""
    import torch

    import gdstep

    model0 = build(kind, "cpu")
    out = {}
    for mode in MODES:
        model = copy.deepcopy(model0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.CrossEntropyLoss()
        dbg = (gdstep.attach(model, opt, loss_fn, breakpoints=["nan", "loss > 10 * prev_loss"], on_break="raise")
               if mode == "watch" else None)
        out[mode] = (model, opt, dbg, loss_fn)
    return out


def iteration(model, opt, dbg, loss_fn, x, y, spent: dict | None) -> None:
    """One iteration, each part's time added to `spent` (None: not timed)."""
    marks = [now()]
    opt.zero_grad()
    marks.append(now())
    out = model(x)
    marks.append(now())
    loss = loss_fn(out, y)
    marks.append(now())
    loss.backward()
    marks.append(now())
    if dbg is not None:
        dbg.watch(loss, y)
    marks.append(now())
    opt.step()
    marks.append(now())
    if spent is not None:
        for part, (a, b) in zip(PARTS, zip(marks, marks[1:])):
            spent[part] += b - a


def timed(kind: str, steps: int) -> dict[str, dict[str, float]]:
    """µs an iteration of each part, each loop, in lockstep after 20 iterations to warm up."""
    running = loops(kind)
    batches = data(kind, 40, "cpu")
    spent = {mode: dict.fromkeys(PARTS, 0.0) for mode in MODES}
    for i in range(20 + steps):
        x, y = batches[i % len(batches)]
        for mode in (MODES if i % 2 else MODES[::-1]):
            iteration(*running[mode], x, y, spent[mode] if i >= 20 else None)
    for _, _, dbg, _ in running.values():
        if dbg is not None:
            dbg.close()
    return {mode: {part: 1e6 * t / steps for part, t in parts.items()} for mode, parts in spent.items()}


def python_run(kind: str, n: int = 10) -> dict[str, tuple[int, int, int, int]]:
    """For each loop: (Python calls an iteration, distinct functions, gdstep's functions, gdstep's modules)."""
    running = loops(kind)
    batches = data(kind, 40, "cpu")
    out = {}
    for mode in MODES:
        for i in range(30):
            iteration(*running[mode], *batches[i % len(batches)], None)
        calls: collections.Counter = collections.Counter()

        def count(frame, event, arg):
            if event == "call":
                calls[frame.f_code] += 1
        sys.setprofile(count)
        try:
            for i in range(n):
                iteration(*running[mode], *batches[i % len(batches)], None)
        finally:
            sys.setprofile(None)
        calls.pop(iteration.__code__, None)
        ours = [c for c in calls if c.co_filename.startswith(str(ROOT / "gdstep"))]
        out[mode] = (round(sum(calls.values()) / n), len(calls), len(ours), len({c.co_filename for c in ours}))
    for _, _, dbg, _ in running.values():
        if dbg is not None:
            dbg.close()
    return out


def cold_costs(kind: str, steps: int = 300) -> list[tuple[str, float, float]]:
    """(what, µs in the bare loop right after backward, µs warm) of a few probes."""
    import torch

    model, opt, _, loss_fn = loops(kind)["bare"]
    batches = data(kind, 40, "cpu")
    params = list(model.parameters())

    def norms():
        return [n.item() for n in torch._foreach_norm([p.grad for p in params])]

    probes = {"an empty Python call": lambda: None,
              "a trivial call into torch (is_grad_enabled)": torch.is_grad_enabled,
              "one fused norm of the gradients, read": norms,
              "the same norm twice in a row": lambda: (norms(), norms())}
    out = []
    for what, probe in probes.items():
        spent = 0.0
        for i in range(20 + steps):
            x, y = batches[i % len(batches)]
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            t = now()
            probe()
            if i >= 20:
                spent += now() - t
            opt.step()
        t = now()
        for _ in range(steps):
            probe()
        out.append((what, 1e6 * spent / steps, 1e6 * (now() - t) / steps))
    return out


def main() -> None:
    args, torch, kinds = lockstep_cli(__doc__, steps=600)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {args.steps} iterations in lockstep, "
          f"{args.clock} clock")
    for kind in kinds:
        parts = timed(kind, args.steps)
        print(f"\n{kind}: µs an iteration   " + "  ".join(f"{p:>9}" for p in PARTS) + "      all")
        for mode in MODES:
            print(f"  {mode:<20}" + "  ".join(f"{parts[mode][p]:9.0f}" for p in PARTS)
                  + f"  {sum(parts[mode].values()):7.0f}")
        added = {p: parts["watch"][p] - parts["bare"][p] for p in PARTS}
        print(f"  {'gdstep adds':<20}" + "  ".join(f"{added[p]:+9.0f}" for p in PARTS) + f"  {sum(added.values()):+7.0f}")
        counts = python_run(kind)
        for mode in MODES:
            calls, functions, ours, modules = counts[mode]
            print(f"  Python an iteration, {mode:<6}: {calls} calls of {functions} functions"
                  + (f" ({ours} of gdstep's, in {modules} modules)" if ours else ""))
        print("  µs a call, right after backward (cold) and in a tight loop (warm):")
        for what, cold, warm in cold_costs(kind):
            print(f"    {what:<46} cold {cold:7.1f}   warm {warm:6.1f}")


if __name__ == "__main__":
    main()
