"""Messages from the debugging rank to the others while a distributed job is paused.

They go through the process group's own key-value store (the TCPStore torchrun or
`init_process_group` made), never through a collective, so a rank may wait as long as the
person at the debugger takes: each wait is a loop of short polls, and no process-group
timeout runs. Every rank that waits beats a heartbeat (a counter in the store); a rank whose
heartbeat stops for `timeout` seconds, or a store that stops answering, ends the wait with
one clear line instead of a hang.
"""

from __future__ import annotations

import pickle
import threading
import time
from typing import Any


class RankLost(SystemExit):
    """A rank of the job stopped answering while others waited on it: this rank ends too
    (a SystemExit, so `except Exception` in a training loop does not swallow it)."""


class Channel:
    """One pause's ordered messages from rank `source` to every other rank."""

    def __init__(self, store, rank: int, world: int, source: int, prefix: str, timeout: float = 60.0,
                 poll: float = 0.01):
        self.store, self.rank, self.world, self.source = store, rank, world, source
        self.prefix, self.timeout, self.poll = prefix, timeout, poll
        self._sent = self._read = 0
        self._seen: dict[int, tuple[int, float]] = {}
        self._last_beat = 0.0
        self._lock = threading.Lock()
        self._beater: threading.Thread | None = None
        self._stop = threading.Event()

    # -- the debugging rank ----------------------------------------------------------------------

    def post(self, message: Any) -> None:
        data = pickle.dumps(message)
        with self._lock:
            self._sent += 1
            key = f"{self.prefix}/m/{self._sent}"
        self._store("set", key, data)

    def check_peers(self, where: str) -> None:
        """Raise RankLost when another rank's heartbeat stopped (before a step that needs it)."""
        for r in range(self.world):
            if r != self.rank:
                self._check_alive(r, where)

    def start(self) -> None:
        """Begin the pause: a heartbeat from a thread for as long as it lasts (the rank may be
        busy elsewhere: in the app, or in a long run it follows), and every other rank's
        heartbeat watched from now on."""
        now = time.monotonic()
        for r in range(self.world):
            if r != self.rank:
                self._seen[r] = (self._store("add", f"{self.prefix}/hb/{r}", 0), now)
        self.beat(force=True)

        watched = [r for r in range(self.world) if r != self.rank] if self.rank == self.source else [self.source]

        def beat():
            while not self._stop.wait(0.2):
                try:
                    self.beat(force=True)
                    for r in watched:          # seen often, so a heartbeat that stops shows
                        self._observe(r)
                except RankLost:
                    return
        self._beater = threading.Thread(target=beat, name="gdstep-heartbeat", daemon=True)
        self._beater.start()

    def stop(self) -> None:
        """End the pause's heartbeat, and wait for its thread: a thread still inside a store
        call when the process group goes away aborts the process ("terminate called")."""
        self._stop.set()
        beater, self._beater = self._beater, None
        if beater is not None and beater is not threading.current_thread():
            beater.join(timeout=5.0)

    # -- the waiting ranks -----------------------------------------------------------------------

    def receive(self, where: str) -> Any:
        """The next message from the source, waiting in short polls (its heartbeat watched)."""
        self._read += 1
        key = f"{self.prefix}/m/{self._read}"
        while not self._store("check", [key]):
            self._check_alive(self.source, where)
            time.sleep(self.poll)
        return pickle.loads(self._store("get", key))

    # -- heartbeats ------------------------------------------------------------------------------

    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_beat >= 0.2:
            self._last_beat = now
            self._store("add", f"{self.prefix}/hb/{self.rank}", 1)

    def _observe(self, r: int) -> tuple[int, float]:
        """Rank r's heartbeat count, and when this rank last saw it change."""
        count = self._store("add", f"{self.prefix}/hb/{r}", 0)
        with self._lock:
            seen = self._seen.get(r)
            if seen is None or seen[0] != count:
                seen = self._seen[r] = (count, time.monotonic())
        return seen

    def _check_alive(self, r: int, where: str) -> None:
        """From what the heartbeat thread has seen (no store round trip)."""
        with self._lock:
            _, changed = self._seen[r]
        if time.monotonic() - changed > self.timeout:
            raise RankLost(f"gdstep: rank {r} stopped answering {where} (no heartbeat for {self.timeout:g} s); "
                           f"rank {self.rank} ends the job")

    def _store(self, op: str, *args):
        try:
            return getattr(self.store, op)(*args)
        except RankLost:
            raise
        except Exception as e:      # the store's host (rank 0 or the launcher) is gone
            raise RankLost(f"gdstep: the job's store stopped answering ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else 'no detail'}); rank {self.rank} ends the job") from None
