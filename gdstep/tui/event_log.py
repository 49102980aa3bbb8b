"""The event log: the session's events (breakpoints, non-finite values, replays that are not
exact, settings, rewinds, gradient checks), the commands typed and their output, and the
app's own errors."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import RichLog

from gdstep.records import Event

KINDS = ("breakpoint", "nonfinite", "inexact", "setting", "stop", "rewind", "gradcheck", "error", "info", "expect",
         "command", "output")
SAID = ("set", "back", "break", "unbreak", "gradcheck")     # their session event says it: no output line


class EventLog(RichLog):
    COMPONENT_CLASSES = {"event-log--time", "event-log--step"} | {f"event-log--{kind}" for kind in KINDS}

    def __init__(self, *, timestamps: bool = True, id: str | None = None) -> None:
        # min_width: RichLog's default (78) is wider than the log at 80 columns: it would
        # scroll sideways instead of wrapping
        super().__init__(id=id, wrap=True, markup=False, highlight=False, max_lines=2000, auto_scroll=True,
                         min_width=20)
        self.timestamps = timestamps
        self.messages: list[tuple[str, str]] = []      # (kind, message), for tests and copying
        self.times: list[float] = []                   # when each happened, in the order listed
        self._why_inexact: str | None = None           # the reason the last "inexact" event gave
        self._entries: list[tuple[str, str, float, int | None]] = []   # (kind, message, when, step)
        self._wrapped_at = 0                           # the width the lines were wrapped to
        self._latest_from = 0                          # the latest entry's first line, counted from the first ever
        self._from_start = False                       # show_latest_from_its_start holds until the next entry

    def on_resize(self) -> None:
        self.call_after_refresh(self._rewrap)

    def _width(self) -> int:
        """The text's width: the content less the vertical scrollbar's column, whether it shows
        or not (a line as wide as the log before the scrollbar came would scroll sideways)."""
        return max(self.min_width, self.content_region.width - self.styles.scrollbar_size_vertical)

    def _rewrap(self) -> None:
        """Every line wrapped again at the log's width: RichLog keeps a line as first wrapped,
        so a log made narrower scrolled sideways, and one line high its scrollbar hid the text."""
        if not self._size_known:
            return
        if self._width() != self._wrapped_at:
            self._wrapped_at = self._width()
            self.clear()
            for entry in self._entries:
                self._latest_from = len(self.lines) + self._start_line
                self.write(self._line(*entry), width=self._wrapped_at, scroll_end=True)
        if self._from_start:                           # resized: the latest entry from its start again
            self.call_after_refresh(self.show_latest_from_its_start)

    def show_latest_from_its_start(self) -> None:
        """Scroll back to the latest entry's first line when it wraps over more lines than the
        log shows: a log one line high would show only the tail of a wrapped sentence. Holds
        until the next entry (a resize scrolls back again)."""
        self._from_start = True
        self.call_after_refresh(self._scroll_to_latest)     # after the scroll to the end its writes asked for

    def _scroll_to_latest(self) -> None:
        first = self._latest_from - self._start_line
        if self._from_start and self._size_known and 0 <= first < len(self.lines) - self.scrollable_content_region.height:
            self.scroll_to(y=first, animate=False, immediate=True)

    def add_event(self, event: Event) -> None:
        message = event.message
        if event.kind == "inexact" and " — " in message:      # the same reason again: said once, above
            what, why = message.split(" — ", 1)
            message, self._why_inexact = (f"{what} (why: as above)" if why == self._why_inexact else message), why
        self._add(event.kind, message, event.time, event.step)

    def add_outcome(self, text: str, outcome, *, echo: bool, run: bool) -> None:
        """What a command did (a script Outcome): a mistake always; with `echo` (typed at the
        prompt) its output; else a run that stopped short of its goal."""
        if not outcome.ok:
            self.add("expect" if outcome.failed_expect else "error", outcome.message)
        elif echo:
            said = text.lstrip(":").split(" ", 1)[0] in SAID
            for line in outcome.lines[1:] if said else outcome.lines:
                self.add("output", line)
        elif run and outcome.result is not None and outcome.result.reason in ("paused", "epochs", "max_steps"):
            self.add("info", outcome.lines[0])

    def add(self, kind: str, message: str, step: int | None = None, when: float | None = None) -> None:
        self._add(kind, message, time.time() if when is None else when, step)

    def _add(self, kind: str, message: str, when: float, step: int | None) -> None:
        self.messages.append((kind, message))
        self.times.append(when)
        self._entries.append((kind, message, when, step))
        del self._entries[:-self.max_lines]
        self._latest_from = len(self.lines) + self._start_line
        self._from_start = False
        self.write(self._line(kind, message, when, step), width=self._wrapped_at or None)

    def _line(self, kind: str, message: str, when: float, step: int | None) -> Text:
        style = self.get_component_rich_style
        line = Text()
        if self.timestamps:
            line.append(time.strftime("%H:%M:%S ", time.localtime(when)), style=style("event-log--time"))
        if step is not None:
            line.append(f"#{step:<5}", style=style("event-log--step"))
        tag = kind if kind in KINDS else "info"
        if kind not in ("command", "output"):
            line.append(f"{kind:<10} ", style=style(f"event-log--{tag}"))
            if message.startswith(kind + " "):          # "breakpoint 1 hit": the kind is said once
                message = message[len(kind) + 1:]
        line.append(message, style=style(f"event-log--{tag}") if kind in ("command", "error", "nonfinite", "inexact")
                    else "")
        return line
