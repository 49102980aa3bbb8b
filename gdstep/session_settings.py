"""The Session's settings and explanations: `set` (lr, optimizer, hyperparameters, batch
size from an iteration on), `set_stop_when`, and the per-value explanations (`explain`,
`chain_rule`, `gradcheck`). A mixin of `Session`: it uses the session's cursor, settings log
and timeline."""

from __future__ import annotations

from typing import Any

from gdstep import settings
from gdstep.errors import GdstepError


class SessionSettings:
    # -- settings ----------------------------------------------------------------------------

    def set(self, lr: float | None = None, optimizer: Any = None, batch_size: int | str | None = None,
            **hyperparameters: Any) -> int:
        """Change settings from the next iteration to start (this one, at a boundary).

        `optimizer` is a kind (`"adam"`) or an optimizer config: a new optimizer with fresh
        state and, unless `lr` is given, torch's default lr for its kind; extra keyword
        arguments are its hyperparameters. Hyperparameters alone (`momentum=0.5`) edit the
        optimizer in place and keep its state, as a torch `param_groups` edit does. A change
        made after a rewind starts a new branch: what was computed beyond this point is
        dropped. Returns the step the change takes effect at.
        """
        groups = self.backend.group_hyperparameters() if hasattr(self.backend, "group_hyperparameters") else None
        changes = settings.changes(self.optimizer, lr, optimizer, batch_size, param_groups=groups, **hyperparameters)
        at = self._step + (1 if self._phase else 0)
        fresh = self._step == 0 or "optimizer" in self._settings.at(at)      # no state yet to keep
        if "edit" in changes and not fresh:
            state = next(iter(self.backend.optimizer_state().values()), {})
            missing = settings.missing_state(changes["edit"], state)
            if missing:
                raise GdstepError(f"set {' '.join(hyperparameters)}: {self.optimizer.kind}'s state has no "
                                  f"{', '.join(missing)} to keep (torch's step would fail on it); start afresh with "
                                  f"set optimizer {self.optimizer.kind} " + " ".join(f"{k}={v}" for k, v in hyperparameters.items()))
        self._timeline.truncate_after(at)
        self._settings.record(at, changes)
        for key, value in changes.items():        # numbered as the app's "update 5" is (the phase bar's iter is an epoch's)
            self._log("setting", f"{key} → {settings.describe(key, value)} from update {at + 1} on (the next "
                                 "iteration to start)")
        return at

    def set_stop_when(self, condition: str | None) -> None:
        """Replace the scenario's stop_when (None: no stop condition) for the runs to come."""
        self.stop_when = None if condition is None else self._condition(condition)
        self._log("setting", f"stop_when → {self.stop_when.text if self.stop_when else 'none'}")

    # -- explanation --------------------------------------------------------------------------

    def explain(self, name: str, index: tuple[int, ...] | int):
        from gdstep.explain import explain
        return explain(self, name, _as_index(index))

    def chain_rule(self, name: str, index: tuple[int, ...] | int):
        from gdstep.explain import chain_rule
        return chain_rule(self, name, _as_index(index))

    def gradcheck(self, name: str, index: tuple[int, ...] | int, h: float | None = None):
        from gdstep.gradcheck import gradcheck
        result = gradcheck(self, name, _as_index(index), h)
        self._log("gradcheck", str(result))
        return result



def _as_index(index: tuple[int, ...] | int) -> tuple[int, ...]:
    if isinstance(index, int):
        return (index,)
    return tuple(int(i) for i in index)
