"""The names a condition can read, and after which phases each can change."""

from __future__ import annotations

from typing import Any, Callable, Protocol

from gdstep.records import PHASES

ALL_PHASES = frozenset(PHASES)

# name -> the phases after which its value can change
NAMES: dict[str, frozenset[str]] = {
    "loss": frozenset({"loss"}),
    "prev_loss": frozenset({"loss"}),
    "grad_norm": frozenset({"backward"}),
    "update_ratio": frozenset({"update"}),
    "epoch": frozenset({"update"}),
    "iteration": frozenset({"update"}),
    "step": frozenset({"update"}),
    "lr": frozenset({"forward", "update"}),
    "phase": ALL_PHASES,
    "nan": ALL_PHASES,
}
# the values of an iteration's records: before the phase that makes them, the iteration before's
RECORD_NAMES = frozenset({"loss", "prev_loss", "grad_norm", "update_ratio"})
# the names that ask for their phases themselves (`phase == "update"`), records or not
OWN_PHASES = frozenset({"phase", "nan"})
STRING_NAMES = {"phase"}
BOOL_NAMES = {"nan"}
FUNCTIONS = {"grad_norm": "backward", "update_ratio": "update", "abs": None, "lane": None}
# what `lane(K).NAME` reads from lane K (see gdstep.lanes)
LANE_NAMES = ("loss", "prev_loss", "step", "epoch", "iteration", "lr", "grad_norm", "update_ratio")
KEYWORDS = {"and", "or", "not", "true", "false"}


class Context(Protocol):
    """What a condition reads; the Session provides one."""

    def value(self, name: str) -> Any: ...

    def param(self, name: str, index: tuple[int, ...]) -> float: ...

    def grad_norm(self, name: str | None) -> float | None: ...

    def update_ratio(self, name: str | None) -> float | None: ...

    def lane_value(self, lane: int, name: str) -> Any: ...

    def lane_param(self, lane: int, name: str, index: tuple[int, ...]) -> float: ...


Fn = Callable[[Context], Any]
