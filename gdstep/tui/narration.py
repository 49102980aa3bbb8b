"""The narration pane of lesson mode: the lesson's latest `say`, where the lesson is
("3 of 9"), and what space does now (the next step, or back to the lesson)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static


@dataclass(frozen=True)
class NarrationState:
    title: str                  # the lesson's title
    text: str                   # the latest say
    step: int
    total: int
    away: bool = False          # the learner is exploring
    busy: bool = False          # a step is running
    problems: tuple[str, ...] = ()
    earlier: int = 0            # 0: the latest say; k: the one k steps before it (h)
    opening: str = ""           # the scenario's description, above the lesson's first say

    @property
    def finished(self) -> bool:
        return self.step >= self.total


class Narration(Static):
    COMPONENT_CLASSES = {"narration--problem", "narration--hint", "narration--opening"}

    state: reactive[NarrationState | None] = reactive(None, layout=True)

    def watch_state(self, state: NarrationState | None) -> None:
        # Textual caches the content height per width: a new text of the same width would
        # keep the old height (the first say shown as one line), so forget it on each change.
        self.clear_cached_dimensions()
        self.refresh(layout=True)
        if state is None:
            return
        where = "end of the lesson" if state.finished and not state.away else f"{state.step} of {state.total}"
        self.border_title = f"{state.title} · {where}"
        if state.earlier and not state.busy:
            self.border_title = f"{state.title} · said at step {state.step - state.earlier} of {state.total}"
            self.border_subtitle = "h further back · space/→ the lesson"
        elif state.busy:
            self.border_subtitle = "running…"
        elif state.away:
            self.border_subtitle = f"exploring · space/→ back to the lesson at {state.step} of {state.total}"
        elif state.finished:
            self.border_subtitle = "the lesson is over · keep exploring, q quits"
        else:
            self.border_subtitle = "space/→ next · other keys explore"
        self.set_class(state.away, "-away")

    def get_content_height(self, container, viewport, width: int) -> int:
        self._width = width                     # the width the text is measured at (_fits)
        return super().get_content_height(container, viewport, width)

    def _fits(self, text: Text) -> bool:
        """Whether `text` fits the pane's most lines (max-height less the border) unscrolled."""
        width = getattr(self, "_width", 0) or self.content_region.width
        most = self.styles.max_height
        if not width or most is None or not most.is_cells:
            return True
        return len(text.wrap(self.app.console, width)) <= int(most.value) - 2

    def render(self) -> Text:
        state = self.state
        if state is None:
            return Text()
        text = Text(state.text or ("…" if state.busy else "Press space (or →) to begin."))
        if state.opening:                       # above the first say, where both fit (the log has it too)
            both = Text.assemble((state.opening, self.get_component_rich_style("narration--opening")), "\n", text)
            text = both if self._fits(both) else text
        if state.finished and not state.away and state.total:
            text.append("\n(The lesson is over. Everything still works: step, rewind, :commands.)",
                        style=self.get_component_rich_style("narration--hint"))
        for problem in state.problems:
            text.append(f"\n{problem}", style=self.get_component_rich_style("narration--problem"))
        return text
