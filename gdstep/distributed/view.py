"""What only a distributed debugger shows: each rank's loss and its local gradient (before
the all-reduce) beside the averaged one, and how far the ranks spread."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SMALL = 4096        # local gradients up to this many elements travel whole; of larger ones, the norm
HEAD = 6            # and the first elements (what the app shows of every parameter)


@dataclass(frozen=True)
class RankValues:
    """One rank's own numbers at a pause."""

    rank: int
    loss: float | None
    grads_step: int | None                     # updates done before the backward they come from
    local_norm: float                          # ‖g_r‖ over every trainable parameter
    local_norms: dict[str, float]
    deviation: float                           # ‖g_r − ḡ‖ / ‖ḡ‖
    finite: bool
    found: str | None = None                   # what this rank's conditions found, if anything
    local_grads: dict[str, np.ndarray] = field(default_factory=dict, repr=False)   # the small ones, whole
    heads: dict[str, np.ndarray] = field(default_factory=dict, repr=False)         # every one's first elements


@dataclass(frozen=True)
class RanksView:
    """Every rank's values, the averaged gradient's norm, and who stands out."""

    ranks: tuple[RankValues, ...]
    averaged_norm: float
    averaged: dict[str, np.ndarray] = field(default_factory=dict, repr=False)       # the small ones, whole
    averaged_heads: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    averaged_norms: dict[str, float] = field(default_factory=dict, repr=False)
    shapes: dict[str, tuple] = field(default_factory=dict, repr=False)

    @property
    def losses(self) -> list[float | None]:
        return [r.loss for r in self.ranks]

    def outliers(self) -> tuple[int, ...]:
        """Ranks with a non-finite value, or far above the others (loss, or distance of the
        local gradient from the average): more than 5 median absolute deviations and half
        the median above the median, with three ranks or more."""
        out = {r.rank for r in self.ranks if not r.finite or r.loss is None or not math.isfinite(r.loss)}
        finite = [r for r in self.ranks if r.rank not in out]
        for key in (lambda r: r.loss, lambda r: r.deviation):
            kept = [r for r in finite if math.isfinite(key(r))]     # a NaN average leaves no deviation finite
            if len(kept) >= 3:
                values = np.array([key(r) for r in kept], dtype=float)
                med = float(np.median(values))
                mad = float(np.median(np.abs(values - med)))
                out |= {r.rank for r, v in zip(kept, values) if v - med > max(5 * mad, 0.5 * abs(med))}
        return tuple(sorted(out))

    def text(self) -> str:
        steps = {r.grads_step for r in self.ranks}
        when = f"update {min(steps) + 1}" if steps and None not in steps else "no backward yet"
        lines = [f"ranks: {len(self.ranks)} · local gradients before the all-reduce ({when}) · ‖ḡ‖ = {_num(self.averaged_norm)}",
                 f"{'rank':>4}  {'loss':>12}  {'‖g local‖':>12}  {'‖g−ḡ‖/‖ḡ‖':>11}  finite"]
        stand = set(self.outliers())
        for r in self.ranks:
            mark = "  ← stands out" if r.rank in stand else ""
            lines.append(f"{r.rank:>4}  {_num(r.loss):>12}  {_num(r.local_norm):>12}  {_num(r.deviation):>11}  "
                         f"{'yes' if r.finite else 'NO'}{mark}")
        losses = np.array([r.loss if r.loss is not None else np.nan for r in self.ranks], dtype=float)
        if np.all(np.isfinite(losses)):
            lines.append(f"loss over ranks: mean {_num(float(losses.mean()))}, spread (max − min) {_num(float(np.ptp(losses)))}")
        return "\n".join(lines)


    def names(self) -> list[str]:
        """Every parameter with local gradients, in the model's order."""
        seen = dict.fromkeys(n for r in self.ranks for n in r.local_norms)
        return list(seen) or list(self.averaged)

    def param_text(self, name: str, count: int = HEAD) -> str:
        """One parameter: each rank's local gradient beside the average (first elements), and
        its norm on each rank."""
        avg = self.averaged.get(name, self.averaged_heads.get(name))
        if avg is None:
            return f"{name}: no local gradient"
        avg = avg.reshape(-1)
        shape = self.shapes.get(name, tuple(self.averaged[name].shape) if name in self.averaged else None)
        shown = min(count, avg.size)
        lines = [f"{name} {shape} · first {shown} elements of ∂L/∂W, then ‖∂L/∂W‖"]
        for r in self.ranks:
            g = r.local_grads.get(name, r.heads.get(name))
            if g is not None:
                norm = r.local_norms.get(name)
                lines.append(f"  rank {r.rank:<3} " + "  ".join(f"{v:>10.4g}" for v in g.reshape(-1)[:shown])
                             + ("" if norm is None else f"  {norm:>10.4g}"))
        norm = self.averaged_norms.get(name)
        lines.append("  average  " + "  ".join(f"{v:>10.4g}" for v in avg[:shown])
                     + ("" if norm is None else f"  {norm:>10.4g}"))
        return "\n".join(lines)

    def full_text(self) -> str:
        """The table, then every parameter: its first elements and norm on each rank."""
        return "\n\n".join([self.text()] + [self.param_text(n) for n in self.names()])


def _num(v) -> str:
    if v is None:
        return "none"
    return f"{v:.6g}" if math.isfinite(v) else str(v)


def local_and_averaged(backend, session, ranks) -> tuple[dict, dict, int | None]:
    """This rank's local gradients and their average over the ranks (one all-reduce), of the
    iteration where the ranks stand. Paused before that iteration's backward (a hit in
    forward or loss), the local ones are computed aside now — the wrapped module on this
    rank's batch, at the same values — so the view is of the iteration that hit; else they
    are those of the latest backward, as DDP's hooks saw them before its all-reduce. Their
    average is taken here, not read from `.grad`: by a pause after backward the loop's
    clipping (or `before_update`'s) may have scaled `.grad`, and the deviations of
    unclipped local gradients from a clipped average would be wrong. Every trainable
    parameter, in the model's order, on every rank: the all-reduce's sizes must agree, and a
    rank's backward may not reach a parameter another's does (find_unused_parameters: DDP
    counts its gradient as zero, and so does this)."""
    if session.phase_due in ("loss", "backward"):
        _, x, y = session.current_batch()
        grads, step = backend.gradients(x, y), session.step_count
    else:
        grads, step = backend.local_grads(), backend.local_step
    torch = ranks.torch
    local = {n: grads[n] if grads.get(n) is not None else torch.zeros_like(p) for n, p in backend._train}
    names = list(local)
    flat = torch.cat([local[n].reshape(-1) for n in names]).to(ranks.device)
    ranks.dist.all_reduce(flat)
    flat = flat.to(local[names[0]].device) / ranks.world
    averaged, at = {}, 0
    for n in names:
        averaged[n] = flat[at:at + local[n].numel()].reshape(local[n].shape)
        at += local[n].numel()
    return local, averaged, step


def rank_values(local, averaged, grads_step, session, rank: int, found: str | None):
    """This rank's values (computed where they live; only small tensors are copied whole),
    and the average's, the same on every rank: RanksView(everyone's values, **common)."""
    import torch

    names = [n for n in averaged if n in local]
    with torch.no_grad():
        norms = {n: float(torch.linalg.vector_norm(local[n].double())) for n in names}
        diff = math.sqrt(sum(float(torch.linalg.vector_norm((local[n] - averaged[n]).double())) ** 2 for n in names))
        avg = math.sqrt(sum(float(torch.linalg.vector_norm(averaged[n].double())) ** 2 for n in names))
        finite = all(bool(torch.isfinite(local[n]).all()) for n in names)
    total = math.sqrt(sum(v * v for v in norms.values()))
    small = {n: local[n].detach().cpu().numpy().copy() for n in names if local[n].numel() <= SMALL}
    heads = {n: local[n].detach().reshape(-1)[:HEAD].cpu().numpy().copy() for n in names}
    deviation = diff / avg if avg > 0 else (0.0 if diff == 0 else math.inf)
    values = RankValues(rank, session.loss_value, grads_step, total, norms, deviation, finite, found, small, heads)
    mean = {n: averaged[n].detach().cpu().numpy().copy() for n in names if averaged[n].numel() <= SMALL}
    with torch.no_grad():
        mean_norms = {n: float(torch.linalg.vector_norm(averaged[n].double())) for n in names}
    common = dict(averaged_norm=avg, averaged=mean, averaged_norms=mean_norms,
                  averaged_heads={n: averaged[n].detach().reshape(-1)[:HEAD].cpu().numpy().copy() for n in names},
                  shapes={n: tuple(averaged[n].shape) for n in names})
    return values, common
