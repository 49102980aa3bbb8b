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

    @property
    def finished(self) -> bool:
        return self.step >= self.total


class Narration(Static):
    COMPONENT_CLASSES = {"narration--problem", "narration--hint"}

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

    def render(self) -> Text:
        state = self.state
        if state is None:
            return Text()
        text = Text(state.text or ("…" if state.busy else "Press space (or →) to begin."))
        if state.finished and not state.away and state.total:
            text.append("\n(The lesson is over. Everything still works: step, rewind, :commands.)",
                        style=self.get_component_rich_style("narration--hint"))
        for problem in state.problems:
            text.append(f"\n{problem}", style=self.get_component_rich_style("narration--problem"))
        return text
