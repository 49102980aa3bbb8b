"""The ranks of a DDP job as attach mode sees them: which rank this is, where the debugger
opens, and a pause that holds every rank safely.

`Ranks.step` is `dbg.step` under DDP: the iteration runs on every rank in lockstep (see
gdstep.distributed.lockstep); when any rank's conditions hit, every rank pauses at the same
phase. The debugging rank (`dbg_rank`: a rank, or "first_hit") gets the handler — the app,
the break files or the user's function — on a mirrored session; the others follow its
calls (gdstep.distributed.mirror) until it lets them go, waiting on the store in short
polls so no process-group timeout runs out.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from gdstep.distributed.channel import Channel, RankLost
from gdstep.distributed.lockstep import check, lockstep_run
from gdstep.distributed.mirror import END, RAISE, RELEASE, Mirrored, follow
from gdstep.distributed.verdict import BREAKPOINT, NONFINITE, Verdict, combine
from gdstep.distributed.view import RanksView, local_and_averaged, rank_values
from gdstep.errors import BreakpointHit, GdstepError

OBSERVED = ("forward", "loss", "backward")      # the phases dbg.watch receives at once


class Ranks:
    made = 0            # Ranks made in this process: every rank makes them in the same order

    def __init__(self, model, dbg_rank: int | str = 0, rank_timeout: float = 60.0):
        import torch
        import torch.distributed as dist

        self.torch, self.dist = torch, dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if not (dbg_rank == "first_hit" or (isinstance(dbg_rank, int) and not isinstance(dbg_rank, bool)
                                            and 0 <= dbg_rank < self.world)):
            raise GdstepError(f'attach: dbg_rank must be "first_hit" or a rank from 0 to {self.world - 1}, got {dbg_rank!r}')
        if not (isinstance(rank_timeout, (int, float)) and rank_timeout > 0):
            raise GdstepError(f"attach: rank_timeout must be a number of seconds > 0, got {rank_timeout!r}")
        self.dbg_rank, self.timeout = dbg_rank, float(rank_timeout)
        first = next(model.parameters(), None)
        backend = dist.get_backend()
        self.device = first.device if first is not None and backend != "gloo" else torch.device("cpu")
        self.store = dist.distributed_c10d._get_default_store()
        self.pauses = 0
        Ranks.made += 1
        self.prefix = f"gdstep/ddp/{Ranks.made}"      # the store's keys of this attach, apart from earlier ones
        self.last_verdict: Verdict | None = None
        self.verdicts: list[Verdict] = []         # every pause's verdict, in order
        self.view: RanksView | None = None

    def check_same(self, conditions: tuple) -> None:
        """Every rank must check the same breakpoints, or they would not stop together."""
        theirs: list = [None] * self.world
        self.dist.all_gather_object(theirs, list(conditions))
        if any(t != list(conditions) for t in theirs):
            raise GdstepError(f"attach: the ranks were given different breakpoints ({theirs}); "
                              "give every rank the same list")

    # -- dbg.step --------------------------------------------------------------------------------

    def step(self, dbg, s) -> float:
        """dbg.step's iteration on every rank at once (the session holds this rank's batch)."""
        self.last_verdict = None
        result = lockstep_run(s, self, "step", 1, loop=True)
        if result.reason in ("breakpoint", "nonfinite") and self.last_verdict is not None:
            try:
                self.pause(dbg, self.last_verdict, settle_to=4 * (dbg._loop_step + 1))
            except BreakpointHit:       # on_break="raise", as in one process: the loop's next call finishes it
                dbg._unfinished = True
                dbg._hand_over()
                raise
            dbg._finish_iteration()
        dbg._loop_step = s.step_count
        return s.loss_value

    # -- dbg.watch -------------------------------------------------------------------------------

    def advance(self, dbg, phase: str) -> bool:
        """Watch mode's check after an observed phase, on every rank at once (the loop ran
        forward, backward and step itself); True when the ranks paused. There the debugger
        only looks: the loop's state is put back on every rank after."""
        s = dbg.session
        seen = len(s.events)
        s.next_phase()
        verdict = combine(self, *check(s, phase, seen, None, None, loop=True))
        if not verdict.hit or (verdict.code == NONFINITE and dbg._repeated_nonfinite(phase)):
            return False          # one break an iteration on a non-finite value, as in one process
        self.last_verdict = verdict
        if verdict.code == BREAKPOINT or verdict.codes[self.rank] != NONFINITE:   # (its own nan: logged by the phase)
            s.log("nonfinite" if verdict.code == NONFINITE else "breakpoint", verdict.message())
        position, held = s.position, dbg.backend.loop_state()
        try:
            self.pause(dbg, verdict)
        except BreakpointHit as hit:    # on_break="raise": after the bookkeeping, as in one process
            dbg._raise_later = hit
        try:
            if s.position != position:            # every rank moved alike: every rank goes back alike
                s.seek(position)
        except GdstepError as e:
            print(f"gdstep: could not return to where the loop is: {e}", file=sys.stderr)
        finally:                      # whatever the way back raised, the loop's tensors are its own
            dbg.backend.put_back(held)
        if phase in OBSERVED:
            for _ in OBSERVED[OBSERVED.index(phase) + 1:]:
                s.next_phase()
        return True

    # -- the pause -------------------------------------------------------------------------------

    def everywhere(self, message: str) -> Verdict:
        """The verdict of a pause every rank asked for at once (`gdstep.set_trace()`)."""
        return Verdict((BREAKPOINT,) * self.world, (message,) * self.world)

    def debugging_rank(self, verdict: Verdict) -> int:
        return verdict.ranks[0] if self.dbg_rank == "first_hit" and verdict.ranks else (
            self.dbg_rank if isinstance(self.dbg_rank, int) else 0)

    def gather_view(self, dbg, verdict: Verdict) -> RanksView:
        local, averaged, step = local_and_averaged(dbg.backend, dbg.session, self)
        mine, common = rank_values(local, averaged, step, dbg.session, self.rank, verdict.messages[self.rank])
        everyone: list = [None] * self.world
        self.dist.all_gather_object(everyone, mine)
        return RanksView(tuple(everyone), **common)

    def pause(self, dbg, verdict: Verdict, settle_to: int | None = None) -> None:
        """Every rank calls this at the same point: one opens the debugger, the others follow."""
        self.pauses += 1
        self.verdicts.append(verdict)
        s = dbg.session
        self.view = self.gather_view(dbg, verdict)
        source = self.debugging_rank(verdict)
        channel = Channel(self.store, self.rank, self.world, source, f"{self.prefix}/{self.pauses}", self.timeout)
        message = verdict.message()
        s.log("ranks", self.view.text())
        if self.rank != source:
            print(f"gdstep: rank {self.rank} waits: rank {source} debugs ({message})", file=sys.stderr)
            channel.start()
            try:
                answer = follow(s, self, channel)
            finally:
                channel.stop()
            if answer[0] == RAISE:       # on_break="raise": every rank raises BreakpointHit
                dbg._break(answer[1])
            if answer[0] == END:         # going on would leave this rank alone in the next all-reduce
                raise RankLost(f"gdstep: rank {source} ended the job while rank {self.rank} waited ({answer[1]}); "
                               f"rank {self.rank} ends too")
            return
        channel.start()
        mirrored = Mirrored(s, self, channel)
        end: tuple[Any, ...] = (RELEASE,)
        dbg.session = mirrored
        written = len(dbg.dumps)
        try:
            settle = None if settle_to is None else (lambda: mirrored.seek(settle_to) if s.position != settle_to else None)
            dbg._break(f"paused: {message}", settle=settle)
            if len(dbg.dumps) > written and dbg.dumps[-1].suffix == ".npz":
                self._add_to_summary(dbg.dumps[-1].with_suffix(".txt"))
        except BaseException as e:
            if dbg.on_break == "raise" and isinstance(e, Exception):
                end = (RAISE, getattr(e, "message", str(e)))
            else:                  # this rank ends (a rank lost, SIGTERM, an error): so do the others
                end = (END, _why(e))
            raise
        finally:
            dbg.session = s
            try:
                channel.post(end)
            finally:
                channel.stop()


    def _add_to_summary(self, txt) -> None:
        """The break file's summary gets every rank's values (the view) too."""
        from gdstep.files import atomic_write

        try:
            atomic_write(txt, txt.read_text(encoding="utf-8") + "\n" + self.view.full_text() + "\n")
        except (OSError, GdstepError) as e:
            print(f"gdstep: could not add the ranks' values to {txt}: {e}", file=sys.stderr)


def _why(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    if isinstance(e, SystemExit):
        return re.sub(r"; rank \d+ ends the job$", "", text.removeprefix("gdstep: ")) or "it exited"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


__all__ = ["Ranks", "RankLost"]
