"""The `:` command prompt: one line of the script language, with history (up/down) and
completion (Tab)."""

from __future__ import annotations

from typing import Callable

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input, Static


class PromptHistory:
    """Lines entered, with a cursor: `back()` and `forward()` return whether they moved."""

    def __init__(self, limit: int = 500):
        self.lines: list[str] = []
        self.limit = limit
        self._cursor = 0
        self._draft = ""

    def add(self, line: str) -> None:
        line = line.strip()
        if line and (not self.lines or self.lines[-1] != line):
            self.lines.append(line)
            del self.lines[:-self.limit]
        self._cursor = len(self.lines)
        self._draft = ""

    @property
    def current(self) -> str:
        return self.lines[self._cursor] if self._cursor < len(self.lines) else self._draft

    def back(self, draft: str) -> bool:
        if self._cursor == 0:
            return False
        if self._cursor == len(self.lines):
            self._draft = draft
        self._cursor -= 1
        return True

    def forward(self) -> bool:
        if self._cursor >= len(self.lines):
            return False
        self._cursor += 1
        return True


class CompletionList(Static):
    """The candidates of the last Tab, above the prompt (not over it), wrapped to the width;
    gone once the line is edited to something else or the prompt closes."""

    def show(self, choices: list[str], current: str) -> None:
        if len(choices) < 2:
            self.remove_class("-open")
            return
        words = [c.rsplit(" ", 1)[-1] or c for c in choices]
        shown = [f"[reverse]{w}[/]" if c == current else w for c, w in zip(choices, words)]
        self.update("  ".join(shown))
        self.add_class("-open")


class CommandPrompt(Input):
    BINDINGS = [
        Binding("up", "history_back", "Previous command", show=False),
        Binding("down", "history_forward", "Next command", show=False),
        Binding("tab", "complete", "Complete", show=False),
        Binding("escape", "close", "Close the prompt", show=False),
    ]

    class Closed(Message):
        """Escape: hide the prompt."""

    class Choices(Message):
        """The completions to list (none: hide the list)."""

        def __init__(self, choices: list[str], current: str) -> None:
            self.choices = choices
            self.current = current
            super().__init__()

    def __init__(self, complete: Callable[[str], list[str]], *, id: str | None = None) -> None:
        super().__init__(placeholder="step 3 · run until loss < 0.1 · set lr 0.1 · break loss > prev_loss · "
                                     "print 2.weight[0,1] · back 2 · save FILE.gds   (Tab completes)", id=id,
                         select_on_focus=False)   # a pre-filled line (w, the palette) is to be edited, not replaced
        self.history = PromptHistory()
        self._complete = complete
        self._choices: list[str] = []
        self._choice = -1

    @property
    def is_open(self) -> bool:
        return self.has_class("-open")

    def open(self, text: str = "") -> None:
        """Show the prompt, filled with `text` to edit, the cursor at its end."""
        self.add_class("-open")
        self.value = text
        self.cursor_position = len(text)
        self.focus()

    def close(self) -> None:
        self.remove_class("-open")
        self._show_choices([])

    def _show_choices(self, choices: list[str]) -> None:
        self._choices = choices
        self.post_message(self.Choices(list(choices), self.value))

    def _on_input_changed(self, event: Input.Changed) -> None:
        """An edit that is not one of the candidates ends the listing."""
        if self._choices and event.value not in self._choices and event.value != _common_prefix(self._choices):
            self._show_choices([])

    async def take_key(self, event, focused) -> None:
        """A key that reached the app while the prompt is open, typed for the prompt ahead of
        the focus: a printable key goes in; enter and backspace do what they do here (the
        prompt's own printable keys never get to the app)."""
        if event.is_printable:
            event.stop()
            self.insert_text_at_cursor(event.character)
        elif focused is not self and event.key in ("enter", "backspace"):
            event.stop()
            if event.key == "enter":
                await self.action_submit()
            else:
                self.action_delete_left()

    def action_history_back(self) -> None:
        if self.history.back(self.value):
            self._set(self.history.current)

    def action_history_forward(self) -> None:
        if self.history.forward():
            self._set(self.history.current)

    def action_complete(self) -> None:
        """Complete to the longest common prefix; pressing Tab again cycles the candidates,
        listed above the prompt."""
        if self._choices and self.value in self._choices:
            self._choice = (self._choices.index(self.value) + 1) % len(self._choices)
            self._set(self._choices[self._choice], keep_choices=True)
            self._show_choices(self._choices)
            return
        choices = self._complete(self.value)
        if not choices:
            self._show_choices([])
            self.app.bell()
            return
        self._choices = choices
        prefix = _common_prefix(choices)
        if len(choices) == 1:
            self._set(choices[0] + " ", keep_choices=False)
        elif len(prefix) > len(self.value):
            self._set(prefix, keep_choices=True)
        else:
            self._set(choices[0], keep_choices=True)
        self._show_choices(self._choices)

    def action_close(self) -> None:
        self.post_message(self.Closed())

    async def action_submit(self) -> None:
        """Enter: empty and close the prompt now, then post the line. Keys typed right after
        enter (a burst from the terminal) then find the prompt closed, as they would have had
        the command been typed slowly."""
        text = self.value
        self.value = ""
        self.remove_class("-open")
        self.post_message(self.Submitted(self, text))

    def _set(self, text: str, keep_choices: bool = False) -> None:
        if not keep_choices and self._choices:
            self._show_choices([])
        self.value = text
        self.cursor_position = len(text)


class PromptFirst:
    """For the App: while the prompt is open, keys are the prompt's.

    Keys arrive in a burst: `:` opens the prompt and moves the focus while the keys after it
    already wait in the old focus's queue, then bubble up to the app. While the prompt is
    open the app's single-key bindings are off, so they cannot step or run; a key that still
    reaches the app was typed for the prompt (`CommandPrompt.take_key`)."""

    def _open_prompt(self) -> CommandPrompt | None:
        prompt = next(iter(self.query(CommandPrompt).results()), None)     # none on the help screen
        return prompt if prompt is not None and prompt.is_open else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action not in ("quit", "command_palette") and self._open_prompt() is not None:
            return not any(action == b.action.split("(")[0] for b in self.BINDINGS if isinstance(b, Binding))
        return True

    async def on_key(self, event) -> None:
        prompt = self._open_prompt()
        if prompt is not None:
            await prompt.take_key(event, focused=self.focused)


def _common_prefix(words: list[str]) -> str:
    if not words:
        return ""
    first, last = min(words), max(words)
    i = 0
    while i < min(len(first), len(last)) and first[i] == last[i]:
        i += 1
    return first[:i]
