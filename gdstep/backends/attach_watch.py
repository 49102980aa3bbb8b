"""Watch mode: the loop runs forward, backward and `optimizer.step()` itself; gdstep observes.

`dbg.watch(loss, y)` queues the forward the hooks saw, the loop's loss and the gradients it
made (unscaled where an attached GradScaler has not unscaled them yet); an optimizer step
pre-hook reads the gradients `step()` really uses (after the loop's clipping or unscaling)
and copies the parameters and state before; the post-hook copies them after. The Session
receives these as the phases' results. When the debugger opens in the middle, everything the
loop holds is put back afterwards (gdstep.backends.attach_turns), the scaler's stage too.
Mixed into AttachBackend.
"""

from __future__ import annotations

from gdstep.backends.attach_recompute import Recomputable


def _value(loss) -> float:
    """The loss as a number (a one-element tensor; any other raises torch's own error)."""
    try:
        return loss.item()
    except RuntimeError:
        return loss.detach().reshape(()).item()


def _moved(seen: tuple | None, grad) -> bool:
    """Whether a gradient is not the tensor watch() saw, at the version it saw (compared by
    identity: == on tensors compares their elements)."""
    return seen is None or seen[0] is not grad or seen[1] != grad._version


class LoopTests:
    """The loop's forward, tested as it runs (watch mode, on the CPU, where the iteration
    before was recomputable so this one most likely is too): each checked row's output is
    proved finite by the chain of bounds or normed as it is made, while it is in the cache,
    and not held, so that backward() frees it as it goes, as it would without gdstep. From
    a non-finite one on, the outputs are kept, for the culprit's name."""

    def __init__(self, checked: frozenset, walk):
        self.checked, self.walk = checked, walk
        self.bad = False
        self.dropped = False              # whether an output was let go (the records then lack it)

    def keep(self, backend, i: int, out, last: bool) -> bool:
        """Test row i's output `out`; whether to hold it (the model's output is held)."""
        if not self.bad and i in self.checked and out is not None and not (self.walk is not None and self.walk.proven(i)):
            self.bad = not backend.finite_now(out)
        keep = self.bad or last
        self.dropped = self.dropped or not keep
        return keep


class WatchObserver(Recomputable):
    _loop_tests: LoopTests | None = None      # the loop's latest forward, tested as it ran
    _lean_expected = False            # the last iteration watched was lean (records on demand)
    rows_skipped = False              # the loop's forward runs with its rows unobserved (loop_forward_begins)
    _told_grads_changed = False       # the loop's changes of the gradients after watch() were announced
    _moved_at_watch: set = frozenset()  # what the loop changed after watch(), seen before a hold's restores
    _watched_call = None              # the loop's call of the model whose iteration watch() saw last

    def loop_forward_begins(self, args: tuple) -> None:
        """At the loop's call of the model (watch mode): follow its rows with a chain of
        bounds, and where this iteration will most likely be lean (the one before was, and
        this is its first forward), test them as they run — or, an nn.Sequential whose every
        checked row the bounds prove finite before it runs, not look at its rows at all
        (`rows_skipped`: no hook on them but the last one's, hooked again before any
        forward that needs them)."""
        if not self._watching:           # the first iteration's forward, before its watch(): its δ too
            self._deltas = [None] * len(self._rows)
        walk = self._loop_walk = self._bound_walk(small=True)
        if walk is not None and walk.rows:     # the weights as the forward uses them (and an nn.Sequential's input)
            walk.read(args[0] if args and type(self.model) is self._torch.nn.Sequential else None)
        s = self._session
        self._loop_tests = None
        self.rows_skipped = False
        if self._lean_expected and self.forwards_counted == 1 and s is not None and self.device == "cpu":
            tests = self._loop_tests = LoopTests(frozenset(s._checked_layers), walk)
            if (walk is not None and walk.rows and args and not self._autocast_call.enabled
                    and tests.checked <= walk.ahead(self.model, args[0])):
                self.rows_skipped = tests.dropped = True
                self._order = list(range(len(self._rows) - 1))      # as the Sequential calls them
        self.hook_rows(not self.rows_skipped)

    def loop_forward_tested(self) -> bool | None:
        """Whether the checked outputs of the loop's latest forward are finite, where it was
        tested as it ran (None: it was not; its outputs are held, to be read)."""
        tests, self._loop_tests = self._loop_tests, None
        return None if tests is None else not tests.bad

    def layers_seen(self) -> list[bool]:
        """Which rows produced an output in the loop's latest forward."""
        return [o is not None for o in self._slots]

    @property
    def watching(self) -> bool:
        return self._watching

    def has_grads(self) -> bool:
        """Whether the loop has made gradients (called backward) since they were last cleared."""
        return any(p.grad is not None for _, p in self._train)

    def observe_iteration(self, loss, lean: bool = False, versions: tuple | None = None) -> bool:
        """Queue the forward, loss and backward the loop has just done. With `lean` (records
        on demand), where the iteration can be recomputed: the gradients as the loop holds
        them (no copy; the lean records are recomputed before anyone reads them) and no δ,
        and the step is observed without copies. `versions`: `param_versions()` as they are
        now, where the caller has just compared them (else read here), for the step's
        pre-hook to tell the loop's changes after watch() (`changed_since_watch`). Returns
        whether it is lean."""
        torch = self._torch
        outs = list(self._slots)
        produced = self._produced if self._copy_outputs else {}     # as made, before an in-place module wrote over it
        outputs = tuple(None if o is None else produced[i] if i in produced else o.detach() for i, o in enumerate(outs))
        deltas = tuple(self._deltas) if len(self._deltas) == len(outs) else (None,) * len(outs)
        # with several optimizers (a GAN), only the gradients a backward made since the loop's last watch() or
        # step: the other model's, left from its own iteration (stepped or not), is no part of this one
        joint = hasattr(self.torch_optimizer, "optimizers")
        self._watched = {name: (p.grad, p.grad._version) for name, p in self._train if p.grad is not None
                         and (not joint or self._made_since_turn(p))}
        self.loop_turns += 1
        self._watched_call = self.last_call
        self._versions_at_watch = versions if versions is not None else self.param_versions()
        self._moved_at_watch, self._holding = set(), False      # (a hold an error left unended ends here)
        inv = self._unscale_factor()
        value = _value(loss) if isinstance(loss, torch.Tensor) else float(loss)
        self._seen_loss = value
        self._note_why_not(loss)
        self.note_repeated_rows()
        call = self._loss_call
        if call is not None and call[1] is loss:     # the loss module's result: recomputed in its autocast state
            self._note_loss_autocast(call[2])
        lean = lean and inv is None and self._recomputable(loss)
        if not lean:
            self.check_loss_fn_once()
        tests = self._loop_tests
        dropped, no_deltas = tests is not None and tests.dropped, self._watching and not self.watch_deltas
        if not lean and (dropped or no_deltas):
            what = ("layer outputs and their δ were" if dropped and no_deltas else "layer outputs were" if dropped
                    else "δ (∂L/∂ each layer's output) were")
            self._announce(self._updates, f"iteration {self._updates + 1}: its {what} let go as the loop ran (watch "
                           "mode expected to recompute it, as the iterations before, and now keeps it as the loop ran "
                           "it): its records show the loss and the gradients without them", inexact=False)
        self._lean_expected = lean
        grads = {name: (g.detach() * inv if inv is not None else (g.detach() if g.requires_grad else g) if lean
                        else g.detach().clone()) for name, (g, _) in self._watched.items()}
        if not lean and self.grads_edited():        # clipped before watch(): a recomputed update takes the loop's
            self._used_at[self._updates] = grads     # (its backward, backward's own: said where it differs)
        self._observed = {"forward": outputs, "loss": (None, value), "backward": (deltas[-1] if deltas else None, deltas, grads)}
        self._lean_step = lean
        return lean

    def release_grads(self) -> None:
        """After a lean iteration's step: keep no reference to the loop's gradients (a loop that
        sets them to None frees them, as it would without gdstep) — but those a later forward's
        backward made, where this update comes at the next watch() (a loop that did not step:
        they are that iteration's, which its watch() checks next)."""
        later = self.last_call is not self._watched_call
        kept = {k: v for k, v in self._accumulated.items() if v[2] is self.last_call} if later else {}
        self._accumulated.clear()
        self._accumulated.update(kept)
        self._watched = {}

    def _unscale_factor(self):
        """1/scale where the loop's gradients are still scaled by the attached GradScaler
        (watch() before scaler.unscale_): the records show them unscaled, as unscale_ would."""
        if self.scaler is None:
            return None
        state = self.scaler._per_optimizer_states[id(self.torch_optimizer)]
        if state["stage"].name != "READY":
            return None
        return self.scaler._scale.double().reciprocal().float()

    def start_watching(self) -> None:
        self._watching = True
        if len(self._deltas) != len(self._rows):      # (the first forward's, caught before its watch(), are kept)
            self._deltas = [None] * len(self._rows)

    def drop_layers(self, indices: list[int]) -> None:
        """ModuleBackend's, at the first watch(): δ of the first iteration, caught before it
        (its hooks indexed by the rows as they were), follows its rows."""
        drop = set(indices)
        if len(self._deltas) == len(self._rows):
            self._deltas = [d for i, d in enumerate(self._deltas) if i not in drop]
        super().drop_layers(indices)

    def deltas_wanted(self) -> bool:
        """Whether the loop's forward now records δ of each row (from hooks on the rows'
        outputs): watch mode's full records, and the first iteration's before its watch(),
        where the model's own call began the forward (not `model.forward(x)`, which runs no
        hook of the model's: nothing was made ready for them)."""
        return len(self._deltas) == len(self._rows) and (self.watch_deltas if self._watching else self._session is None)

    def keep_delta(self, i: int, n: int, g) -> None:
        """δ of row i's n-th call in the forward, from its output's hook in the loop's backward
        (which must never raise): kept where that call is the row's last, as its output is."""
        if i < len(self._deltas) and n == self._order.count(i):
            self._deltas[i] = g

    def new_iteration(self) -> None:
        self._slots = [None] * len(self._rows)
        self._deltas = [None] * len(self._rows)

    def changed_since_watch(self) -> list:
        """What the loop changed in place between watch() and optimizer.step() — trained
        parameters (weight decay or a projection by hand), optimizer state (a reset of Adam's
        averages), keyed as `changed_params` keys them: the step runs on the changed values,
        so the iteration keeps full records (the copies before the step), not lean ones,
        which a recomputation would give without the change. (Another optimizer's step on
        parameters this one does not train changes nothing of this update: a loop edit at
        the next iteration's start.)"""
        seen, self._versions_at_watch = getattr(self, "_versions_at_watch", None), None
        moved, self._moved_at_watch = self._moved_at_watch, set()
        if seen is not None:
            moved |= self.changed_params(seen).keys()
        moved = sorted((k for k in moved if not isinstance(k, str) or k in self.trainable), key=str)
        if moved:
            self._lean_step = False
        return moved

    def note_watch_versions(self, put_back: bool) -> None:
        """Around a hold between watch() and the step (a break, records recomputed), whose
        restores give the loop's parameters their version counters back but its optimizer's
        state new tensors: before the outermost hold (`put_back` False) what the loop changed
        since watch() is noted, after it the versions are noted again, as the loop has them
        now (what moves inside it is gdstep's own)."""
        seen = getattr(self, "_versions_at_watch", None)
        if seen is None:
            return
        if put_back:
            self._versions_at_watch = self.param_versions()
        else:
            self._moved_at_watch |= self.changed_params(seen).keys()

    def observe_before_step(self, optimizer=None) -> None:
        """Before the loop's `optimizer.step()`: the gradients it uses, the values before;
        with several optimizers, only the parameters of the one stepping."""
        mine = None
        joint = getattr(self.torch_optimizer, "optimizers", None)
        if joint is not None and optimizer is not None:
            mine = {id(p) for g in optimizer.param_groups for p in g["params"]}
            self.torch_optimizer.turn = joint.index(optimizer)
            self._turn_at[self._updates] = self.torch_optimizer.turn
        names = [name for name, p in self._train if p.grad is not None and (mine is None or id(p) in mine)]
        watched = getattr(self, "_watched", {})
        by_name = self._by_name
        changed = any(_moved(watched.get(name), by_name[name].grad) for name in names)
        used = None
        if changed:        # clipping or unscaling between watch() and step(): the step's own gradients
            used = {name: p.grad.detach().clone() for name, p in self._train if p.grad is not None}
            self._used_at[self._updates] = used
            if not self._told_grads_changed:          # once: a loop that clips does so every iteration
                self._told_grads_changed = True
                self._announce(self._updates, f"iteration {self._updates + 1}: the loop changes the gradients between "
                               "watch() and optimizer.step() (clipping, unscaling): each update shows the gradients "
                               "step() used (said once)", inexact=False)
        if getattr(self, "_lean_step", False):      # records on demand: no copies (see observe_iteration)
            self._observed["before"] = (names, None, None, used)
            if self._bounds_pay:
                self.update_bound.before_step(self._updates, self.torch_optimizer.param_groups)
            return
        self._observed["before"] = (names, self._param_copies(names), self._state_copies(), used)

    def observe_after_step(self) -> bool:
        before = self._observed.pop("before", None)
        if before is None:
            return False
        names, old, state_before, used = before
        if old is None:                             # lean: the Session's update_lean takes it from here
            self._observed["update"] = (names, None, None, None, None, used)
            self.forwards_stepped()
            self._fresh = None
            return True
        new, after = self._param_copies(names), self._state_copies()
        self._observed["update"] = (names, old, new, state_before, after, used)
        self.forwards_stepped()
        # the checkpoint the Session takes right after this update is these copies
        self._fresh = (new, after) if len(names) == len(self._named) else None
        return True

    def observe_no_step(self) -> None:
        """The loop went on without stepping the optimizer after watch() (a GradScaler skipped
        the step, or gradients accumulate): the iteration ends with no update, and a rewind
        repeats that."""
        names = [name for name, p in self._train if p.grad is not None]
        old, state = self._param_copies(names), self._state_copies()
        self._observed["update"] = (names, old, old, state, state, None)
        self._no_step.add(self._updates)
        seen = getattr(self, "_forwards_seen", (0, 0))
        self._forwards, self._eval_forwards = self._forwards - seen[0], self._eval_forwards - seen[1]
        self._unstepped = {name: g for name, (g, _) in getattr(self, "_watched", {}).items()}

