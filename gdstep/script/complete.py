"""Completion for the `:` prompt: whole-line candidates for what has been typed so far."""

from __future__ import annotations

import dataclasses

from gdstep.conditions import NAMES
from gdstep.optim import OPTIMIZERS
from gdstep.script.parser import COMMANDS, SET_KEYS

_TAKES_PARAM = ("watch", "unwatch", "print", "gradcheck")
_TAKES_CONDITION = ("break", "expect", "run until")


def completions(session, text: str) -> list[str]:
    """Candidates that extend `text`: command names, then parameter names, settings,
    optimizer kinds and condition names, depending on the command."""
    stripped = text.lstrip(":").lstrip()
    if " " not in stripped:
        return [c for c in COMMANDS if c.startswith(stripped)]
    head, _, last = stripped.rpartition(" ")
    params = list(session.backend.param_shapes)
    word = head.split()[0]
    if word == "set":
        if head == "set":
            # the optimizer's own hyperparameters: its dataclass fields, never its class-level
            # names (`kind`, `guarded_state`), which `set` refuses
            opt = session.optimizer
            fields = [f.name for f in dataclasses.fields(opt)] if dataclasses.is_dataclass(opt) else []
            options = list(SET_KEYS) + [f for f in fields if f not in SET_KEYS]
        elif head == "set stop_when":
            options = ["none"] + list(NAMES)
        elif head == "set optimizer":
            options = list(OPTIMIZERS)
        elif head == "set batch_size":
            options = ["full", "1", "8", "32"]
        else:
            options = []
    elif word in _TAKES_PARAM:
        options = (["state"] if word == "print" and head == "print" else []) + params
        if word in ("watch", "print", "unwatch"):
            options += ["loss", "prev_loss", "grad_norm", "lr", "update_ratio"] + [f"grad_norm({p})" for p in params]
    elif word in ("break", "expect") or head.startswith("run until"):
        options = list(NAMES) + params + [f"grad_norm({p})" for p in params]
    elif word == "run":
        options = ["until", "max"]
    elif word == "back":
        options = ["1", "4", "iterations"]
    elif word == "unbreak":
        options = [str(bp.id) for bp in session.breakpoints] + ["all"]
    else:
        options = []
    return [f"{head} {o}" for o in options if o.startswith(last) and o != last]
