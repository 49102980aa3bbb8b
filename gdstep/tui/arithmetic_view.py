"""The arithmetic of the selected element: after update `W_new = W_old − η·∇L` in the
optimizer's own terms with the real numbers (Explanation.lines), after backward the chain
rule that made its gradient (ChainRule.lines); the optimizer state of that element; and,
after `g`, the gradient check, analytic beside numeric."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from gdstep.fmt import index_text, num
from gdstep.gradcheck import GradCheck
from gdstep.tui.frame import Arithmetic


@dataclass(frozen=True)
class GradcheckView:
    label: str            # "2.weight[0,0]"
    analytic: float
    numeric: float
    rel_error: float
    ok: bool
    position: int         # the session's position when it was checked: stale after a change
    verdict: str = "ok"   # ok | MISMATCH | kink within ±h
    h: float = 0.0
    tolerance: float = 0.0

    @classmethod
    def of(cls, check: GradCheck, position: int) -> "GradcheckView":
        return cls(f"{check.name}{index_text(check.index)}", float(check.analytic), float(check.numeric),
                   float(check.rel_error), bool(check.ok), position, check.verdict, float(check.h),
                   float(check.tolerance))


class ArithmeticView(Static):
    COMPONENT_CLASSES = {
        "arithmetic-view--result",
        "arithmetic-view--label",
        "arithmetic-view--ok",
        "arithmetic-view--bad",
    }

    arithmetic: reactive[Arithmetic | None] = reactive(None)
    gradcheck: reactive[GradcheckView | None] = reactive(None)
    _height = 0

    def _relayout(self) -> None:
        """A new layout only when the text's height changed (a run redraws it often)."""
        a, g = self.arithmetic, self.gradcheck
        height = (len(a.lines) + len(a.state) if a else 0) + (4 if g else 0)
        if height != self._height:
            self._height = height
            self.refresh(layout=True)

    def watch_arithmetic(self) -> None:
        self._relayout()

    def watch_gradcheck(self) -> None:
        self._relayout()

    @property
    def lines(self) -> tuple[str, ...]:
        """The formula lines shown, as plain text (what tests compare with explain())."""
        return self.arithmetic.lines if self.arithmetic else ()

    def render(self) -> Text:
        style = self.get_component_rich_style
        label = style("arithmetic-view--label")
        out = Text()
        a = self.arithmetic
        if a is not None:
            for line in a.lines:
                result = line.startswith("W_new") or (a.mode == "chain" and line.startswith("  = ") and line is a.lines[2])
                out.append(line + "\n", style=style("arithmetic-view--result") if result else "")
            if a.state:
                out.append("\n")
                for line in a.state:
                    out.append(line + "\n", style=label if not line.startswith("  ") else "")
        g = self.gradcheck
        if g is not None:
            out.append("\n")
            out.append(f"gradient check {g.label}", style=label)
            out.append(f" (central differences, h = {g.h:.2g}, this batch)\n", style=label)
            out.append("  analytic ", style=label)
            out.append(f"{num(g.analytic):>14}")
            out.append("   numeric ", style=label)
            out.append(f"{num(g.numeric):>14}\n")
            out.append("  relative error ", style=label)
            out.append(f"{g.rel_error:.2e}  ")
            out.append(g.verdict, style=style("arithmetic-view--ok" if g.ok else "arithmetic-view--bad"))
            if g.ok and g.tolerance > 0.1 * max(abs(g.analytic), abs(g.numeric)):
                out.append(f" (to ± {g.tolerance:.1e})", style=label)
            elif not g.ok and "kink" in g.verdict:
                out.append(" (a ReLU/abs/max boundary lies within the step)", style=label)
        out.rstrip()
        return out
