"""The loop's turn and the debugger's: what the loop holds when the debugger opens in the
middle of an iteration (`loop_state`), put back exactly after (`put_back`, the version
counters too); moves refused where the session could not come back to the loop
(`_cannot_return`) or while a BreakpointHit's handler holds it (`handed_over`, until
`loop_goes_on`, at the loop's first call of gdstep, its model or a `state_dict()`);
records recomputed where the session stands, no move (`reading`); the param groups'
hyperparameters kept and given back (`group_values`), for an iteration finished after the
loop's scheduler moved on. Mixed into AttachBackend through WatchObserver."""

from __future__ import annotations

import contextlib
import copy
import sys
from contextlib import contextmanager
from pathlib import Path

from gdstep.errors import GdstepError
from gdstep.frames import GDSTEP, first_outside, gdsteps

_SESSION = tuple(str(Path(GDSTEP) / name) for name in ("rewind.py", "session.py", "run_loop.py", "values.py"))


def _from_loops_code() -> bool:
    """Whether the session's move in progress was called by code outside gdstep (the
    loop's own, a notebook's): the first caller of the Session's methods on the stack."""
    frame = first_outside(2, lambda name: name.startswith(_SESSION) or name == contextlib.__file__)
    return frame is not None and not gdsteps(frame.f_code.co_filename)


class Turns:
    _pinned: str | None = None        # why the debugger may not move from where the loop is
    handed_over: str | None = None    # why not, while a BreakpointHit's handler holds the session
    on_loop_call = None               # what the debugger does first when the loop goes on (loop_goes_on)
    held_versions = None              # the parameters' versions as the hold left them to the loop (param_versions)
    _reading = False                  # records recomputed where the session stands (`reading`)
    _holding = False                  # between a hold's `loop_state` and its `put_back` (holds nest)

    def loop_state(self) -> tuple:
        """What the loop holds between its backward() and step(): parameters, optimizer
        state, the gradients, the phases observed and its forward's output (`dbg.output`,
        which gdstep's own forwards replace); `put_back` restores it exactly."""
        scaler = None
        if self.scaler is not None:         # where the loop's scaler stands in this step (unscaled yet?)
            scaler = copy.deepcopy(dict(self.scaler._per_optimizer_states[id(self.torch_optimizer)]))
        self._pinned = self._cannot_return()
        outer = not self._holding            # the loop's own tensors (inside a hold: gdstep's, moved)
        if outer:
            self.note_watch_versions(put_back=False)
            self._holding = True
        versions = [(t, t._version) for _, t in self._named + list(self._buffers)
                    if not t.is_inference()]        # (an inference tensor has no version counter)
        output = (self.output, self.named_outputs)
        return self.capture(), [(p, p.grad) for _, p in self._train], dict(self._observed), scaler, versions, outer, output

    def _cannot_return(self) -> str | None:
        """Why the session, once moved from where the loop stands (in the middle of an
        iteration), could not be brought back there: coming back recomputes from a
        checkpoint, and an iteration on the way cannot be recomputed. None: it can."""
        s = self._session
        if s is None or s.position % 4 == 0:      # a boundary: moves from it are refused up front
            return None
        step = s.position // 4
        start = s._timeline.at_or_before(max(step - 1, 0)).backend.updates
        for k in range(start, step + 1):
            kept = self._batches.get(k)
            why = ("its batch is no longer kept" if kept is None else kept.why_not or
                   ("watch(loss) was given no targets (pass dbg.watch(loss, y))" if kept.y is None else None))
            if why:
                return (f"cannot recompute iteration {k + 1}: {why}; so the debugger stays where your loop is "
                        f"(iteration {step + 1}), which it could not come back to; q lets the loop go on")
        return None

    _told_fast_path = False

    def no_fast_path(self) -> None:
        """The loop evaluates a model with an nn.TransformerEncoderLayer in eval mode: torch
        takes its fused fast path only where no forward hook is on the layer, and gdstep's
        are, so the outputs differ in the last bits from an unattached run's (and come
        slower). Said once, on stderr and in the event log."""
        if self._told_fast_path:
            return
        layer = self._torch.nn.TransformerEncoderLayer
        if not any(isinstance(m, layer) and not m.training and getattr(m.self_attn, "batch_first", False)
                   and any(x._forward_hooks or x._forward_pre_hooks for x in m.modules()) for m in self._all_modules):
            return                  # (batch_first=False: torch takes no fast path, hooked or not)
        self._told_fast_path = True
        message = ("the loop evaluates an nn.TransformerEncoderLayer in eval mode: torch's fast path for it is off "
                   "while gdstep's hooks are on the model, so its outputs can differ from an unattached run's in the "
                   "last bits (~1e-7 in float32) and come slower; training is not affected; dbg.close() removes the hooks")
        print(f"gdstep: {message}", file=sys.stderr)
        if self._session is not None:
            self._session.log("info", message)

    @contextmanager
    def loops_generator(self):
        """torch's random generator as the loop has it, given back after gdstep's own moves
        (a rewind, a recomputation, a pause's step back: they set it to the iterations' own,
        which a recomputed forward takes from what it kept), so the loop draws on as a bare
        loop would."""
        rng = self._rng_state()
        try:
            yield
        finally:
            self._set_rng(rng)

    _user_hold = None                 # the way back from the loop's own moves of the session (`moving`)
    _session_side = None              # meanwhile, the session's param groups, gradients and scaler (the loop keeps its own)
    _moved_versions: tuple = ()       # the parameters' versions as the loop's last move left them

    @contextmanager
    def moving(self):
        """Around a move of the session (a seek, a rewind, a step). Where the loop's own
        code makes it between its calls of gdstep (not gdstep's: a run, a break's app or
        handler, a read, the way back), the model's tensors, which are the session's, are
        held first, to be given back at the loop's next call of its model or of gdstep (the
        Debugger's `_user_moves`); torch's generator (which a recomputation sets to the
        iterations' own), the param groups' values, the gradients and a GradScaler's state
        are the loop's again as soon as the move is done (the session's are set again for
        its next move): the loop's draws, scheduler steps and scaler meanwhile are a bare
        loop's. A move that leaves the session where it was (refused) gives all back at
        once. Refused between the loop's forward and its watch(): its graph holds the
        weights as they were."""
        new = self._user_hold is None
        if new:
            owner = getattr(self, "attached_by", None)          # (a weak reference to the Debugger)
            debugger = owner() if owner is not None else None
            if (self._holding or self._driving or self._reading or self.handed_over is not None or debugger is None
                    or debugger.session is None or debugger._handling or not _from_loops_code()):
                yield
                return
            if self._watching and self._forwards and self.last_call is not getattr(self, "_watched_call", None):
                raise GdstepError("the session does not move between your loop's forward and its dbg.watch(): the "
                                  "loop's graph holds the weights the forward used, which a move would write over "
                                  "(its backward() would fail); look back after watch() or optimizer.step()")
            debugger._user_moves()
        loop, start = self._loop_side(), self._session.position
        if self._session_side is not None:            # the session's, where its last move left them
            self._set_side(self._session_side)
        try:
            with self.loops_generator():
                yield
        finally:
            self._session_side = self._loop_side()
            self._set_side(loop)
            self._moved_versions = tuple(p._version for _, p in self._named)
            if new and self._session.position == start:      # nothing moved (refused): the loop's own again now
                back, self._user_hold = self._user_hold, None
                back()

    def _loop_side(self) -> tuple:
        """What stays the loop's own while it looks back: the param groups' values, the
        gradients, a GradScaler's state (its scale and each optimizer's stage)."""
        scaler = self.scaler
        state = scaler.state_dict() if scaler is not None and scaler.is_enabled() else None
        kept = (state, copy.deepcopy(scaler._per_optimizer_states)) if state else None   # (none before its first scale)
        return self.group_values(), [(p, p.grad) for _, p in self._train], kept

    def _set_side(self, side: tuple) -> None:
        groups, grads, scaler = side
        self.set_group_values(groups)
        for p, g in grads:
            p.grad = g
        if scaler is not None:
            self.scaler.load_state_dict(scaler[0])
            self.scaler._per_optimizer_states = copy.deepcopy(scaler[1])

    def _stay(self) -> None:
        """Refuse, before anything moves, to leave where the loop is when it could not be
        returned to (the loop must go on from exactly there), or while a handler of the
        loop's holds the session (`handed_over`); records recomputed where the session
        stands (`reading`) are no move."""
        if self._pinned is not None:
            raise GdstepError(self._pinned)
        if self.handed_over is not None and not self._reading:
            raise GdstepError(self.handed_over)

    def read_done(self) -> None:
        """Records were recomputed (and the loop's tensors put back, their versions moved by
        gdstep's writes): what a hold compares the loop's own changes with is noted again."""
        if self.on_loop_call is not None:
            self.held_versions = self.param_versions()

    @property
    def loop_call_due(self) -> bool:
        """Whether the loop's next call has something to end first (`loop_goes_on`)."""
        return self.handed_over is not None or self.on_loop_call is not None or self._user_hold is not None

    def loop_goes_on(self, training: bool = True) -> None:
        """The loop calls gdstep, its model or its model's state_dict() after a handler of a
        BreakpointHit returned: the hold is over, and what the debugger left to do first is
        done (step mode: the iteration the break left unfinished gets its update, so an
        evaluation or a checkpoint sees what a bare loop's would). A `training` call (any but a
        `state_dict()`: code after the loop reads the session's past so; a forward without
        gradients may be training's, a DQN's target, a GAN's fake) also ends a hold of the
        loop's own moves of the session (`moving`)."""
        self.handed_over = None
        then, self.on_loop_call = self.on_loop_call, None
        back = self._user_hold if training else None
        if back is not None:
            self._user_hold = None
        for call in (then, back):
            if call is not None:          # (an evaluation's no_grad or inference_mode is the loop's, not the iteration's)
                with self._torch.inference_mode(False), self._torch.enable_grad():
                    call()

    @contextmanager
    def reading(self):
        """Records recomputed where the session stands, to be read (a BreakpointHit's handler
        reads them while the loop waits). What the loop holds is put back after, the very
        gradient tensors and the version counters too, so the loop's next statement finds
        its own and gdstep takes nothing for an edit of the loop's. In step mode too: the
        update a break left pending keeps its own gradients, the recomputed ones, so a loop
        that zeroes `.grad` in place before its next call (`zero_grad(set_to_none=False)`)
        zeroes its own tensors, not those, as it would after a bare loop's step."""
        pinned, held = self._pinned, self.loop_state()
        graph = self._graph, self._loss_tensor        # step mode: the iteration's graph, for the backward a break left
        self._pinned = pinned
        self._reading = True
        try:
            yield
        finally:
            self._reading = False
            self.put_back(held)                # the same values again, at the versions that graph saved
            if not self._watching:
                self._graph, self._loss_tensor = graph
            self._pinned = pinned

    def put_back(self, held: tuple) -> None:
        self._pinned = None
        live, grads, observed, scaler, versions, outer, (self.output, self.named_outputs) = held
        self.put_back_moved(live, versions)
        self._same_versions(versions)
        for p, g in grads:
            p.grad = g
        self._observed.update(observed)
        if scaler is not None:
            self.scaler._per_optimizer_states[id(self.torch_optimizer)] = scaler
        if outer:                            # the loop's own again, as it held them
            self._holding = False
            self.note_watch_versions(put_back=True)

    def _same_versions(self, versions: list) -> None:
        """The parameters and buffers hold again, bit for bit, the values they held at these
        version counters; give them those counters back. A graph the loop still holds (a
        GAN's `fake`, made before the step that broke and used after it) saved them at
        those versions, and its backward refuses any other ("modified by an inplace
        operation"), though gdstep's restores wrote the same numbers back. What gdstep
        noted of them at later versions is forgotten (those numbers may come again)."""
        reset = getattr(self._torch._C._autograd, "_unsafe_set_version_counter", None)
        if reset is None or all(t._version == v for t, v in versions):
            return
        moved = [(t, v) for t, v in versions if t._version != v]
        reset([t for t, _ in moved], [v for _, v in moved])
        self._cache.clear()
        self._fresh = None
        if getattr(self, "_update_bound", None) is not None:
            self._update_bound.forget()

    def _loops_own_call(self) -> bool:
        """Whether the model is called by the loop, not by gdstep (its own forward, a side
        computation, a record recomputed)."""
        return self._capture and not self._own and not self._reading

    def _state_dict_hook(self, module, *args) -> None:
        """The loop saves the model or the optimizer (a checkpoint): a handler's hold is over
        (loop_goes_on)."""
        if (self.handed_over is not None or self.on_loop_call is not None) and self._loops_own_call():
            self.loop_goes_on(training=False)

    def group_values(self) -> list[dict]:
        """Each param group's hyperparameters as they are, to be given back (`set_group_values`):
        a tensor's value copied."""
        torch = self._torch
        return [{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in g.items() if k != "params"}
                for g in self.torch_optimizer.param_groups]

    def set_group_values(self, values: list[dict]) -> None:
        """Give the param groups these hyperparameters (a tensor's value written into it)."""
        torch = self._torch
        for group, kept in zip(self.torch_optimizer.param_groups, values):
            for k, v in kept.items():
                if isinstance(group.get(k), torch.Tensor) and isinstance(v, torch.Tensor):
                    with torch.no_grad():
                        group[k].copy_(v)
                else:
                    group[k] = v
