"""The records of one iteration written to files, for a break with no terminal to open the
debugger in: `gdstep-break-N.npz` (every array, by record and name, plus the summary as
JSON under `meta`) and `gdstep-break-N.txt` (the same summary, readable); N counts the
iterations from 1.

    import numpy as np, json
    z = np.load("gdstep-break-12.npz")
    z["backward/grad/0.weight"], json.loads(str(z["meta"]))

Arrays numpy has no dtype for (bfloat16) are stored as float32, which holds each of their
values exactly; `meta["dtypes"]` names the dtype each such array had.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from gdstep import arrays, nonfinite
from gdstep.errors import GdstepError
from gdstep.files import atomic_write
from gdstep.fmt import num

MAX_ELEMENTS = 2**24       # larger tensors are summarized, not written


class Collected(dict):
    """Arrays by key, with what was left out and the dtype of each array stored widened."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: list[str] = []
        self.dtypes: dict[str, str] = {}


def _add(out: Collected, key: str, value: Any) -> None:
    if value is None or isinstance(value, (int, float, str, bool)) or not hasattr(value, "shape"):
        return
    shape = arrays.shape(value)
    if int(np.prod(shape)) > MAX_ELEMENTS:
        out.skipped.append(key)
        return
    if arrays.widened(value):
        out.dtypes[key] = arrays.dtype_name(value)
    out[key] = np.array(arrays.to_numpy(value))


def _dtype(value: Any) -> str:
    return f" {arrays.dtype_name(value)}" if arrays.widened(value) or arrays.dtype_name(value) == "float16" else ""


def _stats_line(name: str, value: Any) -> str:
    st = arrays.stats(value)
    bad = f", {st.nonfinite} non-finite" if st.nonfinite else ""
    return (f"  {name:<28} {str(tuple(arrays.shape(value))) + _dtype(value):<14} mean {num(st.mean)}  std {num(st.std)}  "
            f"min {num(st.min)}  max {num(st.max)}  ‖·‖ {num(st.norm)}{bad}")


def collect(session) -> Collected:
    out = Collected()
    fwd, loss = session.record("forward"), session.record("loss")
    bwd, upd = session.record("backward"), session.record("update")
    if fwd is not None:
        _add(out, "forward/input", fwd.inputs)
        for name, value in zip(fwd.layer_names, fwd.outputs):
            _add(out, f"forward/output/{name}", value)
    if loss is not None:
        _add(out, "loss/target", loss.target)
        _add(out, "loss/per_sample", loss.per_sample)
    if bwd is not None:
        for name, value in bwd.grads.items():
            _add(out, f"backward/grad/{name}", value)
        for name, value in zip(fwd.layer_names if fwd is not None else (), bwd.deltas):
            _add(out, f"backward/delta/{name}", value)
    if upd is not None and (bwd is None or upd.step == bwd.step):
        for name, u in upd.params.items():
            for part in ("old", "grad", "new"):
                _add(out, f"update/{name}/{part}", getattr(u, part))
            for when, state in (("state_before", u.state_before), ("state_after", u.state_after)):
                for key, value in state.items():
                    _add(out, f"update/{name}/{when}/{key}", value)
    for name, value in session.backend.params().items():
        _add(out, f"params/{name}", value)
    return out


def summary(session, message: str) -> tuple[str, dict]:
    s = session
    loss = s.record("loss")
    bwd = s.record("backward")
    bad = first_nonfinite(s)
    meta = {
        "message": message, "cursor": s.where, "step": s.step_count,
        "phase_due": s.phase_due, "backend": s.backend.name, "device": s.backend.device, "dtype": s.backend.dtype,
        "loss": None if loss is None else loss.value, "losses": list(s.history.losses[-20:]),
        "grad_norms": None if bwd is None else dict(bwd.grad_norms),
        "grad_step": None if bwd is None else bwd.step,     # whose gradients (0-based): maybe the iteration before
        "nonfinite": None if bad is None else str(bad), "optimizer": repr(s.optimizer),
        "inexact": s.replay_inexact,
    }
    lines = [f"gdstep break: {message}", f"  at {s.where} ({s.backend.name} on {s.backend.device}, {s.backend.dtype})"]
    if s.replay_inexact:            # recomputed otherwise than the loop computed them, or not recomputable
        lines.append(f"  ⚠ inexact: {s.replay_inexact}")
    if bad is not None:
        lines.append(f"  first non-finite value: {bad}")
    if meta["losses"]:
        lines.append("  losses (latest last): " + ", ".join(num(v) for v in meta["losses"]))
    if bwd is not None:              # before this iteration's backward: the latest are the iteration before's
        earlier = (", the one before: this iteration's backward has not run"
                   if s.phase_due in ("loss", "backward") and bwd.step < s.step_count else "")
        lines.append(f"  gradients (iteration {bwd.step + 1}{earlier}):")
        lines += [_stats_line(name, g) for name, g in bwd.grads.items()]
    lines.append("  parameters:")
    lines += [_stats_line(name, p) for name, p in s.backend.params().items()]
    return "\n".join(lines) + "\n", meta


def first_nonfinite(session):
    """The first non-finite value of the iteration written, in the order its pause searched
    (forward in call order, loss, backward, update); else the first in the live state."""
    s = session
    records = {p: s.record(p) for p in ("forward", "loss", "backward", "update")}
    order = getattr(s.backend, "call_order", None)
    return nonfinite.in_iteration(records, order=order) or s.find_nonfinite()


def dismiss_lasting(session) -> str | None:
    """After a non-finite break is written: when the parameters themselves are non-finite,
    every later iteration breaks the same way, so further non-finite breaks are dismissed
    (one file, not one per iteration); what to say, or None."""
    registry = session.breakpoints
    if registry.nonfinite_dismissed or nonfinite.first_nonfinite("params", session.backend.params().items()) is None:
        return None
    registry.dismiss("nan")
    session.log("setting", "non-finite parameters: no more files for non-finite values")
    return "the parameters are non-finite, so no more files for non-finite values"


def _free_name(directory: Path, step: int) -> Path:
    base = directory / f"gdstep-break-{step}"
    candidate, i = base, 1
    while candidate.with_suffix(".npz").exists() or candidate.with_suffix(".txt").exists():
        i += 1
        candidate = directory / f"gdstep-break-{step}-{i}"
    return candidate


def write_break(session, message: str, directory: str | Path = ".") -> tuple[Path, Path]:
    """Write the latest records and a summary; returns (npz path, txt path)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fwd = session.record("forward")
    step = fwd.step if fwd is not None else session.step_count
    base = _free_name(directory, step + 1)
    data = collect(session)
    text, meta = summary(session, message)
    if data.dtypes:
        meta["dtypes"] = data.dtypes
        kinds = sorted(set(data.dtypes.values()))
        text += f"  stored as float32 (exactly): the {', '.join(kinds)} arrays, named in meta['dtypes']\n"
    if data.skipped:
        meta["skipped"] = data.skipped
        text += f"  not written (over {MAX_ELEMENTS} elements): {', '.join(data.skipped)}\n"
    npz, txt = base.with_suffix(".npz"), base.with_suffix(".txt")
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta, default=str)), **data)
    try:
        atomic_write(npz, buffer.getvalue())
        atomic_write(txt, text.encode("utf-8"))
    except GdstepError as e:
        raise OSError(str(e)) from None
    return npz, txt
