"""Combining the ranks' verdicts: each rank checks its conditions on its own values, and
one small all-reduce tells every rank what all of them found, so they stop together."""

from __future__ import annotations

from dataclasses import dataclass

NONE, STOP_WHEN, UNTIL, BREAKPOINT, NONFINITE = range(5)
SEVERITY = {NONFINITE: "nonfinite", BREAKPOINT: "breakpoint", UNTIL: "until", STOP_WHEN: "stop_when"}


@dataclass(frozen=True)
class Verdict:
    """What each rank found at one check: codes[r] (NONE … NONFINITE) and its message."""

    codes: tuple[int, ...]
    messages: tuple[str | None, ...]

    @property
    def code(self) -> int:
        return max(self.codes)

    @property
    def hit(self) -> bool:
        return self.code != NONE

    @property
    def ranks(self) -> tuple[int, ...]:
        """The ranks that found the most severe thing any rank found."""
        return tuple(r for r, c in enumerate(self.codes) if c == self.code and c != NONE)

    def message(self) -> str:
        """One line: what hit, on which rank(s), and whether it was on every rank or some."""
        ranks = self.ranks
        texts = {self.messages[r] for r in ranks}
        where = ("every rank" if len(ranks) == len(self.codes) else
                 f"rank {ranks[0]} only" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}")
        if len(texts) == 1:
            return f"{next(iter(texts))} — on {where}"
        return f"on {where}: " + "; ".join(f"rank {r}: {self.messages[r]}" for r in ranks)


def combine(ranks, code: int, message: str | None) -> Verdict:
    """All ranks call this at the same point: each rank's (code, message), everywhere."""
    torch, dist = ranks.torch, ranks.dist
    codes = torch.zeros(ranks.world, dtype=torch.int64, device=ranks.device)
    codes[ranks.rank] = code
    dist.all_reduce(codes)
    found = tuple(int(c) for c in codes.tolist())
    if max(found) == NONE:
        return Verdict(found, (None,) * ranks.world)
    messages: list = [None] * ranks.world
    dist.all_gather_object(messages, message)
    return Verdict(found, tuple(messages))
