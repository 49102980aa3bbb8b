"""When the loop moves its model to another dtype or device mid-run (`model.double()`,
`model.to("cuda")`): the iterations before cannot be recomputed on it (their checkpoints and
batches hold the old dtype), so gdstep attaches afresh from there — new hooks, a new
session, the same breakpoints — and says so in one line. The same where the loop changes
which parameters train (`requires_grad_`, `add_param_group`: progressive unfreezing), which
the backend's gradients, records and checkpoints are made for; and where, in watch mode, a
recomputation on the debugger's way back to the loop failed (the loop's own loss_fn or model
raised): the loop's tensors are its own again, and the session cannot stand where it is.
A mixin of `Debugger`."""

from __future__ import annotations

import sys

from gdstep.backends.torch_support import device_name, dtype_name


class Reattaching:
    def _moved_model(self) -> str | None:
        """Where the model's parameters stand now, against what the backend was made for:
        "float32 on cpu → float64 on cpu", or None where nothing moved (or DDP, which is
        left as it is)."""
        b = self.backend
        first = b._named[0][1] if b._named else None
        if first is None or self.ranks is not None:
            return None
        where = (first.dtype, first.device)
        if where == getattr(b, "_made_for", None):       # (the names below cost more, each iteration)
            return None
        now = (dtype_name(first.dtype), device_name(first.device))
        if now == (b.dtype, b.device):
            b._made_for = where
            return None
        return f"{b.dtype} on {b.device} → {now[0]} on {now[1]}"

    def _changed_model(self) -> str | None:
        """Why the iterations before cannot be recomputed on the model as the loop now has it,
        or None: its parameters moved (dtype, device), or which of them train changed."""
        moved = self._moved_model()
        if moved is not None:
            return f"the model's parameters moved ({moved}): the iterations before cannot be recomputed on it"
        return self._retrained()

    def _retrained(self) -> str | None:
        """Which of the model's parameters started or stopped training since attach (their
        `requires_grad`, or the optimizer's groups holding them), said as "0.weight stopped
        training"; None where none did, or under DDP (left as it is), or with several
        optimizers (a GAN's loop turns the discriminator's `requires_grad` off while the
        generator trains, and on again: each optimizer's step is an iteration of its own)."""
        b = self.backend
        if self.ranks is not None or hasattr(b.torch_optimizer, "optimizers"):
            return None
        held = {id(p) for g in b.torch_optimizer.param_groups for p in g["params"]}
        now = [name for name, p in b._named if p.requires_grad and id(p) in held]
        if len(now) == len(b.trainable) and b.trainable.issuperset(now):
            return None
        started, trains = [n for n in now if n not in b.trainable], set(now)
        stopped = [n for n, _ in b._named if n in b.trainable and n not in trains]
        said = "; ".join(f"{', '.join(names)} {what}" for names, what in ((started, "started training"),
                                                                           (stopped, "stopped training")) if names)
        return f"the loop changed which parameters train ({said}: requires_grad_, add_param_group)"

    def _drop_untrained_grads(self) -> None:
        """Step mode: dbg.step stands for the loop's `zero_grad()` too, so a parameter the
        optimizer holds but that does not train (frozen, at attach or since) keeps no gradient
        for the step to move it with, as `zero_grad()` (set_to_none, its default) leaves it."""
        trains = {id(p) for _, p in self.backend._train}
        for g in self.backend.torch_optimizer.param_groups:
            for p in g["params"]:
                if id(p) not in trains:
                    p.grad = None

    def _attach_again(self, why: str, watching: bool, step: int | None = None) -> None:
        """gdstep's hooks off the old, a backend and (at the next iteration) a session for
        the model as it is now; `why` the iterations before cannot be gone back to; `step`
        the loop's iteration (where the session no longer stands there)."""
        if step is None:
            step = self._loop_step + 1 if self.session is None else self.session.step_count + 1
        self.backend.loop_goes_on()
        self._unhook_optimizer()
        self.backend.remove_hooks()
        old = self.session
        self.backend, self.session = self._make_backend(), None
        self._loop_step, self._versions, self._lean_now = 0, None, False
        if watching:
            self._hook_optimizer()
        else:
            self._drop_untrained_grads()
        when = "from the next iteration on" if watching else "from this iteration on"
        message = f"iteration {step}: {why}, so gdstep attached afresh {when} (its records and history start again)"
        if old is not None:
            old.log("info", message)
        self._moved_message = message
        print(f"gdstep: {message}", file=sys.stderr)
