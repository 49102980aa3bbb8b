"""Breakpoints: numbered conditions, each checked only after the phases whose values it reads.

One registry serves the Session's runs and attach mode's watched phases, so a breakpoint
fires, counts its hits and words its event the same way wherever it is checked. It also
holds what the user dismissed at a pause ("don't break on this again"): a breakpoint is
disabled; non-finite values stop opening the debugger from the training loop (attach
mode), while a run inside the debugger still pauses on them, state kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gdstep.conditions import Condition, Context
from gdstep.errors import GdstepError
from gdstep.records import PHASES


@dataclass
class Breakpoint:
    id: int
    condition: Condition
    enabled: bool = True
    hits: int = 0

    @property
    def text(self) -> str:
        return self.condition.text

    def hit_message(self, context: Context) -> str:
        return f"breakpoint {self.id} hit: {self.text} ({self.condition.describe(context)})"


class Breakpoints(Sequence):
    """The breakpoints in the order they were set, with ids that are never reused."""

    def __init__(self) -> None:
        self._items: list[Breakpoint] = []
        self._next_id = 1
        self._by_phase: dict[str, tuple[Breakpoint, ...]] = {p: () for p in PHASES}
        self.last_hit: Breakpoint | None = None
        self.nonfinite_dismissed = False

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i):
        return self._items[i]

    def __iter__(self):
        return iter(self._items)

    def checked_after(self, phase: str) -> bool:
        """Whether an enabled breakpoint reads the values of `phase`."""
        return any(bp.enabled for bp in self._by_phase[phase])

    def __repr__(self) -> str:
        return f"Breakpoints({[f'{bp.id}: {bp.text}' for bp in self._items]})"

    def copy(self) -> "Breakpoints":
        """The same breakpoints (ids, enabled, hit counts) in a registry of their own."""
        twin = Breakpoints()
        twin._items = [Breakpoint(bp.id, bp.condition, bp.enabled, bp.hits) for bp in self._items]
        twin._next_id = self._next_id
        twin.nonfinite_dismissed = self.nonfinite_dismissed
        twin._index()
        return twin

    def add(self, condition: Condition) -> Breakpoint:
        bp = Breakpoint(self._next_id, condition)
        self._next_id += 1
        self._items.append(bp)
        self._index()
        return bp

    def remove(self, id: int) -> Breakpoint:
        for bp in self._items:
            if bp.id == id:
                self._items.remove(bp)
                self._index()
                return bp
        raise GdstepError(f"no breakpoint {id} (breakpoints: {', '.join(str(b.id) for b in self._items) or 'none'})")

    def _index(self) -> None:
        self._by_phase = {p: tuple(bp for bp in self._items if p in bp.condition.phases) for p in PHASES}

    def first_hit(self, context: Context, phase: str) -> Breakpoint | None:
        """The first enabled breakpoint that holds after `phase` (its hit counted), or None."""
        for bp in self._by_phase[phase]:
            if bp.enabled and bp.condition(context):
                bp.hits += 1
                self.last_hit = bp
                return bp
        return None

    def enabled_after(self, phase: str) -> list[Condition]:
        """The conditions of the enabled breakpoints checked after `phase`, in order."""
        return [bp.condition for bp in self._by_phase[phase] if bp.enabled]

    def dismiss(self, what: str | int) -> str:
        """Break no more on `what`: "nan" (a non-finite value) or a breakpoint's id. Returns
        the line for the event log."""
        if what in ("nan", "nonfinite"):
            self.nonfinite_dismissed = True
            return "non-finite values: the training loop no longer opens the debugger on them"
        for bp in self._items:
            if bp.id == what:
                bp.enabled = False
                return f"breakpoint {bp.id} disabled: {bp.text} (no more breaks on it)"
        raise GdstepError(f"no breakpoint {what} (breakpoints: {', '.join(str(b.id) for b in self._items) or 'none'})")

    def breaks_on(self, reason: str) -> bool:
        """Whether a pause of this kind ("nonfinite", "breakpoint") still opens the debugger."""
        return not (reason == "nonfinite" and self.nonfinite_dismissed)


def dismiss_last_break(session) -> None:
    """At a pause: break no more on what caused it (the latest breakpoint or non-finite
    event). The event log says what was dismissed, or why nothing was (the key `x`)."""
    registry = session.breakpoints
    kind, message = "error", "nothing to dismiss: no breakpoint or non-finite value has paused here"
    for event in reversed(session.events):
        if event.kind == "nonfinite" and not registry.nonfinite_dismissed:
            if session.attached:
                kind, message = "setting", registry.dismiss("nan")
            else:
                message = "a non-finite value always pauses a run here; x dismisses it only in attach mode"
            break
        if event.kind == "breakpoint" and registry.last_hit is not None and registry.last_hit.enabled:
            kind, message = "setting", registry.dismiss(registry.last_hit.id)
            break
    session.log(kind, message)
