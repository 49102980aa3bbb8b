"""Proving a forward's outputs finite from bounds, instead of reading them.

A run tests the outputs of the layers that can turn finite values into non-finite ones
(Session._checked_layers): on a CNN those are the convolutions' outputs, megabytes each
iteration, read once more after the forward made them. Where the rows run as a chain (each
one's input is the very tensor the row called before it returned, unchanged since) through
layers whose output's norm is bounded by their input's, reading them is not needed. The
chain carries F ≥ ‖a‖ (the 2-norm of the whole tensor, batch and all, which is at least
max|a|); with n the output's elements and C its channels (features):

    Linear:             ‖z‖ ≤ ‖W‖·F + ‖b‖·√(n/C)   (each row: |W_j·a_r| ≤ ‖W_j‖·‖a_r‖, Cauchy–Schwarz)
    Conv*, ConvTranspose* (zero padding), kernel k:
                        ‖z‖ ≤ √(∏k)·‖W‖·F + ‖b‖·√(n/C)   (an input element meets each weight
                                                           at most once: ≤ ∏k products)
    ReLU, GELU, SiLU, Flatten, PixelShuffle, Identity …:   ‖out‖ ≤ F   (|f(x)| ≤ |x|, or a permutation)
    MaxPool, AvgPool, kernel k:   ≤ √(∏k)·F   (each output at most the 2-norm of its window;
                                   an element in ≤ ∏k windows; divisor_override D: × max(1, √(∏k)/D));
                                   none for MaxPool dilated and padded: a window can hold padding
                                   alone, and its output is -inf
    Adaptive pools:     ≤ √n·F   (each output at most max|a| ≤ F)
    Tanh, Sigmoid, Softsign, Hardsigmoid:   ≤ √n;   LeakyReLU(s):   ≤ max(1, |s|)·F
    ELU(α):   ≤ F + |α|·√n;   Dropout(p) in training:   ≤ F / (1 − p)

(‖·‖ of a weight is its 2-norm as a vector, the Frobenius norm.) From ‖x‖ of the first row's
input (read as that row returns, while it is in the cache) and the norms of the weights (one
fused read as the forward begins), a row whose bound stays below its dtype's largest value by
2¹⁰ (more than the rounding of any sum, or a fast convolution's transforms, can add) is
finite: nothing of it is read. A non-finite input or weight makes its norm non-finite, an
overflow makes a bound inf: then nothing is proved and the outputs are read. A deep chain
multiplies its rows' factors: the 2-norms keep a factor near a weight's own gain (an MLP of
42 layers 64×64 at PyTorch's initialisation: ~4.6 a layer, far below float32's range).

Proved only where nothing else can change a value: exact torch.nn classes, no hook on the
row but gdstep's (and no global one), input, weights and output all float32 or all float64
(an autocast cast could overflow on the way in), on the CPU, the weights' version counters
as they were when the row ran. A row's weights are read only where that costs no more than
reading its output (sizes of the last forward), so a wide MLP reads its outputs as before.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from gdstep.backends.detachable import Detachable
from gdstep.backends.torch_finite import cpu_norms

AFFINE = frozenset({"Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"})
SAME = frozenset({"ReLU", "ReLU6", "Flatten", "Unflatten", "Identity", "GELU", "SiLU",
                  "PixelShuffle", "PixelUnshuffle", "ChannelShuffle"})
POOL = {"MaxPool1d": 1, "MaxPool2d": 2, "MaxPool3d": 3, "AvgPool1d": 1, "AvgPool2d": 2, "AvgPool3d": 3}
ADAPTIVE = frozenset({"AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "AdaptiveAvgPool1d",
                      "AdaptiveAvgPool2d", "AdaptiveAvgPool3d"})
UNIT = frozenset({"Tanh", "Sigmoid", "Softsign", "Hardsigmoid"})
DROPOUT = frozenset({"Dropout", "Dropout1d", "Dropout2d", "Dropout3d"})
SMALL = 1 << 16          # elements: weights this small are read even for a smaller output (one fused read)
MARGIN = 2.0 ** -10      # a bound must stay below this fraction of the dtype's largest value

# a rule: (F ≥ ‖input‖, the module, its training flag as it ran, the output's elements) -> F ≥ ‖output‖,
# inf where the module as it is now takes no bound (its settings read as it ran: they may change)
Rule = Callable[[float, Any, bool, int], float]
AFFINE_ROW = "affine"        # a Linear or convolution: from its weights' norms (`affine_factor`)


def _kernel(size, dims: int) -> int:
    """∏k: the elements of a kernel given as an int (every dimension) or a tuple."""
    return size ** dims if isinstance(size, int) else math.prod(size)


def _any(value, but: int = 1) -> bool:
    """Whether an int-or-tuple setting is other than `but` in some dimension."""
    return any(v != but for v in value) if isinstance(value, tuple) else value != but


def affine_factor(module) -> float:
    """√∏k of a convolution with zero padding (another mode repeats input elements: inf), 1
    for Linear."""
    if not hasattr(module, "kernel_size"):
        return 1.0
    return math.sqrt(math.prod(module.kernel_size)) if module.padding_mode == "zeros" else math.inf


def _pool(b: float, m, dims: int) -> float:
    """A pooling's bound: √∏k·b, × max(1, √∏k/|D|) with a divisor_override D; inf where
    it is dilated and padded (a window of padding alone makes -inf)."""
    if _any(getattr(m, "dilation", 1)) and _any(m.padding, 0):
        return math.inf
    k = math.sqrt(_kernel(m.kernel_size, dims))
    over = getattr(m, "divisor_override", None)
    return b * k * max(1.0, k / abs(over)) if over else b * k


def _attribute(attrs: dict, params: dict, buffers: dict, name: str):
    """A torch.nn module's attribute `name` as Python finds it for an exact torch.nn class
    (no property of that name): the instance's own dict, then nn.Module.__getattr__'s
    parameters, then buffers; None where none holds it."""
    if name in attrs:
        return attrs[name]
    if name in params:
        return params[name]
    return buffers.get(name)


def ours(hooks: dict, owner) -> bool:
    """Whether every hook in a module's dict of hooks is one of `owner`'s (its hooks change
    no value; any other may, another debugger's too), told by its class and owner, not by
    a set of ids made anew each forward."""
    return all(type(h) is Detachable and h.owner is owner for h in hooks.values())


def rule_of(module) -> Rule | str | None:
    """How ‖output‖ follows from ‖input‖ for this module: AFFINE_ROW (from its weights'
    norms), else a Rule, or None (no bound: the chain ends here)."""
    import torch.nn as nn
    cls = type(module)
    name = cls.__name__
    if getattr(nn, name, None) is not cls:      # exact torch.nn classes: a subclass may compute otherwise
        return None
    if name in AFFINE:
        return AFFINE_ROW
    if name in SAME:
        return lambda b, m, training, n: b
    if name in POOL:
        dims = POOL[name]
        return lambda b, m, training, n: _pool(b, m, dims)
    if name in ADAPTIVE:
        return lambda b, m, training, n: b * math.sqrt(n)
    if name in UNIT:            # at most 1 each, from a finite input (a nan stays a nan)
        return lambda b, m, training, n: math.sqrt(n) if math.isfinite(b) else b
    if name == "LeakyReLU":
        return lambda b, m, training, n: b * max(1.0, abs(float(m.negative_slope)))
    if name == "ELU":
        return lambda b, m, training, n: b + abs(float(m.alpha)) * math.sqrt(n)
    if name in DROPOUT:
        return lambda b, m, training, n: b if not training else b / (1.0 - m.p) if m.p < 1 else float("inf")
    return None


class ForwardBound:
    """The rows' rules, their weights, and the sizes of their outputs in the last forward."""

    def __init__(self, torch, modules: Sequence[Any], owner=None):
        self.torch = torch
        self.owner = owner              # whose hooks change no value (gdstep.backends.detachable)
        self.modules = list(modules)
        self.rules = [rule_of(m) for m in self.modules]
        self.types = [type(m) for m in self.modules]
        self.params = [tuple(p for p in (m.weight, m.bias) if p is not None) if r == AFFINE_ROW else ()
                       for m, r in zip(self.modules, self.rules)]
        self.channels = [getattr(m, "out_features", None) or getattr(m, "out_channels", 1) for m in self.modules]
        self.numels = [sum(p.numel() for p in params) for params in self.params]     # (fixed: new tensors make it stale)
        self.convs = [hasattr(m, "kernel_size") if r == AFFINE_ROW else False for m, r in zip(self.modules, self.rules)]
        # the affine rows' own dicts of parameters, with the weight and bias the rules were made from
        self._affine = [(m.__dict__, m._parameters, m._buffers, params[0], params[-1])
                        for m, params in zip(self.modules, self.params) if params]
        self._chosen: dict[tuple, list[int]] = {}
        self._flat: tuple[tuple, list] | None = None    # the chosen rows, and their weights and biases in order
        self.sizes = [0] * len(self.modules)
        self.shape_in: tuple | None = None      # the first row's input's shape in the last forward (the sizes' own)
        self.measured = False           # whether a forward has given the sizes
        self._limits: dict[Any, float] = {}

    def stale(self) -> bool:
        """Whether a row is no longer what the rules were made from: another class (a
        parametrization makes one), or other weight or bias tensors (`load_state_dict(…,
        assign=True)`, an assignment)."""
        if list(map(type, self.modules)) != self.types:        # (a type equals itself alone)
            return True
        for attrs, params, buffers, weight, last in self._affine:     # m.weight as Python finds it, quicker
            bias = _attribute(attrs, params, buffers, "bias")
            if _attribute(attrs, params, buffers, "weight") is not weight or (weight if bias is None else bias) is not last:
                return True
        return False

    def chosen(self, small: bool = False) -> list[int]:
        """The affine rows whose weights are worth reading, in order, up to the first row with
        no rule or whose weights are larger than its output was; none where no output of
        theirs is large (small outputs are read together, in one fused norm, at little cost),
        unless `small` (reading them would take a hook on every row: watch mode)."""
        key = (small, *self.sizes)
        kept = self._chosen.get(key)
        if kept is not None:
            return kept
        out = []
        for i, rule in enumerate(self.rules):
            if rule is None:
                break
            if rule == AFFINE_ROW:
                if not self.sizes[i] or self.numels[i] > max(self.sizes[i], SMALL):
                    break
                out.append(i)
        out = out if small or any(self.sizes[i] >= SMALL for i in out) else []
        if len(self._chosen) > 8:          # (sizes that change from forward to forward: an RNN's lengths)
            self._chosen.clear()
        self._chosen[key] = out
        return out

    def flat_params(self, rows: list[int]) -> list:
        """The weights and biases of these rows, in order (kept while the rows are the same)."""
        key = tuple(rows)
        if self._flat is None or self._flat[0] != key:
            self._flat = (key, [p for i in rows for p in self.params[i]])
        return self._flat[1]

    def limit(self, dtype) -> float:
        """The largest bound that proves a value of this dtype finite (0: none does)."""
        limit = self._limits.get(dtype)
        if limit is None:
            torch = self.torch
            limit = self._limits[dtype] = (torch.finfo(dtype).max * MARGIN
                                           if dtype in (torch.float32, torch.float64) else 0.0)
        return limit

    def walk(self, small: bool = False) -> "Walk":
        return Walk(self, small)


class Walk:
    """One forward, followed row by row as it runs (`link`, from the rows' hooks or the
    Sequential's loop), and the rows it proves finite (`proven`: as they run, or after the
    forward in watch mode). The weights' norms are read as the forward begins (`read`);
    a row whose weights' versions moved since proves nothing."""

    def __init__(self, bound: ForwardBound, small: bool = False):
        self.fb = bound
        self.rows = bound.chosen(small)
        self.norms: dict[int, tuple[float, tuple]] | None = None
        # (row, linked (see _linked), output dtype, weights' versions, training, output's elements)
        self.calls: list[tuple] = []
        self.first_bound: float | None = None     # ‖x‖ of the first row's input
        self.last = None                   # the last row's output, and its version then
        self.last_version = -1
        torch = bound.torch
        hooks = torch.nn.modules.module
        self.hooked = bool(hooks._global_forward_hooks or hooks._global_forward_pre_hooks)
        self._done = 0                     # calls evaluated so far
        self._bound: float | None = None
        self._proven: set[int] = set()
        self.bounds: dict[int, float] = {}        # each row's bound of ‖output‖ (≥ max|output|) (its latest call)

    def read(self, x=None) -> None:
        """The 2-norms of the chosen rows' weights and biases, with their versions (read as
        the forward begins: a change through `.data` moves no version); with `x`, the first
        row's input, also ‖x‖ (`first_bound`): torch's fused norm, one read."""
        fb, torch = self.fb, self.fb.torch
        params = fb.flat_params(self.rows)
        first = (isinstance(x, torch.Tensor) and x.is_floating_point() and x.is_cpu and x.numel() > 0
                 and all(p.dtype == x.dtype for p in params))
        tensors = [x, *params] if first else params         # (cpu_norms reads with gradients off)
        values = cpu_norms(torch, tensors) if tensors else []
        if first:
            self.first_bound, values = values[0], values[1:]
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
        self.calls.append((i, linked, out.dtype if linked else None, versions, module.training,
                           out.numel() if linked else 0))

    def _linked(self, i: int, module, x, out) -> bool:
        """Whether row i's output follows from the chain's bound: its input is the output of
        the row called before it, changed since only by this row itself (in place), and
        nothing but the row's own computation stands between them."""
        if self.fb.rules[i] is None or self.hooked or module._forward_pre_hooks or x is None or out is None:
            return False
        if not ours(module._forward_hooks, self.fb.owner):
            return False
        if self.calls:
            changed = 1 if out is x and getattr(module, "inplace", False) is True else 0
            if x is not self.last or x._version != self.last_version + changed:
                return False
        else:
            if out is x or not isinstance(x, self.fb.torch.Tensor):
                return False
            self.fb.shape_in = tuple(x.shape)
            if self.rows:           # read now, while the row has just read it (in the cache)
                self.first_bound = self._norm(x)
        return out.dtype == x.dtype and out.is_cpu

    def ahead(self, model, x) -> set[int]:
        """The rows of an exact nn.Sequential proved before it runs on x: its children run as a
        chain with nothing between them, so each one's input is the output of the one before
        (in place or not), and each output's dtype is x's where no autocast casts (the caller
        checks) and the weights share it; each output's size is the last forward's, where x
        has that forward's shape (a Sequential of these rows makes its shapes from x's alone).
        Links every row, so `proven()` answers for all."""
        torch, fb = self.fb.torch, self.fb
        if (self.hooked or type(model) is not torch.nn.Sequential or "forward" in model.__dict__
                or not isinstance(x, torch.Tensor) or not x.is_floating_point() or not x.is_cpu
                or not ours(model._forward_pre_hooks, fb.owner)     # (the loop's may change x)
                or list(model) != fb.modules or tuple(x.shape) != fb.shape_in or not all(fb.sizes)):
            return set()                     # (list(model), not children(): a row given twice stays twice)
        if self.first_bound is None:
            self.first_bound = self._norm(x)
        dtype, calls = x.dtype, self.calls        # (a row's cost counts: a net may have hundreds)
        for i, (m, rule, params, size) in enumerate(zip(fb.modules, fb.rules, fb.params, fb.sizes)):
            linked = (rule is not None and not m._forward_pre_hooks and (not m._forward_hooks or ours(m._forward_hooks, fb.owner))
                      and (not params or (params[0].dtype == dtype and params[-1].dtype == dtype)))
            calls.append((i, linked, dtype if linked else None,
                          (params[0]._version, params[-1]._version) if params else (), m.training, size))
        return self.proven()

    def proven(self, i: int | None = None) -> set[int] | bool:
        """The rows proven finite so far (with `i`: whether row i is)."""
        fb, calls, all_norms, proven = self.fb, self.calls, self.norms or {}, self._proven
        while self._done < len(calls):
            row, linked, dtype, versions, training, n = calls[self._done]
            if self._done == 0:
                self._bound = self.first_bound if linked else None
            b = self._bound if linked else None
            if b is not None:
                rule = fb.rules[row]
                if rule == AFFINE_ROW:                      # ‖W‖·F·√∏k + ‖b‖·√(n/C)
                    norms, params = all_norms.get(row), fb.params[row]
                    if (norms is None or norms[1] != versions or params[0].dtype != dtype
                            or params[-1].dtype != dtype):
                        b = None
                    else:
                        w = norms[0]
                        b = (b * w[0] * (affine_factor(fb.modules[row]) if fb.convs[row] else 1.0)
                             + (w[1] * math.sqrt(n / fb.channels[row]) if len(w) > 1 else 0.0))
                else:
                    b = rule(b, fb.modules[row], training, n)
            self._bound = b
            if b is not None:
                self.bounds[row] = b
            if b is not None and b < fb.limit(dtype):       # False for nan
                proven.add(row)
            else:                                           # a row called again: its latest call counts
                proven.discard(row)
            self._done += 1
        return proven if i is None else i in proven

    def _norm(self, x) -> float | None:
        """‖x‖, a bound of max|x| (inf or nan where x is not finite)."""
        torch = self.fb.torch
        if not x.is_floating_point() or not x.is_cpu or x.numel() == 0:
            return None
        with torch.no_grad():     # ‖x‖₂ ≥ max|x|, and unlike |x|.max() it makes no copy of x
            return torch.linalg.vector_norm(x.detach()).item()
