"""`export FILE.md`: the current iteration as a worked example, with the real numbers.

The batch, every layer's forward values, the loss, the gradients by the chain rule and
the update arithmetic of every parameter, as Markdown with LaTeX where it helps. Large
tensors are shown as a corner plus statistics. Every update line is `explain()`'s own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gdstep import arrays
from gdstep.fmt import index_text, num
from gdstep.files import atomic_write
from gdstep.nn.layers import is_affine, layer_class
from gdstep.nn.losses import loss_class

ROWS, COLS, ELEMENTS = 8, 8, 4
_MARKDOWN = "\\`*_{}[]()#+-.!|~"
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md_escape(text: str) -> str:
    """A name from a scenario as literal Markdown text: no HTML, links, emphasis or headings
    (`&`, `<`, `>` become entities; every other special character is backslash-escaped)."""
    from gdstep.text import clean
    return "".join(_ENTITIES.get(ch) or ("\\" + ch if ch in _MARKDOWN else ch) for ch in clean(text))



def _table(array: Any, row_label: str = "sample", col_prefix: str = "", row_names: list[str] | None = None) -> list[str]:
    a = arrays.to_numpy(array)
    sample_shape = a.shape[1:] if a.ndim > 2 else None
    if a.ndim != 2:        # a sample's features flattened (an image, a sequence), a vector as a column
        a = a.reshape(len(a) if a.ndim else 1, -1)
    rows, cols = a.shape
    shown_cols = min(cols, COLS)
    head = f"| {row_label} | " + " | ".join(f"{col_prefix}[{j}]" for j in range(shown_cols)) + (" | … |" if cols > COLS else " |")
    sep = "|---|" + "---:|" * shown_cols + ("---|" if cols > COLS else "")
    out = [head, sep]
    for i in range(min(rows, ROWS)):
        name = row_names[i] if row_names else str(i)
        out.append(f"| {name} | " + " | ".join(num(a[i, j]) for j in range(shown_cols)) + (" | … |" if cols > COLS else " |"))
    if rows > ROWS:
        out.append(f"| … | " + " | ".join("…" for _ in range(shown_cols)) + (" | … |" if cols > COLS else " |"))
    if rows > ROWS or cols > COLS:
        st = arrays.stats(array)
        out.append("")
        out.append(f"({rows}×{cols}; shown: the first {min(rows, ROWS)}×{shown_cols}. mean {num(st.mean)}, std {num(st.std)}, "
                   f"min {num(st.min)}, max {num(st.max)}, norm {num(st.norm)})")
    if sample_shape is not None:
        out.append("")
        out.append(f"(each row's {'×'.join(map(str, sample_shape))} values, flattened in order)")
    return out


def _loss_table(loss, row_names: list[str], classes: tuple[str, ...] | None) -> list[str]:
    """One table: each sample's output y, target t and loss, the rows named by dataset row
    as in the batch and forward tables; a class target by its class name."""
    y = arrays.to_numpy(loss.output)
    y = y.reshape(len(y), -1)
    t = arrays.to_numpy(loss.target)
    per = None if loss.per_sample is None else arrays.to_numpy(loss.per_sample)
    if per is not None and (per.ndim == 0 or len(per) != len(y)):
        per = None             # a loss function that gives the batch's loss alone (F.cross_entropy in attach mode)
    per = None if per is None else per.reshape(len(per), -1)
    shown_y = min(y.shape[1], COLS)

    def cols(symbol: str, n: int) -> list[str]:
        return [symbol] if n == 1 else [f"{symbol}[{j}]" for j in range(n)]

    class_target = t.ndim == 1 and np.issubdtype(t.dtype, np.integer)
    t2 = t.reshape(len(t), -1)
    shown_t = min(t2.shape[1], COLS)
    heads = cols("y", y.shape[1])[:shown_y] + (["…"] if y.shape[1] > COLS else []) + \
        (["t"] if class_target else cols("t", t2.shape[1])[:shown_t] + (["…"] if t2.shape[1] > COLS else [])) + \
        (cols("loss", per.shape[1]) if per is not None else [])
    out = ["| row | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for i in range(min(len(y), ROWS)):
        cells = [num(y[i, j]) for j in range(shown_y)] + (["…"] if y.shape[1] > COLS else [])
        if class_target:
            k = int(t[i])
            cells.append(classes[k] if classes is not None and 0 <= k < len(classes) else str(k))
        else:
            cells += [num(v) for v in t2[i, :shown_t]] + (["…"] if t2.shape[1] > COLS else [])
        cells += [num(v) for v in per[i]] if per is not None else []
        name = row_names[i] if i < len(row_names) else str(i)
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    if len(y) > ROWS:
        out.append("| … | " + " | ".join("…" for _ in heads) + " |")
        out += ["", f"({len(y)} samples; shown: the first {ROWS})"]
    if per is None:
        out += ["", "(no loss per sample: the loss function gives the batch's alone)"]
    return out


def _elements(shape: tuple[int, ...], limit: int) -> list[tuple[int, ...]]:
    out = []
    for flat in range(min(limit, int(np.prod(shape)) if shape else 1)):
        out.append(tuple(int(i) for i in np.unravel_index(flat, shape)))
    return out


def worked_example(session) -> str:
    """The Markdown text of the current iteration (the last complete one at a boundary)."""
    s, b = session, session.backend
    step = s.step_count if s.position % 4 else s.step_count - 1
    records = {p: r for p, r in s.records.items() if r is not None and r.step == step}
    sc = s.scenario
    lines = [f"# Worked example: {md_escape(sc.name)}", ""]
    if step < 0 or not records:
        lines.append("Nothing has run yet: step through at least the forward phase first.")
        return "\n".join(lines) + "\n"
    fwd = records.get("forward")
    it = (f"loop iteration {step + 1}" if s.attached else f"iteration {fwd.iteration} of epoch {fwd.epoch}" if fwd
          else f"step {step + 1}")
    opt = s.record("update").optimizer if "update" in records else s.optimizer
    kind = getattr(opt, "kind", type(opt).__name__)
    lines += [f"{it} (update {step + 1}) · {b.name} backend on {b.device}, {b.dtype} · loss `{sc.loss.kind}` · "
              f"optimizer `{kind}`, lr {getattr(opt, 'lr', s.lr):g}", ""]
    if sc.description:
        lines += [f"> {md_escape(sc.description)}", ""]
    pending = [p for p in ("forward", "loss", "backward", "update") if p not in records]
    if pending:
        lines += [f"Phases not run yet in this iteration: {', '.join(pending)}.", ""]

    if fwd:
        rows = arrays.to_numpy(fwd.indices)
        names = [f"{r}" for r in rows]
        lines += ["## 1. The batch", "", f"{len(rows)} sample{'s' if len(rows) != 1 else ''} (by dataset row). Inputs $x$:", ""]
        lines += _table(fwd.inputs, "row", "x", names) + [""]
        lines += ["## 2. Forward", ""]
        layer_input = "x"
        for i, (info, out) in enumerate(zip(b.layers, fwd.outputs)):
            affine = is_affine(info.kind)
            symbol = "z" if affine else "a"
            tex = getattr(layer_class(info.kind), "tex", None)
            lines.append(f"**Layer {info.name}: {info.text}**" + (f" — $${tex}$$" if tex else ""))
            lines.append("")
            if affine:
                lines.append(f"input: {layer_input}; output {symbol}{info.name}:")
                lines.append("")
            lines += _table(out, "row", f"{symbol}{info.name}", names) + [""]
            layer_input = f"{symbol}{info.name}"
    loss = records.get("loss")
    if loss:
        lines += ["## 3. Loss", "", f"$${getattr(loss_class(loss.kind), 'tex', 'L')}$$", "",
                  "Output $y$, target $t$ and loss of each sample (by dataset row):", ""]
        rows = arrays.to_numpy(fwd.indices) if fwd else np.arange(len(arrays.to_numpy(loss.target)))
        classes = sc.dataset.class_names if sc.is_classifier and sc.dataset is not None else None
        lines += _loss_table(loss, [str(r) for r in rows], classes) + ["", f"**L = {num(loss.value)}**", ""]
    bwd = records.get("backward")
    if bwd:
        lines += ["## 4. Backward: the chain rule", "",
                  r"Each linear layer's $\delta = \partial L / \partial z$, then $\partial L/\partial W = \delta^\top a_{\text{in}}$ and $\partial L/\partial b = \sum_b \delta_b$.", ""]
        lines += ["∂L/∂output:", ""] + _table(bwd.grad_output, "row", "∂L/∂y") + [""]
        for info, delta in zip(b.layers, bwd.deltas):
            if not is_affine(info.kind):
                continue
            lines += [f"δ of layer {info.name} ({info.text}):", ""] + _table(delta, "row", f"δ{info.name}") + [""]
        for name, grad in bwd.grads.items():
            lines += [f"**∂L/∂{name}** (‖·‖ = {num(bwd.grad_norms[name])}):", ""] + _table(grad, "out", "in") + [""]
            try:
                chain = s.chain_rule(name, _elements(b.param_shapes[name], 1)[0])
            except Exception:
                chain = None
            if chain is not None:
                lines += ["```", *chain.lines, "```", ""]
        lines += [f"‖∇L‖ = {num(bwd.grad_norm)}", ""]
    upd = records.get("update")
    if upd:
        lines += ["## 5. Update", ""]
        for tex in getattr(upd.optimizer, "tex", ()):
            lines += [f"$${tex}$$", ""]
        for name, u in upd.params.items():
            shape = b.param_shapes[name]
            lines += [f"**{name}** {tuple(shape)}: W_old, then W_new:", ""]
            lines += _table(u.old, "out", "in") + [""] + _table(u.new, "out", "in") + [""]
            shown = _elements(shape, ELEMENTS)
            lines.append("```")
            for index in shown:
                ex = s.explain(name, index)
                lines.append(f"{name}{index_text(index)}:")
                lines.extend("  " + line for line in ex.lines)
            lines.append("```")
            total = int(np.prod(shape)) if shape else 1
            if total > len(shown):
                lines.append(f"({len(shown)} of {total} elements shown; every element follows the same lines.)")
            lines.append("")
        lines += [f"‖ΔW‖/‖W‖ over all parameters = {num(upd.update_ratio())}", ""]
    lines += ["---", f"Made by gdstep from `{sc.file}` at {session.where}."]
    return "\n".join(lines) + "\n"


def export_markdown(session, path: str | Path) -> Path:
    return atomic_write(path, worked_example(session))
