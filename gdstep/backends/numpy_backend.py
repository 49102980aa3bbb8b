"""The numpy backend: the exact, readable reference. Its state is plain data — dicts of
arrays that are never changed in place — so a checkpoint is a reference, free to take.

The trainable parameters and their optimizer state each live in one flat vector, and every
parameter is a view of it. The optimizers are elementwise, so one update over the flat
vectors computes exactly what one update per parameter would (the same IEEE operations on
the same numbers), in a few large array operations instead of many small ones.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from gdstep import arrays, heap
from gdstep.backends.base import LayerInfo
from gdstep.nn.losses import Loss, make_loss as _make_loss
from gdstep.problem import as_problem
from gdstep.records import ParamUpdate


def make_loss(config) -> Loss:
    return _make_loss(config.kind, config.options)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


class FlatLayout:
    """Where each trainable parameter lies in the flat vector: `pack` gathers arrays into
    one, `views` shows a flat vector as the parameters' arrays again."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]):
        self.names = tuple(shapes)
        self.spans: list[tuple[str, slice, tuple[int, ...]]] = []
        start = 0
        for name, shape in shapes.items():
            stop = start + math.prod(shape)
            self.spans.append((name, slice(start, stop), tuple(shape)))
            start = stop
        self.size = start
        self.slices = tuple(span for _, span, _ in self.spans)

    def pack(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        if not self.names:
            return np.empty(0)
        return np.concatenate([arrays[name].ravel() for name in self.names])

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {name: flat[span].reshape(shape) for name, span, shape in self.spans}

    def state_views(self, state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """A flat optimizer state as one state per parameter (arrays as views, the step shared)."""
        views = {k: self.views(v) for k, v in state.items() if isinstance(v, np.ndarray)}
        return {name: {k: (views[k][name] if k in views else v) for k, v in state.items()} for name in self.names}


def layer_infos(model) -> tuple[LayerInfo, ...]:
    infos = []
    for layer in model.layers:
        infos.append(LayerInfo(layer.index, str(layer.index), layer.kind, layer.text, tuple(layer.param_shapes), layer))
    return tuple(infos)


class NumpyBackend:
    name = "numpy"
    device = "cpu"
    shares_checkpoints = True       # checkpoints are immutable arrays: a twin may restore them (forks)
    runs_ahead = True               # a recomputation is exact: a run may check its iterations after (gdstep.run_ahead)

    def __init__(self, problem, dtype: str | None = None):
        """`problem`: a prepared Problem (gdstep.problem), or a scenario to prepare."""
        problem = as_problem(problem)
        heap.keep_freed_memory()
        self.problem = problem
        self.notes: list[str] = []
        self.dtype = dtype or problem.dtype or "float64"
        dt = np.dtype(self.dtype)
        self.model = problem.model
        self.loss_fn = make_loss(problem.loss)
        with np.errstate(over="ignore"):       # values float32 cannot hold become inf: paused on later
            self.x = _frozen(problem.x.astype(dt))
            params = {name: _frozen(p.astype(dt)) for name, p in problem.start.items()}
        y = problem.y
        self.y = _frozen(y.astype(dt) if y.dtype.kind == "f" else y.copy())
        self.n_samples = len(self.x)
        self.param_shapes = dict(self.model.param_shapes)
        self.trainable = problem.trainable
        self.layers = layer_infos(self.model)
        self._layout = FlatLayout({n: s for n, s in self.param_shapes.items() if n in self.trainable})
        self._flat = _frozen(self._layout.pack(params).astype(dt, copy=False))
        self._params = {**params, **self._layout.views(self._flat)}
        self.optimizer = problem.optimizer
        self._flat_state, self._state = self._init_state(self.optimizer)
        self._flat_grad: tuple[Any, np.ndarray | None] = (None, None)
        self._grad_pool: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []

    def fresh(self, problem=None) -> "NumpyBackend":
        """A new backend of this kind at the start of the same prepared problem (or of
        `problem`, another start for the same data)."""
        return NumpyBackend(problem or self.problem, self.dtype)

    @property
    def lean_norm_names(self) -> tuple[str, ...]:
        """The parameters `update_lean_norms` gives norms of, in its order (the flat vectors')."""
        return self._layout.names

    def _init_state(self, optimizer) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        flat_state = optimizer.init(self._flat)
        return flat_state, self._layout.state_views(flat_state)

    # -- phases -----------------------------------------------------------------------------

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.x.take(indices, axis=0), self.y.take(indices, axis=0)

    # The phases run under the Session's np.errstate(all="ignore"): non-finite values are
    # found and reported by the Session, not warned about.

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        outputs = self.model.forward(self._params, x)
        for out in outputs:
            out.setflags(write=False)
        return outputs

    def loss(self, outputs: Sequence[np.ndarray], y: np.ndarray, per_sample: bool = True) -> tuple[np.ndarray, float]:
        per_sample, value = self.loss_fn.forward(outputs[-1], y)
        return _frozen(per_sample), value

    def backward(self, x, outputs, y) -> tuple[np.ndarray, tuple[np.ndarray, ...], dict[str, np.ndarray]]:
        """δ and the gradients; the gradients are views of one flat gradient, which the update
        takes as it is."""
        grad_output = self.loss_fn.backward(outputs[-1], y)
        flat_grad, views = self._grad_buffer()
        deltas, grads = self.model.backward(self._params, x, outputs, grad_output, self.trainable, out=views)
        for d in deltas:
            d.setflags(write=False)
        flat_grad.setflags(write=False)
        self._flat_grad = (grads, flat_grad)
        return grad_output, deltas, grads

    def forward_backward_lean(self, x, y, checked: Sequence[int]) -> tuple:
        """Forward, loss and backward of a run's iteration in one call (gdstep.run_lean):
        (outputs, per-sample losses, the loss, the gradients, their squared norms in the flat
        order, whether the `checked` outputs are finite). The same numbers as the phases one
        by one; nothing is frozen (the Session recomputes what a reader asks for)."""
        outputs = self.model.forward(self._params, x)
        sq = 0.0
        for i in checked:
            z = outputs[i].reshape(-1)
            sq += float(z.dot(z))
        forward_ok = math.isfinite(sq) or arrays.all_finite([outputs[i] for i in checked])
        per_sample, value = self.loss_fn.forward(outputs[-1], y)
        grads = self.backward_lean(x, outputs, y)
        flat = self._flat_grad[1]
        squares = []
        for span in self._layout.slices:
            g = flat[span]
            squares.append(float(g.dot(g)))
        return outputs, per_sample, value, grads, squares, forward_ok

    def backward_lean(self, x, outputs, y) -> dict[str, np.ndarray]:
        """The gradients of `backward` without δ (a run's lean backward): the same numbers,
        with fewer arrays made and kept."""
        grad_output = self.loss_fn.backward(outputs[-1], y)
        flat_grad, views = self._grad_buffer()
        grads = self.model.backward_lean(self._params, x, outputs, grad_output, self.trainable, out=views)
        flat_grad.setflags(write=False)
        self._flat_grad = (grads, flat_grad)
        return grads

    def _grad_buffer(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """A flat gradient and its per-parameter views to write the next gradients into: one
        of two kept, reused when nothing outside holds it or its views any longer (the
        records of the iteration before last, in a run), else a new one. Reused memory is
        warm in the cache; a new buffer and its views cost more than the step's smallest
        matrix product."""
        pool = self._grad_pool
        for i in range(len(pool)):
            flat, views = pool[i]
            # held here: the pool's tuple, `flat`, the call's argument, and one per view;
            # the dict: the tuple, `views`, the argument; a view: the dict, `v`, the argument
            if (sys.getrefcount(flat) == 3 + len(views) and sys.getrefcount(views) == 3
                    and all(sys.getrefcount(v) == 3 for v in views.values())):
                flat.setflags(write=True)
                return flat, views
        flat = np.empty(self._layout.size, dtype=self._flat.dtype)
        entry = (flat, self._layout.views(flat))
        pool.append(entry)
        if len(pool) > 2:
            del pool[0]
        return entry

    def grad_sq_norms(self, grads: Mapping[str, np.ndarray]) -> dict[str, float]:
        made_by_backward, flat = self._flat_grad
        if made_by_backward is grads and len(grads) == len(self._layout.names):   # every one a span of the flat
            out = {}
            for name, span in zip(self._layout.names, self._layout.slices):
                g = flat[span]
                out[name] = float(g.dot(g))
            return out
        out = {}
        for name, g in grads.items():
            flat = g.ravel()
            out[name] = float(flat.dot(flat))
        return out

    def update(self, grads: Mapping[str, np.ndarray]) -> dict[str, ParamUpdate]:
        """One optimizer step over the flat vectors; every parameter's record holds views."""
        layout = self._layout
        before = self.optimizer_state()
        flat, flat_state = self._step(grads)
        new, after = layout.views(flat), layout.state_views(flat_state)
        old = self._params
        self._flat, self._flat_state, self._state = flat, flat_state, after
        self._params = {**old, **new}
        return {name: ParamUpdate(name, old[name], grads[name], new[name], before[name], after[name])
                for name in grads}

    def update_lean(self, grads: Mapping[str, np.ndarray], check: bool = True, defer: bool = False) -> bool:
        """The same step with no record (a run's records on demand): the per-parameter
        views of the state are made when someone asks for them. Returns whether the new
        parameters and the optimizer's guarded state are finite (one test over the flat vectors)."""
        flat, flat_state = self._step(grads)
        self._flat, self._flat_state, self._state = flat, flat_state, None
        self._params = {**self._params, **self._layout.views(flat)}
        return self.updated_finite() if check else True

    update_test_reads = True        # an update's test reads the flat vectors: gdstep.run_ahead may test once for several

    def updated_finite(self, grads: Mapping[str, np.ndarray] | None = None) -> bool:
        """Whether the parameters and the optimizer's guarded state are finite now: the test
        `update_lean` makes after a step (one test over the flat vectors)."""
        guarded = getattr(self.optimizer, "guarded_state", None)
        return arrays.all_finite_paired([self._flat, *(v for k, v in self._flat_state.items()
                                                       if isinstance(v, np.ndarray) and (guarded is None or k in guarded))])

    def update_lean_norms(self, grads: Mapping[str, np.ndarray], check: bool = True,
                          defer: bool = False) -> tuple[bool, list[float]]:
        """`update_lean`, and the update's [‖ΔW‖² of each parameter…, ‖W_old‖² of each…] in
        the layout's order (`update_norms.after`'s values, bit for bit: ΔW = W_new − W_old
        over the flat vectors is the same elementwise subtraction, and each dot product reads
        the same numbers). Whether the new parameters are finite comes with them: ΔW and
        W_old finite make W_new finite, so only an overflowing sum takes the exact test."""
        old = self._flat
        flat, flat_state = self._step(grads)
        self._flat, self._flat_state, self._state = flat, flat_state, None
        self._params = {**self._params, **self._layout.views(flat)}
        delta = np.subtract(flat, old)
        deltas, weights = [], []
        for span in self._layout.slices:
            d, w = delta[span], old[span]
            deltas.append(float(d.dot(d)))
            weights.append(float(w.dot(w)))
        sq = deltas + weights
        if not check:
            return True, sq
        if not math.isfinite(sum(sq)) and not bool(np.isfinite(flat).all()):
            return False, sq
        guarded = getattr(self.optimizer, "guarded_state", None)
        return arrays.all_finite([v for k, v in flat_state.items()
                                  if isinstance(v, np.ndarray) and (guarded is None or k in guarded)]), sq

    def _step(self, grads: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
        if grads.keys() != self.trainable:
            raise ValueError(f"update needs a gradient for every trainable parameter, got {sorted(grads)}")
        made_by_backward, flat_grad = self._flat_grad
        if made_by_backward is not grads:
            flat_grad = self._layout.pack(grads)
        flat, flat_state = self.optimizer.update(self._flat, flat_grad, self._flat_state)
        _frozen(flat)
        for value in flat_state.values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
        return flat, flat_state

    # -- state ------------------------------------------------------------------------------

    def params(self) -> Mapping[str, np.ndarray]:
        return self._params

    def optimizer_state(self) -> Mapping[str, Mapping[str, Any]]:
        if self._state is None:
            self._state = self._layout.state_views(self._flat_state)
        return self._state

    def set_optimizer(self, optimizer, fresh_state: bool = True) -> None:
        self.optimizer = optimizer
        if fresh_state:
            self._flat_state, self._state = self._init_state(optimizer)

    def capture(self) -> tuple:
        return self._params, self._state, self.optimizer, self._flat, self._flat_state

    def restore(self, checkpoint: tuple) -> None:
        self._params, self._state, self.optimizer, self._flat, self._flat_state = checkpoint

    def checkpoint_nbytes(self, checkpoint: tuple) -> int:
        params, _, optimizer, _, flat_state = checkpoint
        key = (type(optimizer), tuple((k, v is None) for k, v in flat_state.items()))  # sizes follow from these
        if getattr(self, "_nbytes_key", None) == key:
            return self._nbytes_value
        total = sum(p.nbytes for p in params.values())
        total += sum(v.nbytes for v in flat_state.values() if isinstance(v, np.ndarray))
        self._nbytes_key, self._nbytes_value = key, total
        return total

    # -- side computations (they change nothing) --------------------------------------------

    def loss_value(self, x, y, overrides: Mapping[str, tuple[tuple[int, ...], float]] | None = None) -> float:
        params = dict(self._params)
        for name, (index, value) in (overrides or {}).items():
            p = params[name].copy()
            p[index] = value
            params[name] = p
        with np.errstate(all="ignore"):
            outputs = self.model.forward(params, x)
            return self.loss_fn.forward(outputs[-1], y)[1]

    def loss_at(self, x, y, params: Mapping[str, np.ndarray]) -> float:
        """The loss on (x, y) with these parameter values (the others as they are)."""
        dt = self._flat.dtype
        values = {**self._params, **{name: np.asarray(v, dtype=dt) for name, v in params.items()}}
        with np.errstate(all="ignore"):
            return self.loss_fn.forward(self.model.forward(values, x)[-1], y)[1]

    def gradients(self, x, y) -> dict[str, np.ndarray]:
        with np.errstate(all="ignore"):
            outputs = self.model.forward(self._params, x)
            grad_output = self.loss_fn.backward(outputs[-1], y)
            _, grads = self.model.backward(self._params, x, outputs, grad_output, frozenset(self.param_shapes))
        return grads

    def evaluate(self) -> tuple[float, float | None]:
        """Loss and (for classifiers) accuracy on the whole dataset."""
        with np.errstate(all="ignore"):
            out = self.model.forward(self._params, self.x)[-1]
            value = self.loss_fn.forward(out, self.y)[1]
        return value, self.loss_fn.accuracy(out, self.y)

    def predict(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return self.model.forward(self._params, np.asarray(x, dtype=self.x.dtype))[-1]
