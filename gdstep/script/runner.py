"""The Runner executes commands on a Session and keeps the recording.

Scripts, the TUI's `:` prompt and the TUI's keys all go through one Runner, so the
recording (`runner.lines`) replays to the same state, bit for bit. A run paused from the
outside (the TUI's `r`) is recorded as `next K`, the phases it actually ran. This package
never imports the app: whoever has one (the command line, the app itself) hands the Runner
its screenshot function.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gdstep import arrays
from gdstep.conditions import Condition
from gdstep.errors import GdstepError, ScriptError, index_problem, suggest
from gdstep.fmt import index_text, num, show
from gdstep.gradcheck import GradCheck
from gdstep.records import RunResult
from gdstep.script import descent
from gdstep.script.outcome import Outcome
from gdstep.script.parser import Command, parse_command
from gdstep.script.writes import WritePolicy

OnPhase = Callable[[], bool] | None
Screenshot = Callable[[Any, "str | Path"], Path]    # (session, FILE.svg) -> the file written


class Runner:
    """Executes commands on `session`; `screenshot(session, path)` saves an SVG of the app
    drawing it (without one, `screenshot FILE.svg` is an error that says so). `writes` says
    where save, export and screenshot may write: by default, as a stranger's script may
    (gdstep.script.writes); the app's prompt passes WritePolicy.anywhere()."""

    def __init__(self, session, screenshot: Screenshot | None = None, writes: WritePolicy | None = None):
        self.session = session
        self.screenshot = screenshot
        self.writes = writes or WritePolicy(Path.cwd())
        self.watches: list[Condition] = []
        self.lines: list[str] = []
        self.file: str | None = None   # the script being replayed, for error messages
        self._shown: dict[str, Any] = {}  # each watch's value as last printed

    # -- entry points ------------------------------------------------------------------------

    def execute_line(self, text: str, on_phase: OnPhase = None, line: int | None = None,
                     file: str | None = None) -> Outcome:
        """Parse and run one line; a mistake comes back as ok=False, the session unchanged."""
        try:
            command = parse_command(text, line, file)
        except ScriptError as e:
            return self._outcome(text.strip(), line, False, (), str(e), error=True, exception=e)
        if command is None:
            return self._outcome("", line, True, (), "")
        return self.execute(command, on_phase)

    def execute(self, command: Command, on_phase: OnPhase = None) -> Outcome:
        try:
            self.check(command)
            handler = getattr(self, f"_do_{command.name}", None) or self._do_phase
            lines, values, result, record, failed = handler(command, on_phase)
        except GdstepError as e:
            if command.line is not None and not isinstance(e, ScriptError):
                e = ScriptError(self.file, command.line, command.column, str(e))
            return self._outcome(command.text, command.line, False, (), str(e), error=True, exception=e)
        if record:
            self.lines.append(record)
        lines = list(lines)
        values = dict(values)
        if command.name not in ("watch", "unwatch", "save", "screenshot", "export"):
            lines.extend(self._watch_lines(values))
        message = lines[0] if lines else command.text
        check = result if isinstance(result, GradCheck) else None
        return self._outcome(command.text, command.line, not failed, tuple(lines), message, values,
                             None if check else result, failed_expect=failed, gradcheck=check)

    def run_to(self, phase: str, on_phase: OnPhase = None) -> Outcome:
        """The TUI's f/l/b/u keys: run until `phase` has just run; recorded as `next K`."""
        def go():
            return self.session.run_to(phase, on_phase=on_phase)
        return self._moved(f"run to the end of {phase}", go)

    def run(self, on_phase: OnPhase = None) -> Outcome:
        """The TUI's r key: run on until something stops it or `on_phase` pauses it."""
        return self.execute(parse_command("run"), on_phase)

    def save(self, path: str | Path) -> Path:
        from gdstep.files import atomic_write
        from gdstep.provenance import header
        return atomic_write(path, header(self.session, Path(path).name) + "".join(f"{line}\n" for line in self.lines))

    def check(self, command: Command) -> None:
        """Refuse names the session does not have, with the command's line and column."""
        shapes = self.session.backend.param_shapes
        attached = getattr(self.session, "attached", False)
        for arg in command.args:
            if isinstance(arg, Condition):
                try:
                    arg.check_names(shapes, attached=attached)
                except GdstepError as e:
                    at = command.source.find(arg.text)
                    column = at + (getattr(e, "column", None) or 1) if at >= 0 else None
                    raise ScriptError(self.file, command.line, column, e.message) from None
        if command.name == "say":
            _check_say(self.file, command, shapes, attached)
        if command.name == "gradcheck" or (command.name == "print" and command.args[0] in ("tensor", "state")):
            name = command.args[0] if command.name == "gradcheck" else command.args[1]
            if name not in shapes:
                raise ScriptError(self.file, command.line, command.source.find(name) + 1 or None,
                                  f"no parameter {name!r}" + suggest(name, shapes, "parameters"))
            if command.name == "gradcheck":
                problem = index_problem(name, shapes[name], command.args[1])
                if problem:
                    raise ScriptError(self.file, command.line, command.source.find("[") + 1 or None, problem)

    # -- helpers -----------------------------------------------------------------------------

    def _outcome(self, command: str, line: int | None, ok: bool, lines: tuple[str, ...], message: str,
                 values: dict | None = None, result: RunResult | None = None, failed_expect: bool = False,
                 error: bool = False, exception: Exception | None = None, gradcheck: GradCheck | None = None) -> Outcome:
        s = self.session
        return Outcome(command, line, ok, lines, message, s.cursor, s.step_count, s.loss_value, values or {}, result,
                       gradcheck, failed_expect, error, exception)

    def _moved(self, text: str, go: Callable[[], RunResult]) -> Outcome:
        try:
            result = go()
        except GdstepError as e:
            return self._outcome(text, None, False, (), str(e), error=True)
        if result.phases:
            self.lines.append("next" if result.phases == 1 else f"next {result.phases}")
        lines = [self._run_line(text, result)]
        values: dict[str, Any] = {}
        lines.extend(self._watch_lines(values))
        return self._outcome(text, None, True, tuple(lines), lines[0], values, result)

    def _watch_lines(self, values: dict[str, Any]) -> list[str]:
        """Each watch's value goes into `values`; a line is printed when it changed."""
        lines = []
        for watch in self.watches:
            value = watch(self.session)
            values[watch.text] = value
            shown = show(value)
            if self._shown.get(watch.text) != shown:
                self._shown[watch.text] = shown
                lines.append(f"watch {watch.text} = {shown}")
        return lines

    def _run_line(self, text: str, result: RunResult) -> str:
        s = self.session
        loss = s.loss_value
        where = f"{s.where if result.cursor == s.cursor else result.cursor}" + (f" · loss {num(loss)}" if loss is not None else "")
        what = {"done": "done", "paused": "paused", "max_steps": "reached max"}.get(result.reason, result.message)
        if result.reason == "epochs" and not result.phases:
            return f"{text}: {what} — `set epochs N` to go further, or step with s and e — {where}"
        if result.reason == "stop_when" and result.steps <= 1:
            return (f"{text}: {what} — it still holds, so a run stops again at once; step with s, e or "
                    f"`step N` to go past it — {where}")
        return f"{text}: {what} after {_count(result.steps, 'iteration')} ({_count(result.phases, 'phase')}) — {where}"

    def _record_run(self, command: Command, result: RunResult) -> str | None:
        if result.reason == "paused":
            return ("next" if result.phases == 1 else f"next {result.phases}") if result.phases else None
        return command.text

    # -- commands ----------------------------------------------------------------------------

    def _do_lanes(self, command: Command, on_phase: OnPhase):
        return descent.run(self.session, command)

    _do_landscape = _do_line = _do_lanes

    def _do_phase(self, command: Command, on_phase: OnPhase):
        s = self.session
        record = getattr(s, command.name)()
        return _describe_phase(s, command.name, record), {}, None, command.text, False

    def _do_next(self, command: Command, on_phase: OnPhase):
        s = self.session
        n = command.args[0]
        done = 0
        last = None
        for _ in range(n):
            phase = s.phase_due
            last = (phase, s.next_phase())
            done += 1
            if on_phase is not None and done < n and on_phase():
                break
        lines = _describe_phase(s, *last) if n == 1 else [f"next {n}: ran {_count(done, 'phase')} — {s.where}"]
        record = "next" if done == 1 else f"next {done}"
        return lines, {}, None, record, False

    def _do_step(self, command: Command, on_phase: OnPhase):
        result = self.session.step(command.args[0], on_phase=on_phase)
        return [self._run_line(command.text, result)], {}, result, self._record_run(command, result), False

    def _do_epoch(self, command: Command, on_phase: OnPhase):
        result = self.session.epoch(command.args[0], on_phase=on_phase)
        return [self._run_line(command.text, result)], {}, result, self._record_run(command, result), False

    def _do_run(self, command: Command, on_phase: OnPhase):
        until, max_steps = command.args
        result = self.session.run(until=until, max_steps=max_steps, on_phase=on_phase)
        return [self._run_line(command.text, result)], {}, result, self._record_run(command, result), False

    def _do_back(self, command: Command, on_phase: OnPhase):
        n, unit = command.args
        before, position = self.session.where, self.session.position
        self.session.back(phases=n) if unit == "phases" else self.session.back(iterations=n)
        clamped = " (clamped at the start)" if position < (n if unit == "phases" else 4 * n) else ""
        return [f"{command.text}: from {before} to {self.session.where}{clamped}"], {}, None, command.text, False

    def _do_set(self, command: Command, on_phase: OnPhase):
        s = self.session
        kind = command.args[0]
        if kind == "lr":
            at = s.set(lr=command.args[1], **({"group": command.args[2]} if len(command.args) > 2 else {}))
        elif kind == "epochs":     # a limit for runs, not a training setting: no new branch
            s.epochs = command.args[1]
            event = s.log("setting", f"epoch limit → {s.epochs} (runs stop at the end of epoch {s.epochs})")
            return [f"{command.text}: {event.message}"], {}, None, command.text, False
        elif kind == "stop_when":  # a condition for runs, not a training setting: no new branch
            s.set_stop_when(command.args[1])
            return [f"{command.text}: {s.events[-1].message}"], {}, None, command.text, False
        elif kind == "batch_size":
            at = s.set(batch_size=command.args[1])
        elif kind == "optimizer":
            at = s.set(optimizer=command.args[1], **dict(command.args[2]))
        else:
            at = s.set(**{command.args[1]: command.args[2]}, **({"group": command.args[3]} if len(command.args) > 3 else {}))
        return [f"{command.text}: from step {at} — {s.events[-1].message}"], {}, None, command.text, False

    def _do_break(self, command: Command, on_phase: OnPhase):
        bp = self.session.add_breakpoint(command.args[0].text)
        return [f"breakpoint {bp.id}: {bp.text}"], {}, None, command.text, False

    def _do_unbreak(self, command: Command, on_phase: OnPhase):
        if command.args[0] is None:
            removed = [self.session.remove_breakpoint(bp.id) for bp in list(self.session.breakpoints)]
            return [f"{_count(len(removed), 'breakpoint')} removed"], {}, None, command.text, False
        bp = self.session.remove_breakpoint(command.args[0])
        return [f"breakpoint {bp.id} removed: {bp.text}"], {}, None, command.text, False

    def _do_watch(self, command: Command, on_phase: OnPhase):
        expr = command.args[0]
        if all(w.text != expr.text for w in self.watches):
            self.watches.append(expr)
        value = expr(self.session)
        self._shown[expr.text] = show(value)
        return [f"watch {expr.text} = {show(value)}"], {expr.text: value}, None, command.text, False

    def _do_unwatch(self, command: Command, on_phase: OnPhase):
        expr = command.args[0]
        if expr is None:
            self.watches.clear()
            return ["no watches"], {}, None, command.text, False
        before = len(self.watches)
        self.watches = [w for w in self.watches if w.text != expr.text]
        if len(self.watches) == before:
            raise GdstepError(f"not watching {expr.text} (watching: {', '.join(w.text for w in self.watches) or 'nothing'})")
        return [f"unwatched {expr.text}"], {}, None, command.text, False

    def _do_print(self, command: Command, on_phase: OnPhase):
        s = self.session
        what, arg = command.args
        if what == "value":
            value = arg(s)
            return [f"{arg.text} = {show(value)}"], {arg.text: value}, None, command.text, False
        if what == "tensor":
            value = arrays.to_numpy(s.backend.params()[arg])
            return _tensor_lines(arg, value), {arg: value}, None, command.text, False
        state = s.optimizer_state.get(arg)
        if state is None:
            raise GdstepError(f"{arg} has no optimizer state (it is frozen)")
        empty = "  (none: this optimizer keeps no state)" if s.step_count else "  (empty until the first update)"
        owner, pending = s.backend.optimizer, s.optimizer       # the state is the running optimizer's
        lines = [f"state {arg} ({owner.kind}):"] + ([] if state else [empty])
        if pending.kind != owner.kind:                          # `set optimizer`: fresh at the next iteration
            lines.append(f"  ({pending.kind} starts at the next iteration, with fresh state; this is {owner.kind}'s)")
        values = {}
        for key, value in state.items():
            values[f"{arg}.{key}"] = value
            if value is None or isinstance(value, (int, float)):
                lines.append(f"  {key} = {value if value is not None else 'None (set at the first update)'}")
            else:
                lines.extend("  " + line for line in _tensor_lines(key, np.asarray(value)))
        return lines, values, None, command.text, False

    def _do_gradcheck(self, command: Command, on_phase: OnPhase):
        name, index = command.args
        check = self.session.gradcheck(name, index)
        label = f"{name}{index_text(index)}"
        values = {f"{label} analytic": check.analytic, f"{label} numeric": check.numeric,
                  f"{label} relative error": check.rel_error, f"{label} ok": check.ok}   # for --json
        return [str(check)], values, check, command.text, False

    def _do_expect(self, command: Command, on_phase: OnPhase):
        cond = command.args[0]
        ok = cond(self.session)
        detail = cond.describe(self.session)
        line = f"expect {cond.text}: {'ok' if ok else 'FAILED'}" + (f" ({detail})" if detail else "")
        return [line], {"expect": ok}, None, command.text, not ok

    def _do_say(self, command: Command, on_phase: OnPhase):
        text = command.args[0](self.session)
        return [text], {"say": text}, None, command.text, False

    def _do_screenshot(self, command: Command, on_phase: OnPhase):
        path = command.args[0]
        if self.screenshot is not None:
            path = self.writes.check(command.name, path, command.args[1])
        if self.screenshot is None:
            raise GdstepError(f"screenshot {path}: screenshots need the app, and this Runner was made without it "
                              "(gdstep replay and the app itself pass one: Runner(session, screenshot=...))")
        self.screenshot(self.session, path)
        return [f"screenshot saved to {path}"], {}, None, None, False

    def _do_export(self, command: Command, on_phase: OnPhase):
        from gdstep.script.export import export_markdown
        path = export_markdown(self.session, self.writes.check(command.name, *command.args))
        return [f"worked example written to {path}"], {}, None, None, False

    def _do_save(self, command: Command, on_phase: OnPhase):
        path = self.save(self.writes.check(command.name, *command.args))
        return [f"recording of {_count(len(self.lines), 'command')} saved to {path}"], {}, None, None, False


def _check_say(file: str | None, command: Command, shapes, attached: bool = False) -> None:
    """A say field naming a parameter the session lacks, at its column on the line."""
    at = command.source.find('"')
    for field in command.args[0].fields:
        try:
            field.expression.check_names(shapes, attached=attached)
        except GdstepError as e:
            column = at + 1 + field.column + ((getattr(e, "column", None) or 1) - 1) if at >= 0 else None
            raise ScriptError(file, command.line, column, e.message) from None


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _tensor_lines(name: str, value: np.ndarray, limit: int = 8) -> list[str]:
    shape = "×".join(map(str, value.shape)) or "scalar"
    if value.size <= limit * limit and value.ndim <= 2:
        rows = np.atleast_2d(value) if value.ndim == 2 else value.reshape(1, -1)
        body = ["  [" + ", ".join(num(v) for v in row) + "]" for row in rows]
        return [f"{name} ({shape}) ="] + body
    st = arrays.stats(value)
    return [f"{name} ({shape}): mean {num(st.mean)}, std {num(st.std)}, min {num(st.min)}, max {num(st.max)}, norm {num(st.norm)}"
            + (f", {st.nonfinite} non-finite" if st.nonfinite else "")]


def _describe_phase(session, phase: str, record) -> list[str]:
    if phase == "forward":
        rows = arrays.to_numpy(record.indices)
        shown = ", ".join(map(str, rows[:8])) + (", …" if len(rows) > 8 else "")
        out = arrays.to_numpy(record.output)
        if out is None or out.ndim == 0:
            return [f"forward: {_count(len(rows), 'sample')} (rows {shown})"]
        flat = out.reshape(out.shape[0], -1) if out.ndim > 1 and out.shape[0] else out.reshape(1, -1)
        first = ", ".join(num(v) for v in flat[0][:6]) + (", …" if flat.shape[1] > 6 else "")
        shape = "×".join(map(str, out.shape))
        return [f"forward: {_count(len(rows), 'sample')} (rows {shown}) → output {shape}; first row [{first}]"]
    if phase == "loss":
        change = ""
        prev = session.prev_loss
        if prev is not None and math.isfinite(prev):
            delta = record.value - prev
            change = f", {'+' if delta >= 0 else '−'}{num(abs(delta))} since the last iteration"
        return [f"loss: {num(record.value)} ({record.kind}){change}"]
    if phase == "backward":
        parts = ", ".join(f"‖∇{n}‖ {num(v)}" for n, v in list(record.grad_norms.items())[:6])
        return [f"backward: ‖∇L‖ = {num(record.grad_norm)}" + (f" ({parts})" if parts else "")]
    if phase == "update":
        ratio = record.update_ratio() if record.params else 0.0
        kind = getattr(record.optimizer, "kind", type(record.optimizer).__name__)
        return [f"update {record.step + 1}: {kind}, lr {record.lr:g}; ‖ΔW‖/‖W‖ = {num(ratio)} — {session.where}"]
    return [phase]
