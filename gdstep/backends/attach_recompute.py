"""Whether a recomputation gives the iteration the loop just ran (watch mode): one forward
since the last step, the gradients as one backward made them (noted at the end of each
backward, with their versions), its batch and targets kept, and the loop's loss equal to
`loss_fn(output, y)`. Where not, the iteration keeps full records, and what a rewind cannot
recompute is said once and refused (its kept batch's `why_not`). Mixed into WatchObserver.
"""

from __future__ import annotations

import contextlib
import math
import sys

from gdstep.backends.attach_autocast import autocast_state, entered
from gdstep.backends.attach_batches import version_now
from gdstep.backends.attach_turns import Turns
from gdstep.backends.backward_pass import reentrant_checkpoint


class Recomputable(Turns):
    _loss_needs_grad = False          # loss_fn ran only with gradients on (_loss_again)
    _twice = None                     # the loop's forward after which a second backward added to a gradient
    _output_version = None            # (the model's output in the loop's latest forward, its version then)
    _last_eval = False                # the loop's latest forward ran in eval mode (with gradients on)
    _eval_used = False                # a forward in eval mode since the last step gave its output a gradient
    loop_turns = 0                    # the loop's watch() calls and optimizer steps so far (a note says after which)

    def _count_forward(self, module) -> None:
        """At the loop's call of the model with gradients on: one more forward since the step."""
        self._forwards += 1
        self._last_eval = not module.training
        self._eval_forwards += self._last_eval

    _output_whole = True              # whether the model's output is one tensor (not a tuple or dict holding it)

    def _note_loop_output(self, out, output) -> None:
        """At the end of the loop's forward: the output's version and the input's (what the
        model itself did to them in place is theirs; what the loop does after, a change),
        whether `out`, its first tensor, is the whole `output` (a recomputation calls
        loss_fn on the whole), and, from a forward in eval mode, whether its output takes
        part in a backward."""
        self._output_version = version_now(out)
        self._output_whole = output is out
        call = self.last_call
        self._input_version = version_now(call[0][0] if call is not None and call[0] else None)
        if getattr(out, "requires_grad", False):
            if not self.grads_noted_by_hooks and out.grad_fn is not None:     # (torch's C method: cheaper than
                out.grad_fn.register_prehook(self._backward_begins)           # Tensor.register_hook's Python)
            if self._last_eval:
                out.register_hook(self._eval_output_used)

    def _eval_output_used(self, grad) -> None:
        self._eval_used = True

    def forwards_stepped(self) -> None:
        """The loop stepped: the forwards of the next iteration are counted from none."""
        self._forwards = self._eval_forwards = 0
        self._eval_used = False

    grads_noted_by_hooks = False
    """How each gradient is noted as backward() leaves it: at the end of each backward that
    reaches the model's output, in one callback (`_backward_begins`); or (True: DDP, whose
    reducer writes the averaged gradients after such a callback) by a post-accumulate hook
    on each parameter, which costs a call into Python from the autograd engine per
    parameter tensor (~5 µs each here: 0.5 ms an iteration on a net of 84 tensors)."""

    _snapshot = None                  # the gradients as the backward under way found them (_backward_begins)
    _snapshot_task = None             # and that backward (autograd's graph task id)

    def _backward_begins(self, grad) -> None:
        """A tensor hook on the model's output in the loop's forward: the backward through it
        has begun, and no parameter's gradient is accumulated yet (they all come after the
        output's). Each gradient as it stands, and a callback for the end of this backward
        (once a backward: several outputs of the model may take part in one; a backward
        that raised midway ran no callback, and the next replaces its snapshot)."""
        torch = self._torch
        task = torch._C._current_graph_task_id()
        if self._snapshot is None or task != self._snapshot_task:
            self._snapshot_task = task
            params = self._train_params
            grads = [p.grad for p in params]
            self._snapshot = (params, grads, [None if g is None else g._version for g in grads])
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_ends)

    def _backward_ends(self) -> None:
        """At the end of that backward: each gradient it made or added to (a new tensor, or
        its version moved), noted as `_grad_hook` notes it. A parameter the loop hooks itself
        after accumulation (`register_post_accumulate_grad_hook`: clipping in place,
        an optimizer stepped in backward) is not: its gradient is not backward's own alone."""
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is None:
            return
        for p, g, version in zip(*snapshot):
            now = p.grad
            if now is not None and (now is not g or now._version != version) and not p._post_accumulate_grad_hooks:
                self._note_grad(p, now)

    def _grad_hook(self, p) -> None:
        """A post-accumulate hook's: p.grad as backward() left it (`_note_grad`)."""
        self._note_grad(p, p.grad)

    def _note_grad(self, p, g) -> None:
        """p's gradient g as backward() left it, the forward it came from, and after how many
        of the loop's turns (watch() calls and steps).
        A second backward since that forward which added to it in place, untouched between
        (its version one on: a second loss's `backward()` after `retain_graph=True`, or one
        run again without zeroing), is noted (`_twice`): one backward's recomputation cannot
        give the sum. (Zeroed between, as after a backward that raised midway, it is one
        backward's.)"""
        call, version = self.last_call, g._version
        made = self._accumulated.get(id(p))
        if made is not None and made[0] is g and made[2] is call and version == made[1] + 1:
            self._twice = call
        self._accumulated[id(p)] = (g, version, call, self.loop_turns)

    def _made_since_turn(self, p) -> bool:
        """Whether a backward made p's gradient, as it is now, since the loop's last watch() or step."""
        made = self._accumulated.get(id(p))
        return made is not None and made[0] is p.grad and made[3] == self.loop_turns

    @property
    def forwards_counted(self) -> int:
        """The loop's forwards of this iteration: where some ran in train mode, the last one
        too, not those in eval mode (an evaluation between steps with gradients on, as
        language_translation's validate() runs) — unless a backward reached one's output;
        where all ran in eval mode (fine-tuning with BatchNorm frozen), all."""
        trained = self._forwards - self._eval_forwards
        return trained if trained > 0 and not self._last_eval and not self._eval_used else self._forwards

    def _note_why_not(self, loss) -> None:
        """Where a recomputation cannot give this iteration (accumulation, several forwards): say so."""
        unstepped = getattr(self, "_unstepped", None)
        self._unstepped, self._forwards_seen = None, (self._forwards, self._eval_forwards)
        forwards = self.forwards_counted
        accumulated = bool(unstepped) and any(unstepped.get(name) is g for name, (g, _) in self._watched.items())
        twice, self._twice = self._twice is not None and self._twice is self.last_call, None
        twice = twice and not reentrant_checkpoint(loss)     # (its inner backward adds to what the outer made)
        kept = self._batches.get(self._updates)
        if kept is not None and not kept.why_not and (forwards > 1 or accumulated or twice):   # a rewind could not recompute it
            why = (f"the loop ran the model forward {forwards} times for it (gradient accumulation, "
                   "several losses as in a GAN, or an evaluation outside torch.no_grad())" if forwards > 1
                   else "its gradients add to those of an iteration the loop did not step" if accumulated
                   else "its gradients sum two backward passes of one forward")
            self._batches[self._updates] = kept._replace(why_not=why)
        if accumulated:
            self._announce_once("accumulated", f"iteration {self._updates + 1}: its gradients add to those of the "
                                "iteration before, which the loop did not step (gradient accumulation): the records show "
                                "the sum; a rewind cannot recompute it")
        elif twice and forwards == 1:
            self._announce_once("backwards", f"iteration {self._updates + 1}: the loop ran backward more than once "
                                "since the forward (a second loss's backward after retain_graph=True), adding to the "
                                "gradients: the records show their sum, as the step uses it; a rewind cannot recompute it")
        elif forwards > 1:
            self._announce_once("forwards", f"iteration {self._updates + 1}: the model ran forward {forwards} times "
                                "before this optimizer step (gradient accumulation, several losses as in a GAN, or an "
                                "evaluation outside torch.no_grad()): the records show the last forward and its loss with "
                                "the gradients of all of them; a rewind cannot recompute it")

    def _announce_once(self, kind: str, message: str) -> None:
        """An inexact iteration of a kind a loop repeats every time (a GAN's, accumulation's):
        said for the first, in the event log; each one after is noted (`inexact`) and a rewind
        into it refused with the same reason, but not logged again."""
        told = self.__dict__.setdefault("_told_kinds", set())
        if kind in told:
            self.inexact.append((self._updates, message))
            return
        told.add(kind)
        self._announce(self._updates, f"{message} (said once: each such iteration after it is the same)")

    def note_repeated_rows(self) -> None:
        """Rows the latest forward called more than once (a Siamese net's shared trunk, a block
        applied twice): their records show the last call, said once (an info event)."""
        told, order = self.__dict__.get("_told_kinds", ()), self._order
        if "repeated rows" in told or len(order) == len(set(order)) or self._session is None:
            return
        self.__dict__.setdefault("_told_kinds", set()).add("repeated rows")
        repeated = list(dict.fromkeys(i for i in order if order.count(i) > 1))
        names = ", ".join(self._rows[i][0] for i in repeated[:4])
        names += f" and {len(repeated) - 4} other layers" if len(repeated) > 4 else ""
        weighted = any(next(self._rows[i][1].parameters(), None) is not None for i in repeated)
        sums = ", while its gradients sum every call's, as backward made them" if weighted else ""
        self._announce(self._updates, f"iteration {self._updates + 1}: the model called {names} more than once in one "
                       f"forward ({'shared weights' if weighted else 'a module reused'}): each such layer's records show "
                       f"its last call (its output and δ){sums} (said once)", inexact=False)

    def grads_edited(self) -> bool:
        """Whether a gradient watch() is given is not as backward() made it (clipping, an
        edit of `.grad` before watch()): noted for the iteration (why_not_recomputed)."""
        edited = self.__dict__.setdefault("_grads_edited", set())
        if self._updates in edited:
            return True
        accumulated = getattr(self, "_accumulated", {})
        for name, (g, version) in self._watched.items():
            made = accumulated.get(id(self._by_name[name]))
            if made is None or made[0] is not g or made[1] != version:
                edited.add(self._updates)
                return True
        return False

    def _recomputable(self, loss) -> bool:
        """Whether a recomputation from the kept batch gives this iteration: one forward of
        the model since the last step, its gradients not added to an unstepped iteration's,
        its input free of earlier graphs, its targets given, and the loop's `loss` is
        loss_fn(output, y) — the very tensor the loss module returned for the model's output
        and y (seen by a hook on it), else recomputed and compared."""
        kept = self._batches.get(self._updates)
        if (kept is None or kept.why_not is not None or kept.y is None or self.forwards_counted != 1
                or self._rng_call is None or self._updates - 1 in self._no_step):
            return False       # (after an iteration the loop did not step: it may update the parameters itself)
        if self.grads_edited():            # the gradients as backward() made them (no clipping before watch())
            return False
        # the model's output as it made it (a normalisation in place before the loss changes it)
        made = self._output_version
        if made is not None and made[0] is self._loop_out and made[0]._version != made[1]:
            self._announce_once("output changed", f"iteration {self._updates + 1}: the loop changed the model's output "
                                "in place after the forward (a normalisation before the loss): its forward's record "
                                "shows the output as the loop left it, not as the model made it; a recomputation makes "
                                "it again, and its loss is loss_fn's on it")
            return False
        # and the loop's loss is loss_fn(output, y), which a recomputation computes
        call, self._loss_call = self._loss_call, None
        if self._loss_fn_call(call, kept) and call[1] is loss:
            self._note_loss_autocast(call[2])
            return True
        torch = self._torch
        again = self._loss_fn_called(kept)
        if again is None:
            return False
        if not isinstance(again, torch.Tensor) or again.numel() != 1:
            return False
        value = again.item()
        at = self._autocast_at.get(self._updates, (None,))[0]
        if value != self._seen_loss and at is not None and at.enabled:     # a loss after the forward's autocast
            off = at._replace(enabled=False)
            if self._loss_again(kept.y, autocast=off).item() == self._seen_loss:
                self._note_loss_autocast(off)
                return True
        if (value != self._seen_loss and math.isfinite(value) and math.isfinite(self._seen_loss)
                and not self._loss_draws(kept.y)):      # (one that draws is replayed by a recomputation)
            self.__dict__.setdefault("_loss_differs", set()).add(self._updates)      # (why_not_recomputed)
            message = (f"iteration {self._updates + 1}: the loop's loss, {self._seen_loss!r}, is not loss_fn(output, y) "
                       f"= {value!r} (a term added to it, another criterion, reduction or y): the iterations show what "
                       "the loop computed, and a rewind recomputes loss_fn(output, y), whose numbers differ (attach the "
                       "loss_fn the loop computes its loss with)")
            if "loss_fn value" not in self.__dict__.get("_told_kinds", ()):
                print(f"gdstep: {message}", file=sys.stderr)
            self._announce_once("loss_fn value", message)
        return value == self._seen_loss

    def _loss_fn_called(self, kept):
        """loss_fn(output, y) on the iteration's output and targets (`_loss_again`); None
        where it raised: where loss_fn cannot be called so (a loss of more arguments, a y
        of other rows, a model returning (output, hidden) given its criterion as it is), no
        recomputation can call it: the iteration is marked so, and it is said at once."""
        torch = self._torch
        self._loss_fn_tried = True
        try:
            return self._loss_again(kept.y)
        except (MemoryError, torch.OutOfMemoryError):      # (no fault of the loss_fn's)
            return None
        except Exception as e:
            why = f"{type(e).__name__}: {e}"
            self._batches[self._updates] = kept._replace(why_not=f"the loss_fn given to attach cannot be called as "
                                                         f"loss_fn(output, y) ({why})")
            message = (f"iteration {self._updates + 1}: the loss_fn given to attach fails as loss_fn(output, y) ({why}): "
                       "the iterations show what the loop computed, and a rewind cannot recompute them (attach a "
                       "loss_fn that takes the model's whole output and the y given to watch(), e.g. "
                       "lambda out, y: loss_function(out[0], y, *out[1:]), or lambda out, y: criterion(out[mask], y))")
            if "loss_fn call" not in self.__dict__.get("_told_kinds", ()):
                print(f"gdstep: {message}", file=sys.stderr)         # a mistake in the attach call: said where seen
            self._announce_once("loss_fn call", message)
            return None

    _loss_fn_tried = False

    def check_loss_fn_once(self) -> None:
        """At the first watch() whose iteration keeps full records, where no lean one tried
        it: whether loss_fn can be called as a recomputation calls it (said at once, not at
        the first rewind, which raised the loss's own TypeError)."""
        kept = self._batches.get(self._updates)
        if (self._loss_fn_tried or kept is None or kept.y is None or kept.why_not is not None
                or self._loss_fn_call(self._loss_call, kept)):
            return
        self._loss_fn_called(kept)

    def _loss_fn_call(self, call, kept) -> bool:
        """Whether the loss module's call the hook saw is loss_fn(output, y), as a
        recomputation calls it: the model's whole output and the y given to watch()."""
        return (call is not None and len(call[0]) == 2 and call[0][0] is self._loop_out and self._output_whole
                and call[0][1] is kept.y)

    def _loss_draws(self, y) -> bool:
        """Whether loss_fn draws from torch's random generator (dropout in the loss: its
        value here is another draw's, not a sign of another loss); the generator given back."""
        torch = self._torch
        with self.loops_generator():
            state = torch.get_rng_state()
            try:
                self._loss_again(y, give_back=False)
            except Exception:
                return True          # (unknown: said nothing of)
            return not torch.equal(state, torch.get_rng_state())

    def _autocast_of_loss(self):
        """At the loop's call of the loss module: its autocast state (the forward's where
        autocast is off in both, the usual case, read in one call)."""
        at = self._autocast_call
        if at is not None and not at.enabled and not self._torch.is_autocast_enabled(at.device_type):
            return at
        return autocast_state(self._torch, self.device)

    def _note_loss_autocast(self, state) -> None:
        """The loop computed this iteration's loss in `state`: where it is not the forward's
        autocast (the loss after `with torch.autocast(...)` ends), a recomputation runs the
        loss so."""
        states = self._autocast_at.get(self._updates)
        if states is not None and state is not None and state != states[0]:
            self._autocast_at[self._updates] = (*states[:2], state)

    def _loss_again(self, y, give_back: bool = True, autocast=None):
        """loss_fn(output, y), as a recomputation calls it — in the loop's autocast for its
        loss (an AMP loop's loss is a lower precision's; or in `autocast`), its random
        generator given back after (a loss that draws must not move the loop's) —: without
        gradients where it runs so (cheaper),
        else with them, on the output made a leaf that requires them (a loss that
        differentiates: from then on with them at once); raises what that call raises."""
        torch, output = self._torch, self.output
        rng = self.loops_generator if give_back else contextlib.nullcontext
        cast = (lambda: entered(torch, autocast)) if autocast is not None else (lambda: self._loop_autocast(loss=True))
        if not self._loss_needs_grad:
            try:
                with torch.no_grad(), cast(), rng():
                    return self.loss_fn.loss_fn(output, y)
            except Exception:
                pass
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            output = output.detach().requires_grad_()
        with torch.enable_grad(), cast(), rng():
            again = self.loss_fn.loss_fn(output, y)
        self._loss_needs_grad = True
        return again
