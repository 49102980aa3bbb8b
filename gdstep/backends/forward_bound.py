"""Proving a forward's outputs finite from bounds, instead of reading them.

A run tests the outputs of the layers that can turn finite values into non-finite ones
(Session._checked_layers): on a CNN those are the convolutions' outputs, megabytes each
iteration, read once more after the forward made them. Where the rows run as a chain (each
one's input is the very tensor the row called before it returned, unchanged since) through
layers whose largest |output| is bounded by their input's, reading them is not needed:

    Linear, Conv*, ConvTranspose*:   |z_j| = |Σ_k W_jk·a_k + b_j| ≤ max|a|·‖W‖₁ + ‖b‖₁
    ReLU, pooling, Flatten, GELU, SiLU, Identity …:   max|out| ≤ max|in|
    Tanh, Sigmoid, Softsign, Hardsigmoid:   ≤ 1;   LeakyReLU(s):   ≤ max(1, |s|)·max|in|
    ELU(α):   ≤ max(max|in|, α);   Dropout(p) in training:   ≤ max|in| / (1 − p)

(‖·‖₁ sums the whole tensor, so it is at least any one output's own sum.) From a bound of
max|x| of the first row's input (‖x‖₂, read as that row returns, while it is in the cache)
and the L1 norms of the weights (one fused read as the forward begins), a row whose bound
stays below its dtype's largest value by 2¹⁰ (more than the rounding of any sum can add) is
finite: nothing of it is read. A non-finite input or weight makes its norm
non-finite, an overflow makes a bound inf: then nothing is proved and the outputs are read.

Proved only where nothing else can change a value: exact torch.nn classes, no hook on the
row but gdstep's (and no global one), input, weights and output all float32 or all float64
(an autocast cast could overflow on the way in), on the CPU, the weights' version counters
as they were when the row ran. A row's weights are read only where that costs no more than
reading its output (sizes of the last forward), so a wide MLP reads its outputs as before.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

AFFINE = frozenset({"Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"})
SAME = frozenset({"ReLU", "ReLU6", "MaxPool1d", "MaxPool2d", "MaxPool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
                  "AdaptiveMaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d",
                  "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "Flatten", "Unflatten", "Identity", "GELU", "SiLU",
                  "PixelShuffle", "PixelUnshuffle", "ChannelShuffle"})
UNIT = frozenset({"Tanh", "Sigmoid", "Softsign", "Hardsigmoid"})
DROPOUT = frozenset({"Dropout", "Dropout1d", "Dropout2d", "Dropout3d"})
SMALL = 1 << 16          # elements: weights this small are read even for a smaller output (one fused read)
MARGIN = 2.0 ** -10      # a bound must stay below this fraction of the dtype's largest value


def rule_of(module) -> Callable[[float, Any], float] | str | None:
    """How max|output| follows from max|input| for this module: "affine" (from its weights'
    norms), a function of (bound, module, its training flag as it ran), or None (no bound:
    the chain ends here)."""
    import torch.nn as nn
    cls = type(module)
    name = cls.__name__
    if getattr(nn, name, None) is not cls:      # exact torch.nn classes: a subclass may compute otherwise
        return None
    if name in AFFINE:
        return "affine"
    if name in SAME:
        return lambda b, m, training: b
    if name in UNIT:
        return lambda b, m, training: 1.0
    if name == "LeakyReLU":
        return lambda b, m, training: b * max(1.0, abs(float(m.negative_slope)))
    if name == "ELU":
        return lambda b, m, training: max(b, abs(float(m.alpha)))
    if name in DROPOUT:
        return lambda b, m, training: b if not training else b / (1.0 - m.p) if m.p < 1 else float("inf")
    return None


class ForwardBound:
    """The rows' rules, their weights, and the sizes of their outputs in the last forward."""

    def __init__(self, torch, modules: Sequence[Any], own_hooks: Callable[[], set]):
        self.torch = torch
        self.modules = list(modules)
        self.rules = [rule_of(m) for m in self.modules]
        self.params = [tuple(p for p in (m.weight, m.bias) if p is not None) if r == "affine" else ()
                       for m, r in zip(self.modules, self.rules)]
        self.sizes = [0] * len(self.modules)
        self.measured = False           # whether a forward has given the sizes
        self.own_hooks = own_hooks      # ids of gdstep's own forward hooks (any other may change a value)
        self._limits: dict[Any, float] = {}

    def chosen(self) -> list[int]:
        """The affine rows whose weights are worth reading, in order, up to the first row with
        no rule or whose weights are larger than its output was; none where no output of
        theirs is large (small outputs are read together, in one fused norm, at little cost)."""
        out = []
        for i, rule in enumerate(self.rules):
            if rule is None:
                break
            if rule == "affine":
                if not self.sizes[i] or sum(p.numel() for p in self.params[i]) > max(self.sizes[i], SMALL):
                    break
                out.append(i)
        return out if any(self.sizes[i] >= SMALL for i in out) else []     # small outputs are read together

    def limit(self, dtype) -> float:
        """The largest bound that proves a value of this dtype finite (0: none does)."""
        limit = self._limits.get(dtype)
        if limit is None:
            torch = self.torch
            limit = self._limits[dtype] = (torch.finfo(dtype).max * MARGIN
                                           if dtype in (torch.float32, torch.float64) else 0.0)
        return limit

    def walk(self) -> "Walk":
        return Walk(self)


class Walk:
    """One forward, followed row by row as it runs (`link`, from the rows' hooks or the
    Sequential's loop), and the rows it proves finite (`proven`: as they run, or after the
    forward in watch mode). The weights' norms are read as the forward begins (`read`);
    a row whose weights' versions moved since proves nothing."""

    def __init__(self, bound: ForwardBound):
        self.fb = bound
        self.rows = bound.chosen()
        self.norms: dict[int, tuple[float, tuple]] | None = None
        self.calls: list[tuple] = []       # (row, linked (see _linked), output dtype, weights' versions, training)
        self.first_bound: float | None = None     # max|x| of the first row's input
        self.last = None                   # the last row's output, and its version then
        self.last_version = -1
        torch = bound.torch
        hooks = torch.nn.modules.module
        self.hooked = bool(hooks._global_forward_hooks or hooks._global_forward_pre_hooks)
        self.own = bound.own_hooks()       # the ids of gdstep's own forward hooks
        self._done = 0                     # calls evaluated so far
        self._bound: float | None = None
        self._proven: set[int] = set()
        self.bounds: dict[int, float] = {}        # each row's bound of max|output| (its latest call)

    def read(self, x=None) -> None:
        """Bounds of the L1 norms of the chosen rows' weights, √n·‖W‖₂ ≥ ‖W‖₁, with their
        versions (read as the forward begins: a change through `.data` moves no version);
        with `x`, the first row's input, also ‖x‖₂ ≥ max|x| (`first_bound`): torch's fused
        norm, one read."""
        fb, torch = self.fb, self.fb.torch
        params = [p.detach() for i in self.rows for p in fb.params[i]]
        first = (isinstance(x, torch.Tensor) and x.is_floating_point() and x.is_cpu and x.numel() > 0
                 and all(p.dtype == x.dtype for p in params))
        tensors = [x.detach()] + params if first else params
        values: list[float] = []
        if tensors:
            with torch.no_grad():
                try:
                    norms = torch._foreach_norm(tensors)
                except (RuntimeError, TypeError):
                    norms = [torch.linalg.vector_norm(t) for t in tensors]
                same = all(n.dtype == norms[0].dtype for n in norms)
                values = torch.stack(norms if same else [n.double() for n in norms]).tolist()
        if first:
            self.first_bound, values = values[0], values[1:]
        values = [v * math.sqrt(p.numel()) for v, p in zip(values, params)]
        norms, k = {}, 0
        for i in self.rows:
            params = fb.params[i]
            norms[i] = (values[k:k + len(params)], (params[0]._version, params[-1]._version))
            k += len(params)
        self.norms = norms

    def link(self, i: int, module, args, out) -> None:
        """Row i ran on args and returned out (from its forward hook, or the Sequential's loop).
        Never raises: a row it cannot follow ends the chain there."""
        fb = self.fb
        try:
            linked = self._linked(i, module, args[0] if args else None, out)
            params = fb.params[i]
            versions = (params[0]._version, params[-1]._version) if params else ()
            if out is not None:
                fb.sizes[i] = out.numel()
                self.last, self.last_version = out, out._version
            else:
                self.last = None
        except Exception:           # an inference tensor has no version counter: nothing proved from here
            linked, versions, self.last = False, (), None
        self.calls.append((i, linked, out.dtype if linked else None, versions, module.training))

    def _linked(self, i: int, module, x, out) -> bool:
        """Whether row i's output follows from the chain's bound: its input is the output of
        the row called before it, changed since only by this row itself (in place), and
        nothing but the row's own computation stands between them."""
        if self.fb.rules[i] is None or self.hooked or module._forward_pre_hooks or x is None or out is None:
            return False
        if not self.own.issuperset(module._forward_hooks):
            return False
        if self.calls:
            changed = 1 if out is x and getattr(module, "inplace", False) is True else 0
            if x is not self.last or x._version != self.last_version + changed:
                return False
        else:
            if out is x or not isinstance(x, self.fb.torch.Tensor):
                return False
            if self.rows:           # read now, while the row has just read it (in the cache)
                self.first_bound = self._max_abs(x)
        return out.dtype == x.dtype and out.is_cpu

    def ahead(self, model, x) -> set[int]:
        """The rows of an exact nn.Sequential proved before it runs on x: its children run as a
        chain with nothing between them, so each one's input is the output of the one before
        (in place or not), and each output's dtype is x's where no autocast casts (the caller
        checks) and the weights share it. Links every row, so `proven()` answers for all."""
        torch, fb = self.fb.torch, self.fb
        if (self.hooked or type(model) is not torch.nn.Sequential or "forward" in model.__dict__
                or not isinstance(x, torch.Tensor) or not x.is_floating_point() or not x.is_cpu
                or list(model.children()) != fb.modules):
            return set()
        if self.first_bound is None:
            self.first_bound = self._max_abs(x)
        for i, m in enumerate(fb.modules):
            params = fb.params[i]
            linked = (fb.rules[i] is not None and not m._forward_pre_hooks and self.own.issuperset(m._forward_hooks)
                      and all(p.dtype == x.dtype for p in params))
            self.calls.append((i, linked, x.dtype if linked else None,
                               (params[0]._version, params[-1]._version) if params else (), m.training))
        return self.proven()

    def proven(self, i: int | None = None) -> set[int] | bool:
        """The rows proven finite so far (with `i`: whether row i is)."""
        fb = self.fb
        while self._done < len(self.calls):
            row, linked, dtype, versions, training = self.calls[self._done]
            if self._done == 0:
                self._bound = self.first_bound if linked else None
            b = self._bound if linked else None
            rule = fb.rules[row]
            if b is not None and rule == "affine":
                norms = (self.norms or {}).get(row)
                if norms is None or norms[1] != versions or any(p.dtype != dtype for p in fb.params[row]):
                    b = None
                else:
                    w = norms[0]
                    b = b * w[0] + (w[1] if len(w) > 1 else 0.0)
            elif b is not None:
                b = rule(b, fb.modules[row], training)
            self._bound = b
            if b is not None:
                self.bounds[row] = b
            if b is not None and b < fb.limit(dtype):       # False for nan
                self._proven.add(row)
            else:                                           # a row called again: its latest call counts
                self._proven.discard(row)
            self._done += 1
        return self._proven if i is None else i in self._proven

    def _max_abs(self, x) -> float | None:
        """A bound of max|x| (inf or nan where x is not finite)."""
        torch = self.fb.torch
        if not x.is_floating_point() or not x.is_cpu or x.numel() == 0:
            return None
        with torch.no_grad():     # ‖x‖₂ ≥ max|x|, and unlike |x|.max() it makes no copy of x
            return torch.linalg.vector_norm(x.detach()).item()
