"""How far watch mode is from the least an exact watch must do: a hand-written floor.

    python benchmarks/attach_floor.py [--nets cnn] [--blocks 24] [--threads 1] [--clock cpu]

`Floor` below hooks a model and its optimizer as attach mode does and keeps, each iteration,
what a lean watch (records on demand) cannot do without, in the fewest lines: at the
model's call the batch, torch's RNG state, every module's train/eval flag, the autocast
flag, and (as gdstep's chain of bounds does) one fused norm of the input and the weights;
the model's output, detached; each gradient as backward left it (post-accumulate hooks);
at `watch()` the parameters' version counters against those after the last step (an edit
of the loop's), the loss read, the gradients checked to be backward's own, one fused norm
of them (finite, and the history's), the loss and norms kept, the two breakpoints of
bench_attach (a non-finite value, a tenfold loss spike) tested; before the step the
gradients checked again; after it one fused norm of the parameters and the optimizer's
state (finite), a checkpoint every 16 iterations, the versions noted.

It leaves out what gdstep does more: no chain of bounds built (the rows' hooks and flags
checked, the bounds carried), no version counters of the optimizer's state, no param-group
checks, no update norms, no records or session, no timeline, no announcements. So it is a
floor, not a design: what the iteration costs at the least for reading tensors at three
points and holding what a rewind needs. The four loops (bare, `dbg.watch`, the floor, the
floor without the forward's read) run in lockstep over the same batches, one iteration each
in turn in a rotating order, in blocks of 50 iterations; reported: each one's added µs an
iteration against the bare loop (median over blocks) and its ratio.

On a net whose parameters are large (`--nets mlp`, 3.7 million) the floor is no floor: its
test after the step reads every parameter and state tensor, ~1.4 ms there, where gdstep's
update bounds (gdstep.backends.update_bound) read nothing. It is a floor for a small net,
where the reads are short and what costs is touching the loop's objects (the CNN).
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_attach import build, data, lockstep_cli  # noqa: E402
from common import now  # noqa: E402

BLOCK = 50
CHECKPOINT_EVERY = 16


class Floor:
    """The least an exact lean watch keeps (see the module's text)."""

    def __init__(self, model, opt, read_forward: bool = True):
        import torch

        self.torch, self.model, self.opt = torch, model, opt
        self.params = list(model.parameters())
        self.modules = list(model.modules())
        self.read_forward = read_forward
        self.kept: dict[int, tuple] = {}
        self.losses: list[float] = []
        self.grad_norms: list[list[float]] = []
        self.accumulated: dict[int, tuple] = {}
        self.step, self.versions, self.checkpoint = 0, None, None
        model.register_forward_pre_hook(self._pre, with_kwargs=True)
        model.register_forward_hook(self._post)
        for p in self.params:
            p.register_post_accumulate_grad_hook(self._grad)
        opt.register_step_pre_hook(self._before)
        opt.register_step_post_hook(self._after)

    def _pre(self, module, args, kwargs):
        torch = self.torch
        self.call = (args, kwargs, torch.get_rng_state(), [m.training for m in self.modules],
                     torch.is_autocast_enabled())
        if self.read_forward:
            self.forward_norms = [n.item() for n in torch._foreach_norm([args[0]] + self.params)]

    def _post(self, module, args, out):
        self.output = out.detach()

    def _grad(self, p):
        self.accumulated[id(p)] = (p.grad, p.grad._version)

    def watch(self, loss, y) -> float:
        if self.versions is not None and [p._version for p in self.params] != self.versions:
            raise RuntimeError("the loop changed a parameter")
        self.kept[self.step] = (self.call, y)
        self.kept.pop(self.step - CHECKPOINT_EVERY, None)
        value = loss.item()
        self.grads = [p.grad for p in self.params]
        for p, g in zip(self.params, self.grads):
            made = self.accumulated.get(id(p))
            if made is None or made[0] is not g or made[1] != g._version:
                raise RuntimeError("the gradients are not backward's")
        norms = [n.item() for n in self.torch._foreach_norm(self.grads)]
        self.losses.append(value)
        self.grad_norms.append(norms)
        prev = self.losses[-2] if len(self.losses) > 1 else math.nan
        if not math.isfinite(value) or not math.isfinite(math.fsum(x * x for x in norms)) or value > 10 * prev:
            raise RuntimeError("a breakpoint")
        return value

    def _before(self, opt, args, kwargs):
        if any(p.grad is not g for p, g in zip(self.params, self.grads)):
            raise RuntimeError("the gradients changed before the step")

    def _after(self, opt, args, kwargs):
        torch = self.torch
        state = [t for p in self.params for t in opt.state[p].values() if isinstance(t, torch.Tensor) and t.dim()]
        if not all(math.isfinite(n.item()) for n in torch._foreach_norm(self.params + state)):
            raise RuntimeError("not finite")
        self.step += 1
        if self.step % CHECKPOINT_EVERY == 0:
            self.checkpoint = ([p.detach().clone() for p in self.params], [t.clone() for t in state])
        self.versions = [p._version for p in self.params]


def loops(kind: str) -> dict:
    import torch

    import gdstep

    model0 = build(kind, "cpu")
    out = {}
    for name in ("bare", "dbg.watch", "floor", "floor, no forward read"):
        model = copy.deepcopy(model0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.CrossEntropyLoss()
        watcher = None
        if name == "dbg.watch":
            watcher = gdstep.attach(model, opt, loss_fn, breakpoints=["nan", "loss > 10 * prev_loss"], on_break="raise")
        elif name.startswith("floor"):
            watcher = Floor(model, opt, read_forward=(name == "floor"))
        out[name] = (model, opt, watcher, loss_fn)
    return out


def measure(kind: str, blocks: int) -> dict[str, list[float]]:
    """µs an iteration of each loop, per block (two blocks to warm up, not kept)."""
    running = loops(kind)
    batches = data(kind, 40, "cpu")
    orders = list(itertools.permutations(running))
    spent: dict[str, list[float]] = {name: [] for name in running}
    for block in range(blocks + 2):
        totals = dict.fromkeys(running, 0.0)
        for i in range(BLOCK):
            k = block * BLOCK + i
            x, y = batches[k % len(batches)]
            for name in orders[k % len(orders)]:
                model, opt, watcher, loss_fn = running[name]
                t = now()
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                if watcher is not None:
                    watcher.watch(loss, y)
                opt.step()
                totals[name] += now() - t
        if block >= 2:
            for name in running:
                spent[name].append(1e6 * totals[name] / BLOCK)
    return spent


def main() -> None:
    args, torch, kinds = lockstep_cli(__doc__, blocks=24)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {args.blocks} blocks of {BLOCK} "
          f"iterations in lockstep, {args.clock} clock")
    for kind in kinds:
        spent = measure(kind, args.blocks)
        bare = spent["bare"]
        print(f"\n{kind}: bare {statistics.median(bare):.0f} µs an iteration")
        for name, times in spent.items():
            if name == "bare":
                continue
            added = statistics.median(a - b for a, b in zip(times, bare))
            ratio = statistics.median(b / a for a, b in zip(times, bare))
            print(f"  {name:<24} adds {added:+5.0f} µs   × bare {ratio:.3f}")


if __name__ == "__main__":
    main()
