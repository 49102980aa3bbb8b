"""The top line: the four phases with the next one highlighted, where training stands, the
loss and its change, the learning rate, the backend, and whether a run is going."""

from __future__ import annotations

import math

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from gdstep.fmt import hp, num
from gdstep.records import PHASES
from gdstep.tui.frame import Frame


class PhaseBar(Static):
    COMPONENT_CLASSES = {
        "phase-bar--done",
        "phase-bar--next",
        "phase-bar--pending",
        "phase-bar--label",
        "phase-bar--better",
        "phase-bar--worse",
        "phase-bar--running",
        "phase-bar--paused",
    }

    frame: reactive[Frame | None] = reactive(None, layout=False)
    running: reactive[bool] = reactive(False, layout=False)

    def render(self) -> Text:
        snap = self.frame
        out = Text(no_wrap=True, overflow="crop")
        if snap is None:
            return out
        style = self.get_component_rich_style
        label = style("phase-bar--label")
        if self.running:
            out.append("● running", style=style("phase-bar--running"))
        else:
            out.append("‖ paused ", style=style("phase-bar--paused"))
        out.append("   ")
        due = PHASES.index(snap.phase_due)
        for k, phase in enumerate(PHASES):
            if k:
                out.append(" → ", style=label)
            kind = "next" if k == due else ("done" if k < due else "pending")
            out.append(f" {phase} " if kind == "next" else phase, style=style(f"phase-bar--{kind}"))
        c = snap.cursor
        out.append("   ")
        if snap.loop:       # attach mode: the user's loop, one batch an iteration
            out.append_text(Text.assemble(("loop iteration ", label), str(snap.step + (snap.phase_due != "forward") or 1),
                                          (" · step ", label), str(snap.step)))
        else:
            out.append_text(Text.assemble(("epoch ", label), str(c.epoch), (" · iter ", label),
                                          f"{c.iteration}/{snap.iterations_per_epoch}", (" · step ", label), str(snap.step)))
        out.append("\n")
        parts = [
            self._loss(snap, label),
            Text.assemble(("lr ", label), hp(snap.lr), (" · ", label), snap.optimizer),
            Text.assemble(snap.backend, (" · ", label), snap.device, (" · ", label), snap.dtype),
        ]
        if snap.breakpoints:
            n = len(snap.breakpoints)
            parts.append(Text(f"{n} breakpoint{'s' if n != 1 else ''}", style=label))
        parts.append(Text(snap.scenario, style=label))
        for k, part in enumerate(parts):
            if k:
                out.append("  │  ", style=label)
            out.append_text(part)
        return out

    def _loss(self, snap: Frame, label) -> Text:
        text = Text.assemble(("loss ", label), num(snap.loss) if snap.loss is not None else "–")
        change = snap.loss_change
        if change is not None and math.isfinite(change):
            arrow = "▲" if change > 0 else "▼" if change < 0 else "="
            text.append(f" {arrow}{num(abs(change))}",
                        style=self.get_component_rich_style("phase-bar--worse" if change > 0 else "phase-bar--better"))
        return text
