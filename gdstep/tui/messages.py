"""What the session worker tells the UI thread: a new frame, and a finished job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from textual.message import Message

from gdstep.tui.snapshot import Snapshot


@dataclass(frozen=True)
class Job:
    """One thing to do on the session, on the worker thread; `call(on_phase)` returns the
    script runner's Outcome."""

    text: str                                  # the command, as shown in the log
    call: Callable[[Callable[[], bool]], Any]
    kind: str = "command"                      # command | run (long: other keys wait) | refresh
    echo: bool = False                         # write the command and its output to the log
    gradcheck: str | None = None               # "2.weight[0,0]" for `g`


@dataclass
class Frame(Message):
    """A snapshot taken while a job runs (a few times a second)."""

    snapshot: Snapshot


@dataclass
class JobDone(Message):
    job: Job
    outcome: Any                               # gdstep.script.Outcome, or None after an error
    error: str | None                          # an exception that is not a user mistake
    snapshot: Snapshot | None
    position: int = 0
