"""One debugger, every rank in step: what the debugging rank does to its session, every
other rank does to its own.

On the debugging rank the handler (the app, a function, the break file) gets a `Mirrored`
session: a call that moves or changes the training (`step`, `back`, `set lr`, …) is first
posted to the other ranks, then run; `follow` on each other rank runs the same call on its
own session (its own batches, the same settings), so every gradient all-reduce has all
ranks in it and the replicas stay identical. Runs go through `lockstep_run`. A callback the
app passes (its pause key) is asked on the debugging rank only; its answers travel with the
messages. Reads are answered by the debugging rank's own session: they involve no other
rank (its records are full, and side computations use the wrapped module).
"""

from __future__ import annotations

import threading
from typing import Any

from gdstep.distributed.channel import Channel
from gdstep.distributed.lockstep import RUNS, lockstep_run

LOCKSTEP = frozenset(RUNS + ("next_phase", "forward", "loss", "backward", "update", "back", "seek", "set",
                             "set_stop_when", "add_breakpoint", "remove_breakpoint"))
CALLBACK = "__gdstep_callback__"
RELEASE, RAISE, END = "release", "raise", "end"      # how a pause ends for the others


def perform(session, ranks, name: str, args: tuple, kwargs: dict) -> Any:
    if name in RUNS:
        return lockstep_run(session, ranks, name, *args, **kwargs)
    return getattr(session, name)(*args, **kwargs)


class Mirrored:
    """The debugging rank's session as its handler sees it."""

    def __init__(self, session, ranks, channel: Channel):
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_ranks", ranks)
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_lock", threading.RLock())

    def __getattr__(self, name: str):
        value = getattr(self._session, name)
        if name in LOCKSTEP:
            return lambda *args, **kwargs: self._call(name, args, kwargs)
        if name == "breakpoints":
            return MirroredBreakpoints(value, self._channel, self._lock)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        with self._lock:
            self._channel.check_peers("while this rank debugged")
            self._channel.post(("setattr", name, value))
            setattr(self._session, name, value)

    def _call(self, name: str, args: tuple, kwargs: dict):
        channel = self._channel
        with self._lock:
            channel.check_peers("while this rank debugged")
            sent = {k: (CALLBACK if callable(v) else v) for k, v in kwargs.items()}
            channel.post(("call", name, args, sent))
            local = dict(kwargs)
            for k, v in kwargs.items():
                if callable(v):
                    local[k] = _answering(v, channel)
            return perform(self._session, self._ranks, name, args, local)

    def __repr__(self) -> str:
        return f"<mirrored {self._session!r}>"


class MirroredBreakpoints:
    """The debugging rank's breakpoints: a dismissal (the app's `x`, the break files' "no more
    files for non-finite values") is made on every rank, or the ranks that still break on it
    would pause them all again."""

    def __init__(self, registry, channel: Channel, lock):
        self._registry, self._channel, self._lock = registry, channel, lock

    def __getattr__(self, name: str):
        return getattr(self._registry, name)

    def __iter__(self):
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)

    def dismiss(self, what):
        with self._lock:
            self._channel.check_peers("while this rank debugged")
            self._channel.post(("dismiss", what))
            return self._registry.dismiss(what)


def _answering(callback, channel: Channel):
    def answer():
        value = bool(callback())
        channel.post(("answer", value))
        return value
    return answer


def follow(session, ranks, channel: Channel) -> tuple:
    """Run the debugging rank's calls on this rank's session until it releases the ranks;
    returns the release message: (RELEASE,), (RAISE, message) or (END, why the debugging
    rank ended)."""
    where = "while this rank waited"

    def asked():
        message = channel.receive(where)
        return bool(message[1]) if message[0] == "answer" else False

    while True:
        message = channel.receive(where)
        kind = message[0]
        if kind in (RELEASE, RAISE, END):
            return message
        try:
            if kind == "setattr":
                setattr(session, message[1], message[2])
            elif kind == "dismiss":
                session.breakpoints.dismiss(message[1])
            elif kind == "call":
                _, name, args, kwargs = message
                kwargs = {k: (asked if isinstance(v, str) and v == CALLBACK else v) for k, v in kwargs.items()}
                perform(session, ranks, name, args, kwargs)
        except Exception:        # the debugging rank met the same error and reports it
            pass
