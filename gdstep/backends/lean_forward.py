"""A run's forward on the torch backend when records are made on demand: no output kept but
the model's, and the checked rows' outputs tested for nan/inf as they are made — proved
finite from bounds where that reads less (gdstep.backends.forward_bound), else normed: a
large output at once, while it is in the cache, small ones together at the end. Mixed into
ModuleBackend."""

from __future__ import annotations

import math
from typing import Any, Sequence

from gdstep.backends.forward_bound import ForwardBound, Walk


class LeanForward:
    # a run's lean forward: the rows whose outputs are tested, the norms of the large ones
    # taken as they were made, the small ones held to the end, and the elements from which
    # one is large; None: every output is kept
    _lean_rows: tuple[frozenset, list, list, float] | None = None
    _walk: Walk | None = None          # the lean forward's chain of bounds (None: every tested output is read)

    LARGE = 1 << 16     # elements: an output this large is tested as it is made, not held

    @property
    def forward_bound(self) -> ForwardBound:
        """The rows' bounds (made again when the rows change)."""
        kept = getattr(self, "_forward_bound", None)
        if kept is None or kept[0] is not self._rows or kept[1].stale():
            kept = self._forward_bound = (self._rows, ForwardBound(self._torch, [m for _, m in self._rows], self))
        return kept[1]

    def _lean_begin(self, checked: Sequence[int], large: float) -> None:
        """Start a lean forward: its tested rows, and on the CPU the chain of bounds with the
        weights' norms read."""
        self._lean_rows = (frozenset(checked), [], [], large)
        self._walk = self._bound_walk()
        if self._walk is not None and self._walk.rows:
            self._walk.read()

    def _bound_walk(self, small: bool = False) -> Walk | None:
        """A chain of bounds for the next forward, on the CPU, where it may prove a row, or
        where no forward has given the rows' sizes yet (`small`: where every output is small
        too, as watch mode would otherwise read each through a hook)."""
        if self.device != "cpu":
            return None
        walk = self.forward_bound.walk(small)
        return walk if walk.rows or not walk.fb.measured else None

    def _lean_end(self) -> tuple[list, list]:
        """(the norms taken, the small outputs held)."""
        _, norms, small, _ = self._lean_rows
        if self._walk is not None:
            self._walk.fb.measured = True
        self._lean_rows = self._walk = None
        return norms, small

    def forward_lean(self, x, checked: Sequence[int], defer: bool = False):
        """The forward of a run (records on demand): none but the model's output is kept, so
        memory is freed and reused as a plain loop frees it, and the outputs of the
        `checked` rows are tested (see the module's text). Returns (the outputs, None for
        each not kept; whether all the checked ones are finite: a bool, or with `defer` a
        flag on the device)."""
        self._lean_begin(checked, self.LARGE)
        try:
            outputs = self.forward(x)
        finally:
            norms, small = self._lean_end()
        torch = self._torch
        if small:
            try:
                with torch.no_grad():
                    norms += torch._foreach_norm(small)
            except (RuntimeError, TypeError):
                norms.append(None)
        if any(n is None for n in norms):          # a norm could not be taken: the full test, recomputed
            return outputs, False
        if not norms:
            return outputs, True
        if defer:
            return outputs, torch.stack([n.double() for n in norms]).sum()
        return outputs, all(math.isfinite(n.item()) for n in norms)

    def _row_ran(self, i: int, module, args, out, last: int) -> None:
        """Row i returned `out` (its first tensor) from `args`: followed by the chain of
        bounds, then kept, or (a lean forward) tested and let go."""
        walk = self._walk
        if walk is not None:
            walk.link(i, module, args, out)
        lean = self._lean_rows
        if lean is None or i == last:
            self._slots[i] = out
            if self._copy_outputs and out is not None:    # as made: an in-place module may write over it
                self._produced[i] = out.detach().clone()
        if lean is not None and i in lean[0] and not (walk is not None and walk.proven(i)):
            self._note_finite(lean, out)

    def finite_now(self, out: Any) -> bool:
        """Whether an output (on the CPU) is finite: its norm, read now; the exact test
        where the norm overflows."""
        if out is None or not out.is_floating_point():
            return True
        torch = self._torch
        half = out.dtype in (torch.float16, torch.bfloat16)
        with torch.no_grad():
            norm = torch.linalg.vector_norm(out.detach(), dtype=torch.float32 if half else None).item()
            return math.isfinite(norm) or bool(torch.isfinite(out).all())

    def _note_finite(self, lean: tuple, out: Any) -> None:
        """A checked row's output, as it is made: a large one's norm now (finite exactly when
        every element is, unless it overflows: then the caller recomputes the iteration with
        the exact test; half precision summed in float32, where its squares cannot
        overflow), a small one kept for the fused norm at the end."""
        if out is None or not out.is_floating_point():
            return
        torch = self._torch
        half = out.dtype in (torch.float16, torch.bfloat16)
        if out.numel() < lean[3] and not half and not self._copy_outputs:    # (an in-place module would change it)
            lean[2].append(out.detach())
            return
        try:
            with torch.no_grad():
                lean[1].append(torch.linalg.vector_norm(out.detach(), dtype=torch.float32 if half else None))
        except (RuntimeError, TypeError):
            lean[1].append(None)
