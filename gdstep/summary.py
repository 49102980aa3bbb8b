"""Plain-text reports for the command line: what a scenario builds, how a run ended."""

from __future__ import annotations

import math

from gdstep.fmt import num
from gdstep.optim import hyperparameters


def _optimizer_text(opt) -> str:
    try:
        args = ", ".join(f"{k}={v!r}" if not isinstance(v, float) else f"{k}={v:g}" for k, v in hyperparameters(opt).items())
    except TypeError:
        return repr(opt)
    return f"{opt.kind}({args})"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def describe_scenario(session) -> str:
    s, b = session.scenario, session.backend
    ds = s.dataset
    lines = [f"{s.file}: ok", f"  {s.name}" + (f" — {s.description}" if s.description else "")]
    if ds is not None:
        what = f"{_count(ds.n, 'sample')} × {_count(ds.n_features, 'feature')}"
        if ds.is_classification:
            what += f", {ds.n_classes} classes"
        else:
            what += f", {ds.y.shape[1]} target{'s' if ds.y.shape[1] > 1 else ''}"
        lines.append(f"  data       {s.data.kind}: {what}")
    n_params = sum(math.prod(shape) for shape in b.param_shapes.values())
    n_train = sum(math.prod(shape) for name, shape in b.param_shapes.items() if name in b.trainable)
    layer_text = " → ".join(info.text for info in b.layers)
    lines.append(f"  model      {layer_text}")
    frozen = f", {n_params - n_train} frozen" if n_train != n_params else ""
    init = s.model.init + (f" (scale {s.model.init_scale:g})" if s.model.init_scale else "")
    explicit = f", explicit values for {', '.join(s.init)}" if s.init else ""
    lines.append(f"  parameters {n_params} ({', '.join(f'{n} {tuple(sh)}' for n, sh in b.param_shapes.items())}){frozen}; init {init}{explicit}")
    lines.append(f"  loss       {s.loss}")
    lines.append(f"  optimizer  {_optimizer_text(s.optimizer)}")
    t = s.training
    batch = "full batch" if t.batch_size is None else f"batch {t.batch_size}"
    lines.append(f"  training   {batch} ({_count(session.iterations_per_epoch, 'iteration')}/epoch), {t.epochs} epochs, "
                 f"{'shuffled' if t.shuffle else 'in order'}" + (f"; stop when {t.stop_when}" if t.stop_when else ""))
    for bp in session.breakpoints:
        lines.append(f"  breakpoint {bp.id}: {bp.text}")
    lines.append(f"  backend    {b.name} on {b.device}, {b.dtype}, seed {s.seed}")
    return "\n".join(lines)


def run_summary(session, result, seconds: float) -> str:
    s = session.scenario
    loss, accuracy = session.evaluate()
    steps = session.step_count
    rate = f" ({steps / seconds:,.0f} iterations/s)" if seconds > 0 and steps else ""
    lines = [f"{s.name} — {session.backend.name} on {session.backend.device}, {session.backend.dtype}",
             f"  stopped    {result.message}",
             f"  at         {session.where} — {_count(steps, 'iteration')} in {seconds:.2f} s{rate}"]
    last = session.loss_value
    data = f"on all {session.n} samples" if session.n > 1 else "on the 1 sample"
    loss_line = f"  loss       {num(loss)} {data}"
    if last is not None:
        loss_line += f" (last batch {num(last)})"
    lines.append(loss_line)
    if accuracy is not None:
        lines.append(f"  accuracy   {accuracy:.1%}")
    return "\n".join(lines)
