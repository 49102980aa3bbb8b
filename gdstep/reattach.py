"""When the loop moves its model to another dtype or device mid-run (`model.double()`,
`model.to("cuda")`): the iterations before cannot be recomputed on it (their checkpoints and
batches hold the old dtype), so gdstep attaches afresh from there — new hooks, a new
session, the same breakpoints — and says so in one line. The same where, in watch mode, a
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

    def _attach_again(self, why: str, watching: bool, step: int | None = None) -> None:
        """gdstep's hooks off the old, a backend and (at the next iteration) a session for
        the model as it is now; `why` the iterations before cannot be gone back to; `step`
        the loop's iteration (where the session no longer stands there)."""
        if step is None:
            step = self._loop_step + 1 if self.session is None else self.session.step_count + 1
        self.backend.loop_goes_on()
        for h in self._step_hooks:
            h.remove()
        self._step_hooks = []
        self.backend.remove_hooks()
        old = self.session
        self.backend, self.session = self._make_backend(), None
        self._loop_step, self._versions, self._lean_now = 0, None, False
        when = "from the next iteration on" if watching else "from this iteration on"
        message = f"iteration {step}: {why}, so gdstep attached afresh {when} (its records and history start again)"
        if old is not None:
            old.log("info", message)
        self._moved_message = message
        print(f"gdstep: {message}", file=sys.stderr)
