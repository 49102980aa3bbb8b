"""The records of one iteration written to files, for a break with no terminal to open the
debugger in: `gdstep-break-N.npz` (every array, by record and name, plus the summary as
JSON under `meta`) and `gdstep-break-N.txt` (the same summary, readable); N counts the
iterations from 1.

    import numpy as np, json
    z = np.load("gdstep-break-12.npz")
    z["backward/grad/0.weight"], json.loads(str(z["meta"]))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gdstep import arrays
from gdstep.fmt import num

MAX_ELEMENTS = 2**24       # larger tensors are summarized, not written


def _add(out: dict[str, np.ndarray], skipped: list[str], key: str, value: Any) -> None:
    if value is None or isinstance(value, (int, float, str, bool)):
        return
    shape = arrays.shape(value)
    if int(np.prod(shape)) > MAX_ELEMENTS:
        skipped.append(key)
        return
    out[key] = np.array(arrays.to_numpy(value))


def _stats_line(name: str, value: Any) -> str:
    st = arrays.stats(value)
    bad = f", {st.nonfinite} non-finite" if st.nonfinite else ""
    return (f"  {name:<28} {str(tuple(arrays.shape(value))):<14} mean {num(st.mean)}  std {num(st.std)}  "
            f"min {num(st.min)}  max {num(st.max)}  ‖·‖ {num(st.norm)}{bad}")


def collect(session) -> tuple[dict[str, np.ndarray], list[str]]:
    out: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    fwd, loss = session.record("forward"), session.record("loss")
    bwd, upd = session.record("backward"), session.record("update")
    if fwd is not None:
        _add(out, skipped, "forward/input", fwd.inputs)
        for name, value in zip(fwd.layer_names, fwd.outputs):
            _add(out, skipped, f"forward/output/{name}", value)
    if loss is not None:
        _add(out, skipped, "loss/target", loss.target)
        _add(out, skipped, "loss/per_sample", loss.per_sample)
    if bwd is not None:
        for name, value in bwd.grads.items():
            _add(out, skipped, f"backward/grad/{name}", value)
        for name, value in zip(fwd.layer_names if fwd is not None else (), bwd.deltas):
            _add(out, skipped, f"backward/delta/{name}", value)
    if upd is not None and (bwd is None or upd.step == bwd.step):
        for name, u in upd.params.items():
            for part in ("old", "grad", "new"):
                _add(out, skipped, f"update/{name}/{part}", getattr(u, part))
            for when, state in (("state_before", u.state_before), ("state_after", u.state_after)):
                for key, value in state.items():
                    _add(out, skipped, f"update/{name}/{when}/{key}", value)
    for name, value in session.backend.params().items():
        _add(out, skipped, f"params/{name}", value)
    return out, skipped


def summary(session, message: str) -> tuple[str, dict]:
    s = session
    loss = s.record("loss")
    bwd = s.record("backward")
    bad = s.find_nonfinite()
    meta = {
        "message": message, "cursor": str(s.cursor), "step": s.step_count,
        "phase_due": s.phase_due, "backend": s.backend.name, "device": s.backend.device, "dtype": s.backend.dtype,
        "loss": None if loss is None else loss.value, "losses": list(s.history.losses[-20:]),
        "grad_norms": None if bwd is None else dict(bwd.grad_norms),
        "nonfinite": None if bad is None else str(bad), "optimizer": repr(s.optimizer),
    }
    lines = [f"gdstep break: {message}", f"  at {s.cursor} ({s.backend.name} on {s.backend.device}, {s.backend.dtype})"]
    if bad is not None:
        lines.append(f"  first non-finite value: {bad}")
    if meta["losses"]:
        lines.append("  losses (latest last): " + ", ".join(num(v) for v in meta["losses"]))
    if bwd is not None:
        lines.append("  gradients:")
        lines += [_stats_line(name, g) for name, g in bwd.grads.items()]
    lines.append("  parameters:")
    lines += [_stats_line(name, p) for name, p in s.backend.params().items()]
    return "\n".join(lines) + "\n", meta


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
    data, skipped = collect(session)
    text, meta = summary(session, message)
    if skipped:
        meta["skipped"] = skipped
        text += f"  not written (over {MAX_ELEMENTS} elements): {', '.join(skipped)}\n"
    npz, txt = base.with_suffix(".npz"), base.with_suffix(".txt")
    np.savez(npz, meta=np.array(json.dumps(meta, default=str)), **data)
    txt.write_text(text, encoding="utf-8")
    return npz, txt
