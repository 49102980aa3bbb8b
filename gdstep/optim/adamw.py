"""AdamW as torch.optim.AdamW: Adam with decoupled weight decay, W ← W·(1 − η·λ) before the step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gdstep.optim.adam import Adam


@dataclass(frozen=True, slots=True)
class AdamW(Adam):
    """Adam with decoupled weight decay: W ← W·(1 − η·λ) before the Adam step."""

    weight_decay: float = 1e-2
    kind: ClassVar[str] = "adamw"
    decoupled_weight_decay: ClassVar[bool] = True
    # torch ≥ 2.7 also spells it Adam(decoupled_weight_decay=True)
    torch_twins: ClassVar = (("AdamW", {}), ("Adam", {"decoupled_weight_decay": True}))
