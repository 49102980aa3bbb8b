"""The batches the loop hands over in attach mode, kept for recomputing their iterations:
the whole call (the input, any further forward arguments such as an RNN's hidden state,
keyword arguments) and the target, with what the loop's iteration ran under (its autocast
states, gdstep.backends.attach_autocast; its modules' train and eval modes,
gdstep.backends.attach_modes). A rewind that needs a batch no longer kept, one given
without targets, or an iteration the loop ran so that it cannot be recomputed, is refused
before anything moves. Mixed into AttachBackend."""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

from gdstep.backends.attach_autocast import autocast_state, loop_states
from gdstep.backends.attach_modes import modes_of
from gdstep.backends.torch_layers import first_tensor
from gdstep.backends.torch_user import detached, named_tensors, rows
from gdstep.errors import BatchesGone, GdstepError

NEXT_BATCH = ("attach mode: the next batch comes from your training loop; let it go on (q in the app; from a "
              "BreakpointHit's handler, return)")


class Kept(NamedTuple):
    """One iteration's batch as the loop gave it, and the tensors the records show for it."""
    x: Any
    args: tuple
    kwargs: dict
    y: Any
    shown_x: Any
    shown_y: Any
    versions: int
    why_not: str | None = None        # why a rewind cannot recompute this iteration


def _versions(*values) -> int:
    """The tensors' version counters, summed: an in-place change since moves it."""
    return sum(v._version if hasattr(v, "data_ptr") else sum(t._version for _, t in named_tensors(v))
               for v in values if v is not None)


CARRIES = ("its input carries gradients from before the model's call (a GAN's generator output), "
           "which a recomputed forward would not")


class KeptBatches:
    @property
    def kept_batches(self) -> int:
        """How many of the latest batches are kept for recomputing their iterations."""
        return self._keep

    def has_batch(self, step: int) -> bool:
        """Whether the batch of iteration `step` (from 0) is kept."""
        return step in self._batches

    def add_batch(self, step: int, x, y, args: tuple = (), kwargs: Mapping | None = None) -> None:
        if not args and not kwargs and hasattr(x, "data_ptr") and (y is None or hasattr(y, "data_ptr")):
            kept = self._plain_batch(x, y)        # model(x) with a tensor target: the same, directly
        else:
            kept = self._batch_of(x, y, tuple(args), dict(kwargs or {}))
        self._batches[step] = kept
        self._autocast_at[step] = loop_states(autocast_state(self._torch, self.device),
                                              self._autocast_call if self._watching else None)
        self._modes_at[step] = (self._modes_call if self._watching and self._modes_call is not None
                                else modes_of(self._all_modules))
        self._autocast_call = self._modes_call = None
        self.x, self.y = kept.shown_x, kept.shown_y
        self.n_samples = rows(kept.x if kept.x is not None else kept.kwargs)
        oldest = self._oldest_kept(step)
        for old in [s for s in self._batches if s < oldest]:
            del self._batches[old]
            self._used_at.pop(old, None)
            self._rng_at.pop(old, None)
            self._autocast_at.pop(old, None)
            self._modes_at.pop(old, None)
            self._no_step.discard(old)

    def _oldest_kept(self, step: int) -> int:
        """The oldest iteration whose batch is kept, at iteration `step`: the last `keep`
        iterations can each be rewound to, so the batches reach back to the checkpoint
        their recomputation starts from (the one before the oldest of them: a rewind to an
        iteration's start shows the records of the one before), at most 2·keep in all."""
        oldest = step - self._keep + 1
        s = self._session
        if s is None:
            return oldest
        s._timeline.floor = max(oldest - 1, 0)       # (the timeline keeps that checkpoint: Timeline.floor)
        start = s._timeline.at_or_before(max(oldest - 1, 0)).step
        return max(min(start, oldest), step + 1 - 2 * self._keep)

    _input_version: tuple | None = None      # (the input of the loop's latest call of the model, its version then)

    def _batch_of(self, x, y, args: tuple, kwargs: dict) -> Kept:
        shown_x = x if x is None or hasattr(x, "shape") else first_tensor(x)
        if shown_x is None:
            shown_x = first_tensor(kwargs) if x is None else None
        shown_y = y if y is None or hasattr(y, "shape") else first_tensor(y)
        carries = self._watching and any(t.grad_fn is not None for _, t in named_tensors((x, args, kwargs)))
        x, args, kwargs = detached(x), detached(args), detached(kwargs)
        return Kept(x, args, kwargs, y, shown_x, shown_y, _versions(x, args, kwargs, y), CARRIES if carries else None)

    def _plain_batch(self, x, y) -> Kept:
        """`_batch_of` for a tensor input alone and a tensor target (or none). In watch mode
        the input's version is the one it had at the loop's call of the model: a change in
        place after the forward (a normalisation of the batch before watch()) is one since."""
        carries = x.grad_fn is not None
        kept_x = x.detach() if carries else x
        at_call = self._input_version if self._watching else None
        versions = (at_call[1] if at_call is not None and at_call[0] is x else x._version) + (y._version if y is not None else 0)
        return Kept(kept_x, (), {}, y, x, y, versions, CARRIES if carries and self._watching else None)

    def _kept(self, x=None) -> Kept | None:
        if x is not None:
            for kept in self._batches.values():
                if kept.shown_x is x:
                    return kept
        return self._batches.get(self._updates)

    def _inputs(self, x, y):
        kept = self._kept(x)
        if kept is None or (x is not None and kept.shown_x is not x):
            return x, (), {}, y
        return kept.x, kept.args, kept.kwargs, kept.y

    def _real_target(self, y):
        kept = self._batches.get(self._updates)
        return kept.y if kept is not None and kept.shown_y is y else y

    def batch(self, indices) -> tuple[Any, Any]:
        """The batch of the iteration at hand; past the loop's latest, the latest (for views
        that only look: running forward there is refused)."""
        step = self._updates
        if step in self._batches:
            kept = self._batches[step]
            return kept.shown_x, kept.shown_y
        if not self._batches:
            raise GdstepError("attach mode: no batch has been seen yet")
        latest = max(self._batches)
        if step > latest:
            kept = self._batches[latest]
            return kept.shown_x, kept.shown_y
        raise GdstepError(f"attach mode keeps the batches of the last {self._keep} iterations (from the checkpoint "
                          f"before them); iteration {step + 1}'s is no longer kept, so it cannot be recomputed")

    def evaluation_data(self) -> tuple[Any, Any]:
        """The latest batch: the loop's data set is not ours to see."""
        if self.x is None:
            raise GdstepError("attach mode: no batch has been seen yet")
        if self.y is None and self._batches[max(self._batches)].y is None:
            raise GdstepError("attach mode: watch(loss) was given no targets (pass watch(loss, y); a loss without targets: pass a placeholder, dbg.watch(loss, ()), which loss_fn ignores)")
        return self.x, self.y

    def why_not_recomputed(self, step: int) -> str | None:
        """Why iteration `step`, recomputed, is known to differ from what the loop computed:
        it could not be recomputed (its kept batch says why), or it comes after a kept one
        that could not, recomputed since the last restore, whose recomputed values it
        started from. None: no known reason."""
        start = getattr(self, "recomputed_from", 0)
        for k in sorted((s for s in self._batches if start <= s <= step), reverse=True):
            why = self._batches[k].why_not
            if why and k == step:
                return f"it cannot be recomputed: {why}"
            if why:
                return f"it comes after iteration {k + 1}, which cannot be recomputed ({why}), and starts from its recomputed values"
        if step in self.__dict__.get("_grads_edited", ()):
            return ("the loop changed its gradients before watch() (clipping, another backward, an edit of .grad): "
                    "its records hold the gradients watch() was given, a recomputation backward's own (its "
                    "update, recomputed, steps with the loop's gradients, so the parameters are the loop's)")
        if step in self.__dict__.get("_loss_differs", ()):
            return "the loop's loss is not loss_fn(output, y) (see the event of its first such iteration)"
        if any(k in self._no_step for k in range(start, step)):
            return ("the loop did not call optimizer.step() after an iteration before it: where it updates the "
                    "parameters itself through .data (pytorch/examples' regression), no version counter moves, so "
                    "gdstep cannot see or keep that change")
        return None

    def check_recompute(self, checkpoint, through: int) -> None:
        """Refuse, before anything moves, to recompute the iterations from a checkpoint's
        through `through` (0-based) where one has no kept batch, was not recomputable as the
        loop ran it, or has no targets. The loop's next iteration, not begun, needs none."""
        self._stay()
        latest = max(self._batches, default=-1)
        for step in range(checkpoint.updates, through + 1):
            kept = self._batches.get(step)
            if kept is None and step > latest:        # not given yet
                raise GdstepError(NEXT_BATCH)
            if kept is None:
                start = checkpoint.updates
                raise BatchesGone(f"cannot recompute iteration {through + 1}"
                                  + (f" from the checkpoint before it (iteration {start + 1}'s start)" if start < through else "")
                                  + f": the batch of iteration {step + 1} is no longer kept (attach mode keeps those of "
                                  f"the last {self._keep} iterations, from the checkpoint before them; "
                                  "gdstep.attach(..., keep=N) keeps more)")
            if kept.why_not:
                raise GdstepError(f"cannot recompute iteration {step + 1}: {kept.why_not}; gdstep shows what "
                                  "the loop computed there")
            if kept.y is None and self._watching:
                raise GdstepError(f"cannot recompute iteration {step + 1}: watch(loss) was given no targets "
                                  "(pass dbg.watch(loss, y); a loss without targets: pass a placeholder, dbg.watch(loss, ()), which loss_fn ignores)")


def version_now(x) -> tuple | None:
    """(x, its version counter now) where x is a tensor that has one (an inference tensor
    has none): an in-place change of x since shows in its counter."""
    try:
        return (x, x._version) if hasattr(x, "_version") else None
    except RuntimeError:        # (an inference tensor's raises)
        return None
