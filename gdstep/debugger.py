"""Attach mode: the debugger inside a training loop you already have, as pdb is inside a
program.

    dbg = gdstep.attach(model, optimizer, loss_fn, breakpoints=["nan", "loss > 10 * prev_loss"])
    for x, y in loader:
        dbg.step(x, y)          # forward, loss, backward, update: recorded, breakpoints checked
    gdstep.set_trace()          # the debugger on the latest iteration, here

When a breakpoint fires (a non-finite value always does), the TUI opens on that iteration
with its records; quitting it lets the loop go on. What you change there stays (a new lr, a
retried iteration); rewinding recomputes the last iterations from their kept batches.
Without a terminal the records of that iteration go to `gdstep-break-N.npz` (with a
readable `gdstep-break-N.txt`) and one line on stderr says where; the loop goes on.

A loop that calls backward() and step() itself uses `dbg.watch(loss, y)` between them:

    loss = loss_fn(model(x), y)
    loss.backward()
    dbg.watch(loss, y)      # records this forward, loss and gradients; checks breakpoints
    optimizer.step()        # recorded too (gdstep hooks the optimizer's step)

There the debugger only looks: when you quit it, parameters, optimizer state and gradients
are put back as they were, and the loop's own step runs as it would have.

Loops as written: `dbg.step(x, y, hidden, mask=m)` calls `model(x, hidden, mask=m)` and hands
the whole output to `loss_fn` (`dbg.output` is it); `before_update=` runs between backward
and the step (clipping); `scaler=` a GradScaler; the loop's own lr changes (a scheduler) are
logged each iteration so rewinds replay them; several models and optimizers (a GAN) go in as
`attach({"G": netG, "D": netD}, [optG, optD], loss_fn)` with watch.
"""

from __future__ import annotations

import os
import re
import sys
import weakref
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Sequence

from gdstep.attached_before import attached_by, close_earlier
from gdstep.conditions import parse_condition
from gdstep.errors import BackwardAgain, BreakpointHit, GdstepError
from gdstep.loop_edits import LoopEdits
from gdstep.nonfinite import REWIND_HINT
from gdstep.reattach import Reattaching
from gdstep.resuming import Resuming
from gdstep.watching import Watching

_current: "Debugger | None" = None


def interactive() -> bool:
    """A person at a terminal: stdin and stdout are terminals and this is not CI; and the
    stream the app draws on (Textual: the process's own stderr) is one too."""
    try:
        return (sys.stdin.isatty() and sys.stdout.isatty() and sys.__stderr__ is not None
                and sys.__stderr__.isatty() and not os.environ.get("CI"))
    except (AttributeError, ValueError):
        return False


class Debugger(LoopEdits, Reattaching, Resuming, Watching):
    """A Session over the user's model and optimizer, fed one batch per `step`."""

    def __init__(self, model, optimizer, loss_fn, breakpoints: Sequence[str] = ("nan",), *,
                 on_break: str | Callable | None = None, dump_dir: str | Path = ".", keep: int = 16,
                 max_dumps: int = 10, history_budget: int = 64 * 2**20, name: str | None = None,
                 before_update: Callable[[], Any] | None = None, scaler=None, scheduler=None,
                 dbg_rank: int | str = 0, rank_timeout: float = 60.0):
        from gdstep.distributed import backend_class, ranks_for
        from gdstep.backends.torch_loss import ModuleLoss
        from gdstep.backends.torch_support import require_torch

        torch = require_torch()
        if isinstance(model, (dict, list, tuple)) or isinstance(optimizer, (list, tuple)):
            from gdstep.backends.attach_joint import joint     # a GAN's models and optimizers, as one
            model, optimizer = joint(model, optimizer)
        if not isinstance(model, torch.nn.Module):
            raise GdstepError(f"attach: model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            hint = (" (a loop that updates the parameters itself, through .data: attach an optimizer it never steps, "
                    "e.g. torch.optim.SGD(model.parameters(), lr=0.1))" if optimizer is None else "")
            raise GdstepError(f"attach: optimizer must be a torch.optim optimizer, got {type(optimizer).__name__}{hint}")
        from gdstep.backends.torch_support import attach_refusal
        why = attach_refusal(model, optimizer)
        if why is not None:
            raise GdstepError(f"attach: {why}")
        if not callable(loss_fn):
            raise GdstepError(f"attach: loss_fn must be callable as loss_fn(output, target), got {type(loss_fn).__name__}")
        if before_update is not None and not callable(before_update):
            raise GdstepError(f"attach: before_update must be a function of no arguments, got {type(before_update).__name__}")
        if scaler is not None and not all(hasattr(scaler, k) for k in ("scale", "unscale_", "step", "update")):
            raise GdstepError(f"attach: scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}")
        if scheduler is not None and getattr(scheduler, "optimizer", None) is not optimizer:
            raise GdstepError("attach: scheduler must be an lr scheduler of this optimizer")
        if on_break not in (None, "tui", "dump", "raise") and not callable(on_break):
            raise GdstepError(f'attach: on_break must be "tui", "dump", "raise" or a function, got {on_break!r}')
        breakpoints = () if breakpoints is None else [breakpoints] if isinstance(breakpoints, str) else breakpoints
        # A non-finite value always pauses; "nan" as a breakpoint would only search again.
        conditions = tuple(b for b in breakpoints if not (isinstance(b, str) and b.strip() == "nan"))
        self.on_break, self.dump_dir, self.max_dumps = on_break, Path(dump_dir), max_dumps
        self.dumps: list[Path] = []
        self.loss = ModuleLoss(loss_fn)
        self.ranks = ranks_for(model, dbg_rank, rank_timeout)      # None unless a DDP model
        me = weakref.ref(self)       # (weak: the model's hooks hold the backend, not the debugger)
        self._make_backend = lambda: attached_by(me, backend_class(self.ranks)(
            model, self.loss, optimizer, keep=keep, scaler=scaler, before_update=before_update, scheduler=scheduler))
        self.backend = self._make_backend()
        try:
            for text in conditions:
                if not isinstance(text, str):
                    raise GdstepError(f"attach: a breakpoint is a condition string, got {text!r}")
                parse_condition(text).check_names(self.backend.param_shapes, attached=True)
            if self.ranks is not None:
                self.ranks.check_same(conditions)
        except BaseException:          # refused: the model as it was, no hook of this attach's left on it
            self.backend.remove_hooks()
            raise
        close_earlier(model, self.backend)
        self._recompile_with_hooks(model)
        shared = self.backend.shared_note()
        if shared is not None:         # Hogwild (gdstep.backends.attach_shared): said here, and as the session's first event
            print(f"gdstep: {shared}", file=sys.stderr)
        self._conditions, self._history_budget = conditions, history_budget
        self._name = name or f"attached: {type(model).__name__}"
        self.session = None           # made at the first iteration, when the model has run once
        self._loop_step = 0
        self._mode: str | None = None
        self._step_hooks: list = []
        self._handling = False
        self._handled_before = False      # a break was handled already (the no-terminal note is said once)
        self._nonfinite_step = -1
        self._lean_now = False            # this watched iteration keeps lean records (watching.py)
        self._hook_optimizer()            # (step mode takes them off: it steps the optimizer itself)
        self._raise_later: BreakpointHit | None = None   # watch mode: raised once the loop's state is whole
        self._unfinished = False          # dbg.step raised BreakpointHit mid-way through an iteration
        self._versions: tuple | None = None   # the parameters' versions as gdstep last left them to the loop
        self._groups_raw: list | None = None  # the param groups' items as `_sync_groups` last read them
        self.lean_watch = True            # False: watch mode keeps full records every iteration
        self._moved_message: str | None = None   # why gdstep attached afresh (the model changed dtype or device)
        global _current
        _current = self

    @staticmethod
    def _recompile_with_hooks(model) -> None:
        """A model torch.compile already ran (a warm-up before attach): its compiled code has
        none of gdstep's hooks, and torch does not guard on hooks added later, so the caches
        are reset and its next call compiles again, with them. Said once, on stderr."""
        compiled = getattr(model, "_orig_mod", None) is not None or getattr(model, "_compiled_call_impl", None)
        if not compiled or "torch._dynamo" not in sys.modules:
            return
        import torch
        torch.compiler.reset()
        print("gdstep: the model is compiled (torch.compile): its compiled code is made again at its next call, with "
              "gdstep's hooks (torch.compiler.reset(): other compiled code of this process compiles again once too)",
              file=sys.stderr)

    def _session(self, called: list[bool] | None = None):
        """The Session, made at the first iteration: the layers are the modules that ran."""
        if self.session is not None:
            return self.session
        from gdstep.backends.python_scenario import PythonScenario
        from gdstep.scenario import DataConfig, LossConfig, ModelConfig, TrainingConfig
        from gdstep.session import Session

        b = self.backend
        if called is not None:
            b.drop_layers([i for i, c in enumerate(called) if not c])
        scenario = PythonScenario(
            name=self._name, description="a training loop, attached", seed=0,
            data=DataConfig("attached", MappingProxyType({})),
            model=ModelConfig(layers=(), init="the loop's own", dtype=b.dtype,
                              frozen=tuple(n for n in b.param_shapes if n not in b.trainable)),
            init=MappingProxyType({}), loss=LossConfig(self.loss.kind), optimizer=b.optimizer,
            training=TrainingConfig(None, 10**9, False, None), breakpoints=self._conditions, path=None, dataset=None)
        self.session = Session(scenario, b, history_budget=self._history_budget, attached=True)
        b.call_buffers = None          # taken by the first checkpoint in watch mode; in step mode not needed
        if self._moved_message is not None:            # attached afresh (gdstep.reattach): its first event
            self.session.log("info", self._moved_message)
            self._moved_message = None
        shared = b.shared_note()
        if shared is not None:
            self.session.log("info", shared)
        return self.session

    # -- the loop drives ------------------------------------------------------------------------

    def step(self, x, y=None, *args, **kwargs) -> float:
        """One iteration on this batch: forward `model(x, *args, **kwargs)`, the loss
        `loss_fn(output, y)` (the whole output, whatever its structure), backward,
        `before_update()`, update; each recorded and checked. Returns the loss; the model's
        output is `dbg.output`. `x` and `y` may be tensors, tuples or dicts of them."""
        s = self._take_batch(x, y, args, kwargs)
        if self.ranks is not None:
            return self.ranks.step(self, s)
        try:
            result = s.step(1)
        except BackwardAgain:            # the model turned to a reentrant checkpoint: the iteration again,
            s.seek(4 * self._loop_step)  # from its start (a rewind), its backward by loss.backward() now
            result = s.step(1)
        if result.reason in ("breakpoint", "nonfinite"):
            with self.backend.loops_generator():      # as the loop's forward left it, whatever the debugger did
                if s.breakpoints.breaks_on(result.reason):
                    try:
                        self._break(result.message, settle=self._finish_iteration)
                    except BreakpointHit:      # the session stands at the break for the loop's handler; the
                        self._unfinished = True  # loop's next call (dbg.step, its model, state_dict) finishes it
                        self._hand_over()
                        raise
                    except BaseException:      # on_break's function raised: the iteration finished first, so a
                        self._finish_iteration()     # loop that catches it goes on as a bare loop's would
                        self._loop_step = s.step_count
                        self._note_versions()
                        raise
                self._finish_iteration()
        self._loop_step = s.step_count
        self._note_versions()
        self.backend.differed.clear()      # the loop's own iteration, computed: what differed before is behind
        return s.loss_value

    def _take_batch(self, x, y, args: tuple, kwargs: dict):
        """The session, ready to run one iteration on this batch."""
        b = self.backend
        if hasattr(b.torch_optimizer, "optimizers"):
            raise GdstepError("dbg.step takes one model and one optimizer; with several (a GAN), the loop steps "
                              "them itself and calls dbg.watch(loss, y) before each optimizer's step()")
        self._unhook_optimizer()         # step mode steps the optimizer itself: no hook of watch mode's on it
        self._mode = "step"
        why = self._changed_model()
        if why is not None:                # model.double(), model.to(device), requires_grad_: attached afresh
            self._attach_again(why, watching=False)
            b = self.backend
        b.loop_goes_on()           # on_break="raise" left an iteration at its break: finished first
        if self._lost is not None:       # the loop's own look back could not come back (Resuming._user_moves)
            lost, self._lost = self._lost, None
            self._attach_again(lost, watching=False, step=self._lost_at + 1)
            b = self.backend
        s = self.session or self._first_step_session(x, args, kwargs)
        self._check_loop_edits()
        self._resync()
        self._sync_groups()
        b.add_batch(s.step_count, x, y, args, kwargs)
        s.n = b.n_samples
        return s

    def _first_step_session(self, x, args: tuple, kwargs: dict):
        """The Session, at the first dbg.step; where the model has parameters that ask for a
        gradient but the optimizer does not hold, say once that dbg.step leaves their
        `.grad` as it was (a bare loop's backward would fill it)."""
        b = self.backend
        s = self._session(b.trial(x, args, kwargs))
        self._drop_untrained_grads()
        untrained = [name for name, p in b._named if p.requires_grad and name not in b.trainable]
        if untrained:
            message = (f"dbg.step computes the gradients of the optimizer's parameters only: {', '.join(untrained[:4])}"
                       f"{' …' if len(untrained) > 4 else ''} {'asks' if len(untrained) == 1 else 'ask'} for one, "
                       "but the optimizer does not hold it, so its .grad stays as it was (a bare loop's backward would "
                       "fill it); if another optimizer steps it, "
                       "call backward() and step() in your loop with dbg.watch(loss, y) between")
            s.log("info", message)
            print(f"gdstep: {message}", file=sys.stderr)
        return s

    @property
    def output(self):
        """The model's whole output in the latest iteration (detached): for an RNN's hidden state."""
        return self.backend.output

    @property
    def named_outputs(self) -> list:
        """[(name, tensor)] of each tensor the model returned in the latest iteration."""
        return self.backend.named_outputs

    # -- a breakpoint fired ----------------------------------------------------------------------

    def _break(self, message: str, settle: Callable[[], None] | None = None) -> None:
        """Open the debugger (or write the records and say where). `settle` finishes the
        iteration first when the records go to a file, so the file holds all of it."""
        self._handling = True
        self._versions = None             # the debugger may move the parameters: noted again after
        try:
            mode = self.on_break or ("tui" if interactive() else "dump")
            if mode == "dump" and self.on_break is None and not self.dumps and not self._handled_before:
                print("gdstep: " + ("CI is set, so the debugger does not open" if os.environ.get("CI") else "no terminal to "
                      "open the debugger in (stdin, stdout and stderr must each be one)") + ": each break writes its "
                      "records to files instead", file=sys.stderr)
            self._handled_before = True
            if mode == "raise":         # (the handler cannot rewind: the loop goes on from where it stands)
                raise BreakpointHit(message.replace(REWIND_HINT, ""), self.session)
            if callable(mode):
                mode(self.session, message)
                return
            if mode == "tui":
                try:
                    from gdstep.tui.app import run_tui
                except ImportError:
                    mode = "dump"
                else:
                    print(f"gdstep: {message} — the debugger opens (q lets your loop go on)", file=sys.stderr)
                    if self.ranks is not None:      # a DDP job: the app with every rank's values
                        from gdstep.tui.ranks_view import run_tui_ranks
                        run_tui_ranks(self.session, self.ranks.view)
                    else:
                        run_tui(self.session)
                    return
            if settle is not None:
                settle()
            self._dump(message)
        finally:
            self._handling = False

    def _dump(self, message: str) -> None:
        from gdstep.backends.torch_dump import dismiss_lasting, write_break

        if len(self.dumps) >= self.max_dumps:
            if len(self.dumps) == self.max_dumps:
                print(f"gdstep: {message} (no more files: {self.max_dumps} written)", file=sys.stderr)
                self.dumps.append(Path(os.devnull))
            return
        # The interactive wording (state kept, rewind with back) does not hold for a loop that goes on.
        message = re.sub(r"^paused: |; state kept from before \w+|; your loop's own values kept after \w+| "
                         + re.escape(REWIND_HINT.lstrip()), "", message)
        try:
            npz, txt = write_break(self.session, message, self.dump_dir)
        except OSError as e:      # a debugger never stops the training it watches
            print(f"gdstep: {message} — cannot write the records to {self.dump_dir}: {e.strerror or e}; "
                  "the loop goes on", file=sys.stderr)
            self.dumps.append(Path(os.devnull))
            return
        self.dumps.append(npz)
        lasting = dismiss_lasting(self.session)
        inexact = self.session.replay_inexact
        print(f"gdstep: {message} — records written to {npz} (summary: {txt}); the loop goes on"
              + (f"; {lasting}" if lasting else "")
              + ("; ⚠ inexact: the records are not exactly the loop's (the summary says why)" if inexact else ""),
              file=sys.stderr)

    def dismiss(self, what: str | int = "nan") -> None:
        """Break no more on `what`: "nan" (non-finite values) or a breakpoint's id, as the
        app's `x` does at a pause."""
        if self.session is None:
            raise GdstepError("dismiss: no iteration has run through gdstep yet")
        self.session.log("setting", self.session.breakpoints.dismiss(what))

    # -- the end ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Finish an iteration on_break="raise" left at its break (as the next dbg.step
        would have: the loop's last iteration gets its update), and remove gdstep's hooks
        from the model and the optimizer."""
        self.backend.loop_goes_on()
        self._unhook_optimizer()
        self.backend.remove_hooks()
        global _current
        if _current is self:
            _current = None

    def __enter__(self) -> "Debugger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.session.describe() if self.session is not None else "no iteration yet"
        return f"<gdstep.attach {where}>"


def attach(model, optimizer, loss_fn, breakpoints: Sequence[str] = ("nan",), **kw: Any) -> Debugger:
    return Debugger(model, optimizer, loss_fn, breakpoints, **kw)


def set_trace(**kw: Any) -> None:
    """Open the debugger on the latest attached iteration, as breakpoint() opens pdb."""
    if _current is None:
        raise GdstepError("set_trace: no training loop is attached (call gdstep.attach(model, optimizer, loss_fn) first)")
    if kw.get("on_break") is not None:
        previous, _current.on_break = _current.on_break, kw["on_break"]
        try:
            _current.open(kw.get("message", "set_trace"))
        finally:
            _current.on_break = previous
        return
    _current.open(kw.get("message", "set_trace"))


__all__ = ["BreakpointHit", "Debugger", "attach", "interactive", "set_trace"]
