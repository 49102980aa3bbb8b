"""The top line: the four phases with the next one highlighted, where training stands, the
loss and its change, the learning rate in force for the shown iteration (each param group's,
and the scheduler that sets it), the backend, whether a run is going, and a flag when a
recomputed iteration was not what was first computed (replay inexact)."""

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
        "phase-bar--inexact",
    }

    frame: reactive[Frame | None] = reactive(None, layout=False)
    running: reactive[bool] = reactive(False, layout=False)

    def render(self) -> Text:
        """Two lines, each cut to the width: where training stands, then the numbers. When a
        line would not fit it is written shorter (no wrapping pushes the numbers off)."""
        snap = self.frame
        if snap is None:
            return Text()
        width = max(1, self.content_size.width or self.size.width or 120)
        first = self._position(snap, compact=False)
        if first.cell_len > width:
            first = self._position(snap, compact=True)
        second = self._numbers(snap, compact=False)
        if second.cell_len > width:
            second = self._numbers(snap, compact=True)
        for line in (first, second):
            line.truncate(width, overflow="ellipsis")
        return Text("\n", no_wrap=True, overflow="crop").join([first, second])

    def _position(self, snap: Frame, compact: bool) -> Text:
        style = self.get_component_rich_style
        label = style("phase-bar--label")
        out = Text(no_wrap=True, overflow="crop")
        if self.running:
            out.append("●" if compact else "● running", style=style("phase-bar--running"))
        else:
            out.append("‖" if compact else "‖ paused ", style=style("phase-bar--paused"))
        if snap.inexact:        # the reason is in the event log (an "inexact" event)
            out.append(" ⚠ inexact" if compact else "  ⚠ replay inexact", style=style("phase-bar--inexact"))
        out.append(" " if compact else "   ")
        due = PHASES.index(snap.phase_due)
        for k, phase in enumerate(PHASES):
            if k:
                out.append("→" if compact else " → ", style=label)
            kind = "next" if k == due else ("done" if k < due else "pending")
            out.append(f" {phase} " if kind == "next" else phase, style=style(f"phase-bar--{kind}"))
        c = snap.cursor
        out.append("  " if compact else "   ")
        dot = "·" if compact else " · "
        if snap.loop:       # attach mode: the user's loop, one batch an iteration
            out.append_text(Text.assemble(("loop iteration ", label), str(snap.step + (snap.phase_due != "forward") or 1),
                                          (f"{dot}step ", label), str(snap.step)))
        else:
            out.append_text(Text.assemble(("ep " if compact else "epoch ", label), str(c.epoch),
                                          (f"{dot}it " if compact else f"{dot}iter ", label),
                                          f"{c.iteration}/{snap.iterations_per_epoch}", (f"{dot}step ", label),
                                          str(snap.step)))
        return out

    def _numbers(self, snap: Frame, compact: bool) -> Text:
        label = self.get_component_rich_style("phase-bar--label")
        parts = [
            self._loss(snap, label),
            self._lr(snap, label, compact),
            Text.assemble(snap.backend, (" · ", label), snap.device, (" · ", label), snap.dtype),
        ]
        if snap.breakpoints:
            n = len(snap.breakpoints)
            parts.append(Text(f"{n} bp" if compact else f"{n} breakpoint{'s' if n != 1 else ''}", style=label))
        if not compact:
            parts.append(Text(snap.scenario, style=label))
        out = Text(no_wrap=True, overflow="crop")
        for k, part in enumerate(parts):
            if k:
                out.append(" │ " if compact else "  │  ", style=label)
            out.append_text(part)
        return out

    @staticmethod
    def _lr(snap: Frame, label, compact: bool) -> Text:
        """The lr in force: one value, or each param group's; the scheduler that sets it."""
        lrs = snap.lrs or (snap.lr,)
        text = Text.assemble(("lr ", label))
        if len(lrs) == 1:
            text.append(hp(lrs[0]))
        else:
            shown = [hp(v) if compact else f"g{i} {hp(v)}" for i, v in enumerate(lrs[:4])]
            text.append(("/" if compact else ", ").join(shown) + ("…" if len(lrs) > 4 else ""))
        if snap.scheduler:
            text.append(f" {snap.scheduler}" if compact else f" ({snap.scheduler})", style=label)
        text.append_text(Text.assemble((" · ", label), snap.optimizer))
        return text

    def _loss(self, snap: Frame, label) -> Text:
        text = Text.assemble(("loss ", label), num(snap.loss) if snap.loss is not None else "–")
        change = snap.loss_change
        if change is not None and math.isfinite(change):
            arrow = "▲" if change > 0 else "▼" if change < 0 else "="
            text.append(f" {arrow}{num(abs(change))}",
                        style=self.get_component_rich_style("phase-bar--worse" if change > 0 else "phase-bar--better"))
        return text
