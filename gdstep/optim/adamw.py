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
    tex: ClassVar[tuple[str, ...]] = (                 # the update as `export` writes it
        r"W \leftarrow W_{\text{old}}\,(1 - \eta\lambda)",
        r"m \leftarrow \beta_1 m + (1 - \beta_1)\,g, \qquad v \leftarrow \beta_2 v + (1 - \beta_2)\,g^2",
        r"W_{\text{new}} = W - \eta\,\frac{\hat m}{\sqrt{\hat v} + \epsilon}",
    )
