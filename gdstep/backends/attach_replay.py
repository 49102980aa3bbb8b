"""Never silently different numbers: an iteration recomputed for a rewind (or for records on
demand) is compared with its first computation, or with what the loop itself computed.

Each iteration gets a fingerprint of what it starts from: the fingerprint of the one before,
the batch, the optimizer and every param group's hyperparameters. A value (the loss, the
squared gradient norm) computed again under the same fingerprint must be the same to the bit;
when it is not, gdstep cannot replay that iteration exactly (a random number generator it does
not own, a non-deterministic op, a batch changed in place since, a loss that is not
`loss_fn(output, y)`), and says so: an "inexact" event in the session's log and
`session.replay_inexact`, a line the phase bar shows. A change made in the debugger (a new lr,
a new optimizer) gives the iterations after it new fingerprints: those are new numbers, not
replays.
"""

from __future__ import annotations

import math
import sys
from typing import Any

WINDOW = 4096       # iterations whose first values are kept for comparison


class ReplayCheck:
    """Mixed into UserModuleBackend (it provides `_updates` and the torch optimizer)."""

    def _init_replay(self) -> None:
        self._fingerprints: dict[int, int] = {}
        self._seen: dict[tuple[int, str], tuple[int, float]] = {}
        self._generation = 0
        self._batch_id: Any = None
        self._session = None
        self._announced: set = set()
        self.inexact: list[tuple[int, str]] = []       # (step, message) of every difference found
        self.differed: set[int] = set()                 # steps found different since the owner last cleared it

    def bind_session(self, session) -> None:
        """The Session whose event log hears about differences."""
        self._session = session

    def _note_forward(self) -> None:
        """A new fingerprint for the iteration starting now."""
        step = self._updates
        before = self._fingerprints.get(step - 1, 0) if step else 0
        self._fingerprints[step] = hash((before, self._generation, self._batch_id, type(self.torch_optimizer),
                                         _groups_key(self.torch_optimizer.param_groups)))
        if step % 1024 == 0 and step > WINDOW:
            old = step - WINDOW
            self._fingerprints = {k: v for k, v in self._fingerprints.items() if k >= old}
            self._seen = {k: v for k, v in self._seen.items() if k[0] >= old}
            for kept in (getattr(self, "lr_history", None), getattr(self, "_groups_at", None)):
                if kept is not None and len(kept) > 16 * WINDOW:
                    for k in [k for k in kept if k < step - 16 * WINDOW]:
                        del kept[k]

    def _new_branch(self) -> None:
        """A fresh optimizer: what follows is new, not a replay."""
        self._generation += 1

    def _check_replay(self, what: str, value: float) -> None:
        step = self._updates
        fingerprint = self._fingerprints.get(step)
        if fingerprint is None:
            return
        key = (step, what)
        seen = self._seen.get(key)
        if seen is None or seen[0] != fingerprint:
            self._seen[key] = (fingerprint, value)
            return
        first = seen[1]
        if first == value or (math.isnan(first) and math.isnan(value)):
            return
        self.differed.add(step)
        label = "loss" if what == "loss" else "‖∇L‖²"
        self._announce(step, f"iteration {step + 1} recomputed is not what was first computed: {label} {value!r}, "
                             f"first {first!r} — {self._replay_hint(step)}; the numbers shown for it are the recomputed ones",
                       kind="recomputed")

    def _replay_hint(self, step: int) -> str:
        return ("a random number generator gdstep does not own (numpy, random, a torch.Generator) "
                "or a non-deterministic op")

    def _announce(self, step: int, message: str, inexact: bool = True, kind: str | None = None) -> None:
        """Say `message` of iteration `step` once (again for the same step, or of the same
        `kind`, it is not repeated): an `inexact` event, or an info one."""
        key = (step, kind or message)
        if key in self._announced:
            return
        self._announced.add(key)
        if inexact:
            self.inexact.append((step, message))
        s = self._session
        if s is not None:
            if inexact and s.replay_inexact is None:     # the first: later ones often follow from it
                s.replay_inexact = message
            s.log("inexact" if inexact else "info", message)


def compiled_anything() -> bool:
    """Whether torch.compile compiled a frame in this process (torch.optim imports torch._dynamo)."""
    dynamo = sys.modules.get("torch._dynamo.utils")
    return dynamo is not None and bool(dynamo.counters.get("frames", {}).get("ok"))


def _groups_key(groups) -> tuple:
    """The groups' hyperparameters, hashable (a tensor lr by its value)."""
    key = []
    for g in groups:
        for k, v in g.items():
            if k == "params":
                continue
            if hasattr(v, "data_ptr"):
                v = tuple(v.reshape(-1).tolist()) if v.numel() <= 4 else id(v)
            elif isinstance(v, list):
                v = repr(v)
            key.append((k, v))
    try:
        hash(tuple(key))
    except TypeError:
        return tuple((k, repr(v)) for k, v in key)
    return tuple(key)
