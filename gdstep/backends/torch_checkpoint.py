"""Copies of a torch model's parameters and optimizer state, made once and shared: the copy
of a parameter after an update is that update's record ("new"), the next update's "before"
and the checkpoint the Session keeps for rewinding. After a step everything the step may have
changed is copied, in one call; elsewhere a parameter's copy is reused while the live
tensor's version counter says it has not changed since it was made.

Checkpoints restore exactly: parameters, optimizer state (its tensors copied back, torch's
0-d `step` rebuilt with its dtype), hyperparameters, buffers and, for modules that draw
random numbers, the RNG state.
"""

from __future__ import annotations

import copy
from operator import attrgetter, is_
from typing import Any, Mapping, NamedTuple

import numpy as np

from gdstep.backends.torch_optim import apply, group_hyperparameters, is_opaque, torch_classes, write_group


def clones(torch, tensors: list) -> list:
    """Copies of the tensors: one fused call where this torch has it (2.13 has, 2.11 not)."""
    fused = getattr(torch, "_foreach_clone", None)
    if fused is not None and len(tensors) > 1:
        return fused(tensors)
    return [t.clone() for t in tensors]


class Initial(dict):
    """An optimizer state torch has not created yet (before the first step), shown as the
    numpy engine's `init` shows it: zeros, step 0, no momentum buffer."""


class TorchCheckpoint(NamedTuple):
    params: Mapping[str, Any]                 # name -> copy of every parameter
    state: Mapping[str, Mapping[str, Any]]    # name -> optimizer state as records show it
    scalar_dtypes: Mapping[tuple, Any]        # (name, key) -> dtype of a 0-d state tensor shown as a number
    config: Any                               # gdstep's optimizer config
    optimizer: Any                            # the torch optimizer object that state belongs to
    groups: tuple | None                      # each param group's hyperparameters
    buffers: Mapping[str, Any] | None         # BatchNorm statistics and other buffers
    rng: tuple | None                         # torch's RNG states, for a module that draws (dropout)
    updates: int                              # updates done by this backend
    extra: Any = None                         # a backend's own (a GradScaler's, a scheduler's state)


class CheckpointMixin:
    """The copies, capture and restore of ModuleBackend (which provides the model's
    parameters, buffers and optimizer)."""

    _restores = 0              # how many checkpoints were restored (they make new state tensors)
    _keep_as_is: frozenset = frozenset()   # ids of live tensors a restore leaves as they are (attach_shared)
    start_buffers = None       # the buffers a capture holds instead of the live ones (watch mode's first: as
                               # the loop's forward found them, before it moved BatchNorm's statistics)

    def _copies(self, items: list[tuple[Any, Any]]) -> list[Any]:
        """Copies of (key, tensor) pairs, reusing one made since the tensor last changed."""
        cache = self._cache
        out: list = [None] * len(items)
        misses = []
        trust = self._trust_versions
        for i, (key, t) in enumerate(items):
            hit = cache.get(key)
            if trust and hit is not None and hit[0] is t and hit[1] == t._version:
                out[i] = hit[2]
            else:
                misses.append(i)
        if misses:
            sources = [items[i][1].detach() for i in misses]
            made = clones(self._torch, sources)
            for i, c in zip(misses, made):
                key, t = items[i]
                cache[key] = (t, t._version, c, False)
                out[i] = c
        return out

    def _param_copies(self, names) -> dict[str, Any]:
        by_name = self._by_name
        return dict(zip(names, self._copies([(name, by_name[name]) for name in names])))

    def _scalar(self, key: tuple, t) -> float | int:
        """A live 0-d state tensor as a number, read again only when its version changed."""
        hit = self._cache.get(key)
        if hit is not None and hit[0] is t and hit[1] == t._version and self._trust_versions:
            return hit[2]
        value = self._number(key[0], key[1], t)
        self._cache[key] = (t, t._version, value, True)
        return value

    def _state_copies(self, also: list | None = None):
        """The optimizer state as records show it: copies of its tensors, 0-d CPU tensors
        (torch's `step`) as numbers. With `also` (tensors), their copies are made in the same
        call and returned beside it. Everything is copied: after a step nearly all of it
        changed, and asking each tensor whether it did costs more than the copy."""
        torch = self._torch
        states = self.torch_optimizer.state
        result: dict[str, dict[str, Any]] = {}
        tensors = list(also) if also else []
        extra = len(tensors)
        slots = []
        for name, p in self._train:
            st = states.get(p)
            if not st:
                result[name] = self._initial_state(name, p)
                continue
            d: dict[str, Any] = {}
            for k, v in st.items():
                if not isinstance(v, torch.Tensor):
                    d[k] = v if isinstance(v, (int, float, bool, str, type(None))) else copy.deepcopy(v)
                elif v.ndim == 0 and v.is_cpu:
                    d[k] = self._number(name, k, v)
                else:
                    d[k] = None
                    tensors.append(v)
                    slots.append((d, k))
            result[name] = d
        made = self._clones(tensors) if tensors else []
        for (d, k), c in zip(slots, made[extra:]):
            d[k] = c
        return (result, made[:extra]) if also is not None else result

    def _clones(self, tensors: list) -> list:
        """Copies of `tensors`, made in one call. (One flat buffer with views was measured:
        making the views costs more than it saves, and torch's allocator page-faults on a
        large block allocated every step and kept for rewinding.)"""
        with self._torch.no_grad():
            return clones(self._torch, tensors)

    def _number(self, name: str, key: str, t) -> float | int:
        """A 0-d CPU tensor as a number (an integer `step` as an int); its dtype is kept
        for restoring it."""
        value = t.item()
        if key == "step" and float(value).is_integer():
            value = int(value)
        self._scalar_dtypes[(name, key)] = t.dtype
        return value

    def _initial_state(self, name: str, p) -> Initial:
        config = self.optimizer
        key = (name, id(config))
        hit = self._initial.get(key)
        if hit is not None and hit[0] is config:
            return hit[1]
        state = Initial()
        if not is_opaque(config) and hasattr(config, "init"):
            torch = self._torch
            # a state array that init fills with one value (zeros, Adagrad's initial
            # accumulator) is made on the device at once: making it in numpy first and
            # converting it cost ~30 ms on a 2M-parameter model, inside the loop's first step
            probe = config.init(np.zeros(2))
            constant = all(not isinstance(v, np.ndarray) or v[0] == v[1] for v in probe.values())
            values = probe if constant else config.init(np.zeros(tuple(p.shape)))
            for k, v in values.items():
                if isinstance(v, np.ndarray):
                    v = (torch.full(tuple(p.shape), float(v[0]), dtype=p.dtype, device=p.device) if constant
                         else torch.as_tensor(v, dtype=p.dtype, device=p.device))
                state[k] = v
        self._initial[key] = (config, state)
        return state

    def capture(self) -> TorchCheckpoint:
        opt = self.torch_optimizer
        fresh = self._fresh
        if fresh is not None and len(fresh[0]) == len(self._named):
            params, state = fresh
        else:
            params = dict(zip(self.param_shapes, self._copies(self._named)))
            state = self._state_copies()
        # Buffers are always copied: BatchNorm's kernel updates its statistics in place
        # without counting a new version, so a copy could not tell it is stale.
        buffers = ({n: b.detach().clone() for n, b in self._buffers} if self.start_buffers is None
                   else dict(self.start_buffers)) if self._buffers else None
        # every group's hyperparameters: a scheduler's lr, each group's own values
        groups = tuple(group_hyperparameters(g) for g in opt.param_groups)
        rng = self._rng_state() if self._track_rng else None
        return TorchCheckpoint(params, state, self._scalar_dtypes, self.optimizer, opt, groups, buffers, rng,
                               self._updates, self._capture_extra())

    def _capture_extra(self) -> Any:
        return None

    def _restore_extra(self, extra: Any) -> None:
        pass

    def restore(self, checkpoint: TorchCheckpoint) -> None:
        torch = self._torch
        cache = self._cache
        self._restores += 1
        self._graph = self._loss_tensor = self._fresh = None
        self.torch_optimizer, self.optimizer = checkpoint.optimizer, checkpoint.config
        self._known_step = type(self.torch_optimizer) in set(torch_classes().values())
        if checkpoint.groups is not None and len(checkpoint.groups) == len(self.torch_optimizer.param_groups):
            for group, values in zip(self.torch_optimizer.param_groups, checkpoint.groups):
                write_group(group, values)
        else:
            apply(checkpoint.config, self.torch_optimizer)
        with torch.no_grad():
            for name, p in self._named:
                self._write(name, p, checkpoint.params[name])
            if checkpoint.buffers is not None:
                for name, b in self._buffers:
                    if id(b) not in self._keep_as_is:
                        write_buffer(torch, b, checkpoint.buffers[name])
        states = self.torch_optimizer.state
        # the loop's own state dicts are written into, not replaced; one that a restore to before
        # its parameter's first step takes away is kept aside, for the restore that brings the
        # state back (the recomputation in between makes the optimizer new ones)
        held = dict(self._train_states())
        aside = self.__dict__.setdefault("_states_aside", {})
        states.clear()
        with torch.no_grad():
            for name, p in self._train:
                saved = checkpoint.state.get(name)
                if saved is None or isinstance(saved, Initial):
                    if name in held:
                        aside.setdefault(name, held[name])
                    continue
                old = aside.pop(name, None) or held.get(name)
                live = old if old is not None and old.keys() == saved.keys() else {}
                for k, v in saved.items():
                    live[k] = self._state_value(name, k, v, live.get(k), checkpoint.scalar_dtypes)
                states[p] = live
        if checkpoint.rng is not None:
            self._set_rng(checkpoint.rng)
        self._restore_extra(checkpoint.extra)
        self._updates = checkpoint.updates

    def _state_value(self, name: str, k: str, v: Any, live: Any, scalar_dtypes: Mapping) -> Any:
        """A saved state value (of parameter `name`, key `k`) as the live state holds it again:
        written into the loop's own tensor `live` where it has the same shape, dtype and
        device (whoever holds that tensor sees the state the optimizer uses: a logger, a
        captured CUDA graph, a compiled step's guards), else a new one."""
        torch = self._torch
        if isinstance(v, torch.Tensor):
            if _fits(live, v):
                return live.copy_(v)
            return v.clone()
        if (name, k) in scalar_dtypes and isinstance(v, (int, float)) and not isinstance(v, bool):
            dtype = scalar_dtypes[(name, k)]         # torch's 0-d `step`, kept as a number
            t = live.fill_(v) if _fits(live, torch.empty((), dtype=dtype)) else torch.tensor(v, dtype=dtype)
            self._cache[(name, k)] = (t, t._version, v, True)
            return t
        return copy.deepcopy(v)

    def param_versions(self) -> tuple:
        """Where the loop's tensors stand: each parameter's version counter, and each optimizer
        state tensor with its own. An in-place change (by the optimizer or by the loop) moves
        a version; `load_state_dict` makes new state tensors; a change through `.data` moves
        nothing. gdstep's own restores make new state tensors too, so they are counted. Where
        gdstep runs the forward (step mode), the buffers too: between its calls only the loop
        moves them (`load_state_dict`, BatchNorm's `reset_running_stats()`); where the loop
        runs it (watch mode), its forward does."""
        torch = self._torch
        keys, tensors = [], []
        for name, state in self._train_states():
            for k, v in state.items():
                if isinstance(v, torch.Tensor):
                    keys.append((name, k))
                    tensors.append(v)
        owned = (keys, tensors, tuple(map(_VERSION, tensors)))      # ((name, key)s, state tensors, their versions)
        buffers = (self._buffer_swaps,) + (() if getattr(self, "_watching", True)
                                           else tuple(map(_version_of, (b for _, b in self._buffers))))
        return tuple(map(_VERSION, self._param_list())), owned, self._restores, buffers

    def _param_list(self) -> list:
        """The parameters of `_named`, in order (kept while `_named` is the same list)."""
        kept = getattr(self, "_params_listed", None)
        if kept is None or kept[0] is not self._named:
            kept = self._params_listed = (self._named, [p for _, p in self._named])
        return kept[1]

    def _train_states(self) -> list[tuple[str, Mapping]]:
        """(name, state dict) of each trained parameter the optimizer holds state for, in the
        order of its state (read without hashing a tensor: torch's `Tensor.__hash__` is Python)."""
        kept = getattr(self, "_train_names", None)
        if kept is None or kept[0] is not self._train:
            kept = self._train_names = (self._train, {id(p): name for name, p in self._train})
        names = kept[1]
        return [(names[id(p)], state) for p, state in self.torch_optimizer.state.items() if id(p) in names]

    def changed_params(self, versions: tuple) -> dict[Any, Any]:
        """Copies of what moved since `versions`: parameters and (step mode) buffers by name,
        optimizer state tensors by (parameter name, state key). Where gdstep restored a checkpoint since, its state
        tensors are new without the loop having touched them: only parameters are compared."""
        params, owned, restores, buffers = versions
        if restores == self._restores and self._unmoved(params, owned) and self._buffers_unmoved(buffers):
            return {}                                                         # the usual case, in one pass
        out: dict[Any, Any] = {name: p.detach().clone() for (name, p), v in zip(self._named, params) if p._version != v}
        if not self._buffers_unmoved(buffers):     # all of them: BatchNorm's kernel writes its running mean and
            out.update({name: b.detach().clone() for name, b in self._buffers})    # variance without a version
        if restores != self._restores:
            return out
        torch, states = self._torch, self.torch_optimizer.state
        keys, tensors, versions = owned
        was = dict(zip(keys, zip(tensors, versions)))
        for name, p in self._train:
            for k, v in states.get(p, {}).items():
                seen = was.get((name, k))
                if isinstance(v, torch.Tensor) and (seen is None or seen[0] is not v or seen[1] != v._version):
                    out[(name, k)] = v.detach().clone()
        return out

    def _unmoved(self, params: tuple, owned: tuple) -> bool:
        """Whether every parameter and optimizer state tensor is where `param_versions` saw it:
        the same tensors, in the same order, with the same versions."""
        if tuple(map(_VERSION, self._param_list())) != params:
            return False
        torch = self._torch
        now = [v for _, state in self._train_states() for v in state.values() if isinstance(v, torch.Tensor)]
        _, tensors, versions = owned
        return len(now) == len(tensors) and all(map(is_, now, tensors)) and tuple(map(_VERSION, now)) == versions

    def _buffers_unmoved(self, buffers: tuple) -> bool:
        """Whether no buffer was replaced (by assignment: attach mode's registration hook counts
        it) and, where `param_versions` noted them, each is at its version."""
        return buffers[0] == self._buffer_swaps and all(
            _version_of(b) == v for (_, b), v in zip(self._buffers, buffers[1:]))

    def load_params(self, values: Mapping[Any, Any]) -> None:
        """Write these values into the live parameters, buffers and optimizer state (the
        loop's own change, replayed; keys as `changed_params` gives them)."""
        states = self.torch_optimizer.state
        with self._torch.no_grad():
            for key, value in values.items():
                if not isinstance(key, tuple):
                    live = self._by_name.get(key)
                    if live is None:                   # a buffer (BatchNorm's statistics)
                        write_buffer(self._torch, dict(self._buffers)[key], value)
                    else:
                        self._write(key, live, value)
                    continue
                name, k = key
                state = states.setdefault(self._by_name[name], {})
                live = state.get(k)
                if isinstance(live, self._torch.Tensor) and live.shape == value.shape and live.dtype == value.dtype:
                    live.copy_(value)
                else:
                    state[k] = value.clone()

    def _write(self, key: str, live, saved) -> None:
        """Copy a saved value into a live tensor, unless it is known to hold it already."""
        hit = self._cache.get(key)
        if id(live) in self._keep_as_is:        # (attach mode: a shared tensor no one here moved)
            return
        if self._trust_versions and hit is not None and hit[0] is live and hit[1] == live._version and hit[2] is saved:
            return
        live.copy_(saved)
        self._cache[key] = (live, live._version, saved, False)

    def checkpoint_nbytes(self, checkpoint: TorchCheckpoint) -> int:
        torch = self._torch
        total = sum(t.nbytes for t in checkpoint.params.values())
        for state in checkpoint.state.values():
            total += sum(v.nbytes for v in state.values() if isinstance(v, torch.Tensor))
        if checkpoint.buffers:
            total += sum(t.nbytes for t in checkpoint.buffers.values())
        return total

    # -- randomness ------------------------------------------------------------------------------

    def _rng_state(self) -> tuple:
        torch = self._torch
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() and torch.cuda.is_available() else None
        return torch.get_rng_state(), cuda

    def _set_rng(self, state: tuple) -> None:
        torch = self._torch
        cpu, cuda = state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def write_buffer(torch, buffer, value) -> None:
    """Copy a saved value into a live buffer: an inference tensor (a buffer made under
    `torch.inference_mode()`) in inference mode, the only place torch lets it be written."""
    if buffer.is_inference():
        with torch.inference_mode():
            buffer.copy_(value)
    else:
        buffer.copy_(value)


def _fits(live, saved) -> bool:
    """Whether a live state tensor can take a saved value in place: a plain tensor of its
    shape, dtype and device (not an inference tensor, which no write outside inference mode
    may change)."""
    return (type(live) is type(saved) and live.shape == saved.shape and live.dtype == saved.dtype
            and live.device == saved.device and not live.is_inference() and live.layout == saved.layout)


_VERSION = attrgetter("_version")        # a tensor's version counter (C-level: no Python call a tensor)


def _version_of(t):
    """A tensor's version counter; None for an inference tensor, which has none (a buffer
    made under `torch.inference_mode()`: not compared)."""
    return None if t.is_inference() else t._version
