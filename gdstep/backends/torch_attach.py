"""The backend of attach mode: the user's own model and optimizer, and as data the batches
their training loop hands over.

It keeps the batches of the last few iterations — the whole call (the input, any further
forward arguments such as an RNN's hidden state, keyword arguments) and the target — so a
rewind recomputes them exactly; the next batch is the loop's to give. A rewind that needs a
batch it no longer has (or one given without targets) is refused before anything moves. In
watch mode (the loop calls `backward()` and `step()` itself) the phases are not computed but
observed: hooks record the loop's own forward, the gradients it made, the gradients its
`optimizer.step()` used (after clipping or unscaling), and the step, and the Session receives
those values as the phases' results."""

from __future__ import annotations

import warnings

from typing import Any, Mapping, Sequence

from gdstep.backends.attach_autocast import autocast_state, entered
from gdstep.backends.attach_batches import NEXT_BATCH, Kept, KeptBatches, _versions
from gdstep.backends.attach_buffers import FollowedBuffers
from gdstep.backends.attach_modes import entered_modes, modes_of
from gdstep.backends.attach_replay import compiled_anything
from gdstep.backends.attach_rows import AttachRows
from gdstep.backends.attach_shared import SharedParams
from gdstep.backends.attach_watch import WatchObserver
from gdstep.backends.detachable import detachable
from gdstep.backends.torch_layers import first_tensor
from gdstep.backends.torch_user import UserModuleBackend
from gdstep.errors import GdstepError
from gdstep.records import ParamUpdate


class AttachBackend(KeptBatches, WatchObserver, AttachRows, FollowedBuffers, SharedParams, UserModuleBackend):
    def __init__(self, model, loss, optimizer, keep: int = 16, **kw):
        from gdstep import heap

        # gdstep's copies and records change the order in which the loop's tensors are
        # freed and allocated again; with glibc's default thresholds that turns freed
        # activations into fresh pages faulted in every step (600-2,400 a step on the
        # benchmark CNN, where the bare loop faults none): freed memory is kept for reuse
        heap.keep_freed_memory()
        self._watching = False
        self._deltas: list = []
        self._accumulated: dict = {}      # id(p) -> (p.grad, its version) as backward() left it (drop_layers keeps it)
        self.last_call: tuple | None = None       # (args, kwargs) of the model's latest forward by the loop
        self._forwards = self._eval_forwards = 0  # the loop's forwards since its last optimizer step (in eval mode)
        self._own = False                         # gdstep is running the model itself
        super().__init__(model, loss, optimizer, None, None, track_rng=True, **kw)
        self._sequential = False          # record through hooks: the loop's own forward too
        self.remove_hooks()
        self._install_hooks()
        self._capture = True              # every forward of the model, not only ours
        self._reuse_copies = False        # the loop may change parameters between steps,
        self._trust_versions = False      # even through .data, which counts no version
        self._batches: dict[int, Kept] = {}
        self._keep = max(1, keep)
        self._observed: dict[str, Any] = {}
        self._driving = False
        self._used_at: dict[int, dict] = {}       # step -> the gradients the loop's step used, where it changed them
        self._no_step: set[int] = set()           # steps where the loop did not step the optimizer
        self._turn_at: dict[int, int] = {}        # step -> which of several optimizers stepped
        # step -> torch's RNG state where the iteration's forward started: the loop may draw
        # between iterations (noise, shuffling, augmentation), so a checkpoint's is not it
        self._rng_at: dict[int, Any] = {}
        self._rng_call = None
        self.call_buffers = None          # (the parameters' versions, the buffers) as the loop's iteration began
        self._autocast_at: dict[int, tuple] = {}   # step -> the loop's autocast states (attach_autocast)
        self._autocast_call = None                  # and at its latest forward
        self._all_modules = list(model.modules())
        self._modes_at: dict[int, tuple] = {}      # step -> every module's train/eval mode (attach_modes)
        self._modes_call = None
        self.watch_deltas = True          # watch mode records δ of each layer (not in lean iterations)
        self._loop_walk = None            # the chain of bounds of the loop's latest forward (gdstep.backends.forward_bound)
        self._loop_out = None             # the model's output in the loop's latest forward, as the loop got it
        self._loss_call = None            # (args, result) of the latest call of the user's loss module

    # -- hooks -----------------------------------------------------------------------------------

    def _install_hooks(self) -> None:
        import torch.nn as nn

        model = self.model
        # the modules the loop calls: the model, or each model of several (a GAN's, in a ModuleDict)
        self._tops = [model] if type(model).forward is not nn.Module.forward else list(model.children())
        self._row_hooks: dict[int, Any] = {}        # each row's but the last (hook_rows)
        self._rows_hooked = True
        for i, (_, module) in enumerate(self._rows):
            self._hooks.append(module.register_forward_hook(detachable(self._hook(i), self)))
            if i < len(self._rows) - 1:
                self._row_hooks[i] = self._hooks[-1]
        for top in self._tops:
            self._hooks.append(top.register_forward_pre_hook(detachable(self._input_hook, self), with_kwargs=True))
            self._hooks.append(top.register_state_dict_pre_hook(detachable(self._state_dict_hook)))
        for opt in getattr(self.torch_optimizer, "optimizers", [self.torch_optimizer]):
            if hasattr(opt, "register_state_dict_pre_hook"):      # a checkpoint of the optimizer's state
                self._hooks.append(opt.register_state_dict_pre_hook(detachable(self._state_dict_hook)))
        loss = getattr(self.loss_fn, "loss_fn", None)
        if isinstance(loss, nn.Module):       # which call made the loss watch() is given (attach_watch._recomputable)
            self._hooks.append(loss.register_forward_hook(detachable(self._loss_hook)))
        self._follow_buffers()
        if self.grads_noted_by_hooks:
            for _, p in self._train:
                if hasattr(p, "register_post_accumulate_grad_hook"):
                    self._hooks.append(p.register_post_accumulate_grad_hook(detachable(self._grad_hook)))

    def _loss_hook(self, module, args, result) -> None:
        self._loss_call = (args, result, self._autocast_of_loss())

    def _input_hook(self, module, args, kwargs):
        if self.loop_call_due and self._loops_own_call():     # the loop's own call, an evaluation too: its
            self.loop_goes_on()                                     # handler is done, a look back of its undone
        if self._evaluating():
            self.no_fast_path()
            return
        if self._own or not self._watching:       # recorded through the rows' hooks (watch mode decides itself)
            self.hook_rows(True)
        if self._capture:
            self._order = []                      # the layers this call runs, in call order
        if self._capture and not self._own:
            self.last_call = (args, kwargs)
            self._produced = {}
            self._count_forward(module)
            self._autocast_call = autocast_state(self._torch, self.device)
            self._modes_call = modes_of(self._all_modules)
            self._rng_call = self._rng_state()    # before the first watch() too: its iteration is recomputable
            if self._watching or self._session is None:
                self.loop_forward_begins(args)    # (before it: the rows' sizes, for the next forward's bounds)
            if self._session is None and self._buffers:
                self._note_call_buffers()

    def _note_call_buffers(self) -> None:
        """Before the first watch(): the buffers (BatchNorm's statistics) as the iteration's
        first forward found them, for the first checkpoint — copied again only once the
        parameters moved since (a step of the loop), not at the iteration's later forwards
        (gradient accumulation, a GAN's several)."""
        versions = tuple(p._version for _, p in self._train)
        if self.call_buffers is None or self.call_buffers[0] != versions:
            self.call_buffers = (versions, {n: b.detach().clone() for n, b in self._buffers})

    def _evaluating(self) -> bool:
        """Whether the model runs for the loop without gradients (an evaluation between its
        iterations): no part of an iteration, recorded by no hook."""
        return self._capture and not self._own and not self._torch.is_grad_enabled()

    def _hook(self, i: int):
        last = len(self._rows) - 1

        def record(module, args, output):
            if self._direct or (self.rows_skipped and i != last and not self._own):   # see _run_model, WatchObserver
                return
            if not self._capture or self._evaluating():
                return
            out = first_tensor(output)
            tests = None
            if not self._own:
                if self._loop_walk is not None and not self.rows_skipped:
                    self._loop_walk.link(i, module, args, out)
                tests = self._loop_tests
            if tests is None:
                self._row_ran(i, module, args, out, last)
            elif tests.keep(self, i, out, i == last):      # tested as made, let go unless not finite
                self._slots[i] = out
            self._order.append(i)
            if (self.deltas_wanted() and not self._own and out is not None and out.requires_grad):
                out.register_hook(lambda g, i=i, n=self._order.count(i): self.keep_delta(i, n, g))
            if (i == len(self._rows) - 1 or module in self._tops) and not self._own:
                self._slots[-1] = self._loop_out = out
                self._note_loop_output(out, output)
                self._keep_output(output)
        return record

    def forward_lean(self, x, checked: Sequence[int], defer: bool = False):
        """ModuleBackend's, where gdstep drives the forward. The loop's own forward (watch
        mode): (its outputs, True) where it was tested as it ran (LoopTests) and is finite,
        or where the chain of bounds its rows ran through proves every checked output
        finite; else None, and the caller reads the outputs held."""
        if "forward" not in self._observed:
            return super().forward_lean(x, checked, defer)
        tested = self.loop_forward_tested()
        if tested is not None:           # as it ran, its outputs let go (from a non-finite one on, kept: the
            self._loop_walk = None       # caller reads them and names the first, as with every output kept)
            return (self.forward(x), True) if tested else None
        walk, self._loop_walk = self._loop_walk, None
        if walk is None or defer:
            return None
        walk.fb.measured = True
        outputs = self._observed["forward"]
        if not walk.rows or not checked:
            return None
        if not all(walk.proven(i) or outputs[i] is None for i in checked):
            return None
        return self.forward(x), True

    def trial(self, x, args: tuple = (), kwargs: Mapping | None = None) -> list[bool]:
        """Which rows produce an output: the model once on the batch, no grad, eval mode, RNG
        as it was, and any parameter or buffer the forward wrote in place (an Embedding's
        max_norm renormalises its rows) written back; its warnings (a checkpoint's "none of
        the inputs require grad") unshown. An nn.Sequential calls every child: no need to
        run it."""
        torch = self._torch
        if type(self.model) is torch.nn.Sequential:
            return [True] * len(self._rows)
        called = [False] * len(self._rows)
        hooks = [m.register_forward_hook(lambda m, a, o, i=i: called.__setitem__(i, True))
                 for i, (_, m) in enumerate(self._rows)]
        before = [(t, t._version, t.detach().clone()) for _, t in self._named + self._buffers
                  if not t.is_inference()]       # (an inference tensor has no version, and is never written)
        try:
            with torch.no_grad(), self._eval(), self._aside(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._own = True
                self.model(*((x,) if x is not None else ()), *args, **(kwargs or {}))
        except Exception:           # the real forward will say what is wrong
            called = [True] * len(self._rows)
        finally:
            self._own = False
            for h in hooks:
                h.remove()
            with torch.no_grad():
                for t, version, value in before:
                    if t._version != version:
                        t.copy_(value)
        self._slots = [None] * len(self._rows)
        return called

    def loop_groups(self) -> list[dict]:
        """Each param group's hyperparameters as the loop has them now."""
        from gdstep.backends.torch_optim import group_hyperparameters
        return [group_hyperparameters(g) for g in self.torch_optimizer.param_groups]

    def _replay_hint(self, step: int) -> str:
        known = self.why_not_recomputed(step)
        if known is not None:
            return known
        compiled = ("the loop runs a torch.compile'd model, whose kernels round otherwise than the eager forward "
                    "gdstep recomputes, or " if compiled_anything() else "")
        return (f"{self.shared_hint()}{compiled}the loop draws random numbers gdstep does not replay (numpy, random, a torch.Generator), "
                "runs a non-deterministic op, its loss is not loss_fn(output, y) (or not in the forward's autocast), its forward writes a parameter "
                "in place (an Embedding's max_norm), or it changed a tensor through .data (torch counts no version "
                "for that, so gdstep cannot keep the change)")

    # -- the phases: observed (watch mode) or computed from the kept batch ----------------------

    def forward(self, x):
        observed = self._observed.pop("forward", None)
        if observed is not None:
            if self._rng_call is not None:
                self._rng_at[self._updates] = self._rng_call
                self._rng_call = None             # each forward's own: a later one without it is not recomputable
            self.lr_history[self._updates] = tuple(_lr(g) for g in self.torch_optimizer.param_groups)
            self._batch_id = id(self._batches.get(self._updates))
            self._note_forward()
            return observed
        kept = self._batches.get(self._updates)
        if kept is None or (self._batches and self._updates > max(self._batches)):
            raise GdstepError(NEXT_BATCH)
        if _versions(kept.x, kept.args, kept.kwargs, kept.y) != kept.versions:
            self._announce(self._updates, f"iteration {self._updates + 1}: its batch was changed in place since the "
                           "loop used it (a reused buffer, a normalisation after the forward, or a loss that changes its "
                           "input in place): gdstep "
                           "recomputes it with the values it holds now")
        self._batch_id = id(kept)
        rng = self._rng_at.get(self._updates)
        if rng is None:
            self._rng_at[self._updates] = self._rng_state()
        else:
            self._set_rng(rng)
        self._own = True
        try:
            with self._loop_autocast(), self._loop_modes():
                outputs = super().forward(kept.shown_x)
            self.note_repeated_rows()
            return outputs
        finally:
            self._own = False

    def _loop_modes(self):
        """The modules' train and eval modes as the loop had them for the iteration at hand."""
        return entered_modes(self._all_modules, self._modes_at.get(self._updates))

    def _loop_autocast(self, backward: bool = False, loss: bool = False):
        """Autocast as the loop had it for the iteration at hand: for its forward, its loss (the forward's unless its own was seen), or its backward."""
        states = self._autocast_at.get(self._updates)
        return entered(self._torch, None if states is None else states[2 if loss and len(states) > 2 else backward])

    def _call(self, params, x):
        with self._loop_autocast():        # (its callers choose the modes: `evaluate` runs in eval mode)
            return super()._call(params, x)

    def loss_lean(self, outputs, y, flags, per_sample: bool = True):
        self._stay()
        with self._loop_autocast(loss=True):
            return super().loss_lean(outputs, y, flags, per_sample)

    def loss(self, outputs, y, per_sample: bool = True):
        self._stay()
        observed = self._observed.pop("loss", None)
        if observed is not None:
            self._check_replay("loss", observed[1])
            return observed
        kept = self._batches.get(self._updates)
        if kept is not None and kept.y is None and self._watching:
            raise GdstepError("watch(loss) was given no targets, so the loss cannot be recomputed: "
                              "pass dbg.watch(loss, y); a loss without targets: pass a placeholder, dbg.watch(loss, ()), which loss_fn ignores")
        with self._loop_autocast(loss=True):
            return super().loss(outputs, y, per_sample)

    def backward(self, x, outputs, y):
        self._stay()
        observed = self._observed.pop("backward", None)
        if observed is not None:
            return observed
        with self._loop_autocast(backward=True), self._loop_modes():     # (a checkpointed block runs forward again)
            return super().backward(x, outputs, y)

    def _used_grads(self, grads):
        used = self._used_at.get(self._updates)
        return used if used is not None else super()._used_grads(grads)

    def update(self, grads: Mapping[str, Any]) -> dict[str, ParamUpdate]:
        self._stay()
        observed = self._observed.pop("update", None)
        if observed is not None:
            self._note_groups()
            names, old, new, before, after, used = observed
            self._updates += 1
            used = used or grads
            return {n: ParamUpdate(n, old[n], used.get(n, grads.get(n)), new[n], before[n], after[n])
                    for n in names if n in grads}
        if self._updates in self._no_step:
            return self._no_update(grads)
        if hasattr(self.torch_optimizer, "optimizers"):
            self.torch_optimizer.turn = self._turn_at.get(self._updates)
        self._driving = True
        try:
            return super().update(grads)
        finally:
            self._driving = False

    def _no_update(self, grads) -> dict[str, ParamUpdate]:
        names = [n for n in grads]
        old, state = self._param_copies(names), self._state_copies()
        self._updates += 1
        self._fresh = None
        return {n: ParamUpdate(n, old[n], grads[n], old[n], state[n], state[n]) for n in names}

    def backward_lean(self, x, outputs, y) -> dict[str, Any]:
        self._stay()
        observed = self._observed.pop("backward", None)
        if observed is not None:
            return observed[2]
        with self._loop_autocast(backward=True), self._loop_modes():
            return super().backward_lean(x, outputs, y)

    def update_lean(self, grads: Mapping[str, Any], check: bool = True, defer: bool = False):
        self._stay()
        observed = self._observed.get("update")
        if observed is not None and observed[1] is None:      # the loop's own step, observed lean
            del self._observed["update"]
            self._note_groups()
            return self._stepped(grads, check, defer)
        if self._updates in self._no_step:
            self._updates += 1
            self._fresh = None
            return True
        self._driving = True
        try:
            return super().update_lean(grads, check, defer)
        finally:
            self._driving = False

    @property
    def keep(self) -> int:
        """Iterations whose batches are kept: a run checkpoints at least this often."""
        return self._keep

    def capture(self):
        """A checkpoint; copies made by the loop's observed step serve once, right after it."""
        checkpoint = super().capture()
        self._fresh = None
        return checkpoint

    @property
    def driving(self) -> bool:
        return self._driving

    def restore(self, checkpoint, check: bool = True) -> None:
        """Refused, before anything changes, when an iteration to recompute from there has
        no kept batch (or no targets): the session is never left half rewound."""
        if check:
            self.check_recompute(checkpoint, self._updates)
        self._observed.clear()
        super().restore(checkpoint)
        self.recomputed_from = checkpoint.updates     # the iterations from here on are recomputed


def _lr(group) -> float:
    lr = group.get("lr")
    return float(lr.item() if hasattr(lr, "item") else lr) if lr is not None else float("nan")
