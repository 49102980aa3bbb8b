"""The batch panel: the rows of the batch view, read from the records of the iteration in
progress. This module does not import Textual."""

from __future__ import annotations

from typing import Any

import numpy as np

from gdstep import arrays
from gdstep.fmt import num
from gdstep.nn.layers import is_affine
from gdstep.tui.attach_data import output_rows
from gdstep.tui.frame import BatchPanel, BatchRow, Layout


def batch_panel(s, layout: Layout) -> BatchPanel | None:
    """The batch of the iteration in progress, after forward and loss: every row the
    records have, and a note for each thing they lack (a loss with no per-sample values,
    no target, an output with no row per sample)."""
    if s.last_phase not in ("forward", "loss"):
        return None
    fwd = s.record("forward")
    if fwd is None:
        return None
    size = len(fwd.indices)
    shown = min(size, max(1, layout.batch_samples))
    # one sample is shown as a vector per line, with as many units as fit across
    units = max(1, layout.batch_samples if shown == 1 else layout.batch_units)
    samples = arrays.to_numpy(fwd.indices[:shown])
    rows: list[BatchRow] = []
    notes: list[str] = []

    def add(symbol: str, a: Any, group: str) -> None:
        shp = arrays.shape(a) if hasattr(a, "shape") else None
        if shp is None or not shp or shp[0] != size:
            what = "not a tensor" if shp is None else f"shape {tuple(shp)}, not a row per sample"
            notes.append(f"{symbol}: {what}")
            return
        cols = int(np.prod(shp[1:])) if len(shp) > 1 else 1
        values = arrays.to_numpy(a[:shown]).reshape(shown, -1)
        for j in range(min(cols, units)):
            rows.append(BatchRow(f"{symbol}[{j}]", values[:, j].astype(float), group))
        if cols > units:
            notes.append(f"{symbol}: {units} of {cols} units shown")
        if low_precision(a):
            notes.append(f"{symbol}:{low_precision(a).removeprefix(' ·')}")

    add("x", fwd.inputs, "input")
    layers = s.backend.layers
    for k, out in enumerate(fwd.outputs):
        kind = layers[k].kind if k < len(layers) else "?"
        affine = is_affine(kind)
        symbol = f"z{k}" if affine else f"a{k}"
        if out is None:
            notes.append(f"{symbol}: did not run in this forward")
            continue
        add(symbol, out, "affine" if affine else "activation")
    rows += output_rows(s.backend, size, shown, units, notes)
    iteration = fwd.step + 1 if s.attached else fwd.iteration     # attach mode: the loop's iteration
    title = f"forward of iteration {iteration}: {size} sample{'s' if size != 1 else ''}"
    loss = s.record("loss")
    if s.last_phase == "loss" and loss is not None:
        _loss_rows(loss, size, shown, units, rows, notes)
        title = f"loss of iteration {iteration}: {loss.kind} = {num(loss.value)} over {size} sample{'s' if size != 1 else ''}"
    if size > shown:
        notes.append(f"{shown} of {size} samples shown")
    return BatchPanel(s.last_phase, title, samples, size, tuple(rows), tuple(notes))


def _loss_rows(loss, size: int, shown: int, units: int, rows: list[BatchRow], notes: list[str]) -> None:
    """The target and each sample's loss, where the loss has them; else a note saying
    what is missing and why."""
    target = loss.target
    if target is None:
        notes.append("target: not given (dbg.watch(loss) without y)")
    elif not hasattr(target, "shape") or not arrays.shape(target) or arrays.shape(target)[0] != size:
        notes.append("target: " + ("not a tensor" if not hasattr(target, "shape")
                                   else f"shape {tuple(arrays.shape(target))}, not a row per sample"))
    else:
        t = arrays.to_numpy(target[:shown]).reshape(shown, -1)
        if t.shape[1] == 1 and len(arrays.shape(target)) == 1:
            rows.append(BatchRow("target", t[:, 0].astype(float), "target"))
        else:
            for j in range(min(t.shape[1], units)):
                rows.append(BatchRow(f"t[{j}]", t[:, j].astype(float), "target"))
    per = loss.per_sample
    if per is None:
        notes.append(f"per-sample loss: not available ({loss.kind} returns only the loss of the batch)")
    elif not arrays.shape(per) or arrays.shape(per)[0] != size:
        notes.append(f"per-sample loss: shape {tuple(arrays.shape(per))}, not a row per sample")
    else:
        values = arrays.to_numpy(per[:shown]).reshape(shown, -1).sum(axis=1)
        rows.append(BatchRow("loss", values.astype(float), "loss"))


def low_precision(*values: Any) -> str:
    """" · bfloat16" where a shown tensor is held in a 16-bit float (its values are shown
    exactly, as float32 holds them)."""
    kinds = dict.fromkeys(arrays.dtype_name(v) for v in values
                          if v is not None and (arrays.widened(v) or arrays.dtype_name(v) == "float16"))
    return "".join(f" · {k}" for k in kinds)
