"""What the driver asks of the worker (a Job) and tells the app (FrameReady, JobDone,
Running)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from textual.message import Message

from gdstep.tui.frame import Frame

OnPhase = Callable[[], bool]


@dataclass(frozen=True)
class Job:
    """One thing to do on the session, on the worker thread; `call(on_phase)` returns the
    script runner's Outcome (None for a redraw)."""

    text: str                                  # the command, as shown in the log
    call: Callable[[OnPhase], Any]
    kind: str = "command"                      # command | run (long: other keys wait) | redraw | picture
    echo: bool = False                         # write the command and its output to the log

    @property
    def user(self) -> bool:
        """Asked for by the user: it counts while the app says it is running."""
        return self.kind not in ("redraw", "picture")


@dataclass
class FrameReady(Message):
    """A Frame to draw: while a job runs (a few times a second), or after a redraw."""

    frame: Frame


@dataclass
class JobStarted(Message):
    """A job the log echoes is about to run: its command goes in the log before its events."""

    job: Job
    when: float                                # time.time() when it started (Message has its own `time`)


@dataclass
class JobDone(Message):
    """A job has run; the frame after it (None if even that failed)."""

    job: Job
    outcome: Any                               # gdstep.script.Outcome, or None after an error
    error: str | None                          # an exception that is not a user mistake
    frame: Frame | None


@dataclass
class Running(Message):
    """The user's jobs are not all done (True), or they are (False)."""

    running: bool
