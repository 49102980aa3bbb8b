"""User-facing errors: each prints as one line and maps to an exit code.

A user mistake (a bad scenario, script, condition or argument) is a `GdstepError`: the
command line prints `str(error)` and exits 2, the TUI writes it to the event log. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


def suggest(word: str, options, what: str = "expected one of") -> str:
    """`; did you mean 'tanh'?` for a near miss, else the list of what there is."""
    import difflib
    options = list(options)
    hint = difflib.get_close_matches(word, options, n=1)
    if hint:
        return f"; did you mean {hint[0]!r}?"
    return f" ({what}: {', '.join(options)})" if options else ""


def index_problem(name: str, shape, index) -> str | None:
    """What is wrong with `index` as an element of parameter `name`, or None."""
    if len(index) != len(shape):
        return (f"{name} has shape {tuple(shape)}: an element of it takes {len(shape)} "
                f"ind{'ex' if len(shape) == 1 else 'ices'}, got {len(index)} ({list(index)})")
    if any(not 0 <= i < n for i, n in zip(index, shape)):
        return f"index {list(index)} is out of range for {name} of shape {tuple(shape)}"
    return None


class Abandoned(Exception):
    """A computation given up part way because its caller's `stop()` said so (the app's
    landscape, when a key needs the worker): nothing it would have made exists."""


class HyperparameterError(ValueError):
    """An optimizer argument torch.optim would refuse; `key` names it (None: the call as a whole)."""

    def __init__(self, key: str | None, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}" if key else message)


class MissingColumn(ValueError):
    """A csv file without the column a scenario names."""

    def __init__(self, column: str, header: list[str]):
        self.column = column
        shown = [h if len(h) <= 24 else h[:23] + "…" for h in header[:12]] + (["…"] if len(header) > 12 else [])
        super().__init__(f"no column {column!r} (columns: {', '.join(shown)})")


def _short(message: str, limit: int = 400) -> str:
    """An error is one readable line: a message quoting a stranger's file is cut short."""
    return message if len(message) <= limit else message[:limit - 1] + "…"


class GdstepError(Exception):
    """A mistake of the user's, described in one line."""

    exit_code = 2


class ScenarioError(GdstepError):
    """A scenario that cannot be built: names the file, the key path and what is wrong."""

    def __init__(self, file: str | None, where: str | None, message: str):
        self.file, self.where, self.message = file, where, _short(message)
        super().__init__(": ".join(p for p in (file, where, self.message) if p))


class ConditionError(GdstepError):
    """A condition that does not parse or names something unknown; `column` is 1-based."""

    def __init__(self, text: str, column: int | None, message: str):
        self.text, self.column, self.message = text, column, message
        where = f" at column {column}" if column is not None else ""
        shown = text if len(text) <= 80 else text[:79] + "…"
        super().__init__(f"condition {shown!r}{where}: {message}")


class ScriptError(GdstepError):
    """A script line that does not parse or cannot run; line and column are 1-based."""

    def __init__(self, file: str | None, line: int | None, column: int | None, message: str):
        self.file, self.line, self.column, self.message = file, line, column, _short(message)
        message = self.message
        if file is None and line is None:       # one line typed at the prompt
            super().__init__(f"column {column}: {message}" if column is not None else message)
            return
        place = file or "<script>"
        if line is not None:
            place += f":{line}"
            if column is not None:
                place += f":{column}"
        super().__init__(f"{place}: {message}")


class PhaseOrderError(GdstepError):
    """A phase called out of turn; names the phase that is due."""

    def __init__(self, called: str, due: str):
        self.called, self.due = called, due
        super().__init__(f"cannot run {called}: {due} is due next (forward → loss → backward → update)")


class BackendError(GdstepError):
    """A backend or device that is not available here (torch missing, no CUDA)."""


class BreakpointHit(Exception):
    """Raised in attach mode when on_break="raise" and a breakpoint fires: by `dbg.step`, or
    in watch mode by `dbg.watch` or by the optimizer's `step()` (whose update it checks).
    `session` is the attached Session, standing where the breakpoint fired."""

    def __init__(self, message: str, session):
        super().__init__(message)
        self.message, self.session = message, session


class BatchesGone(GdstepError):
    """Attach mode: a recomputation would start at a checkpoint older than the loop's kept
    batches (Rewind._attached_checkpoint then tries the one at the iteration's own start)."""


class BackwardAgain(GdstepError):
    """A backward that torch.autograd.grad could not take: the model began to run a
    reentrant torch.utils.checkpoint after its first iteration. The backend takes
    loss.backward() from now on; the iteration is computed again from its start (a rewind:
    exact), by whoever was computing it (`Debugger.step`, `Rewind._recompute_to`)."""
