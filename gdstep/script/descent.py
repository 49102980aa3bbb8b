"""The commands that show the descent rather than one step: `lanes`, `landscape`, `line`.

    lanes sgd lr=0.1 | sgd lr=0.1 momentum=0.9 | adam lr=0.01     fork lanes from here
    lanes run 200            lanes run until loss < 0.05          run them in lockstep
    lanes                    lanes adopt 2          lanes close   show, continue from one, drop them
    landscape [pca|random|gradient] [data=batch] [span=S] [path=N]   the loss around the weights
    line                                                          the loss along the next update

Lanes and adopt change the session, so they are recorded; landscape and line only look.
"""

from __future__ import annotations

from typing import Any, Callable

from gdstep.errors import GdstepError
from gdstep.fmt import num

DESCENT_COMMANDS = ("lanes", "landscape", "line")


def parse(word: str, rest: str, col: int, make: Callable, fail: Callable, condition: Callable, positive: Callable):
    """The Command for one of DESCENT_COMMANDS; `fail(column, message)` raises."""
    if word == "line":
        if rest:
            fail(col, "line takes no arguments")
        return make((), "line")
    if word == "landscape":
        options: dict[str, Any] = {"directions": "pca"}
        c = col
        for part in rest.split():
            key, eq, value = part.partition("=")
            if not eq and part in ("pca", "random", "gradient"):
                options["directions"] = part
            elif key == "data" and value in ("full", "batch"):
                options["data"] = value
            elif key == "path" and value.isdigit() and len(value) <= 6:
                options["path"] = int(value)
            elif key == "span":
                try:
                    options["span"] = float(value)
                except ValueError:
                    fail(c + 5, f"span: expected a number, got {value!r}")
            else:
                fail(c, f"landscape takes pca|random|gradient, data=full|batch, span=S and path=N, not {part!r}")
            c += len(part) + 1
        return make(("landscape", tuple(options.items())), f"landscape {rest}".strip())
    parts = rest.split()
    if not parts:
        return make(("show",), "lanes")
    if parts[0] in ("adopt", "close", "run"):
        what = parts[0]
        arg_col = col + len(what) + 1
        if what == "close":
            if len(parts) > 1:
                fail(arg_col, "lanes close takes no arguments")
            return make(("close",), "lanes close")
        if what == "adopt":
            if len(parts) != 2:
                fail(arg_col, "lanes adopt takes a lane's number, such as: lanes adopt 2")
            k = positive(parts[1], arg_col, "the lane number")
            return make(("adopt", k), f"lanes adopt {k}")
        if len(parts) < 2:
            fail(arg_col, "lanes run needs a count or a condition: lanes run 200, lanes run until loss < 0.1")
        if parts[1] == "until":
            text = rest.split("until", 1)[1].strip()
            if not text:
                fail(arg_col + 6, "lanes run until needs a condition, such as loss < 0.1")
            return make(("run", None, condition(text, arg_col + 6)), f"lanes run until {text}")
        if len(parts) > 2:
            fail(arg_col + len(parts[1]) + 1, "lanes run takes one number (or until COND)")
        n = positive(parts[1], arg_col, "the count")
        return make(("run", n, None), f"lanes run {n}")
    specs = [spec.strip() for spec in rest.split("|")]
    if any(not spec for spec in specs):
        fail(col, "lanes: an empty lane between '|' (write e.g. lanes sgd lr=0.1 | adam lr=0.01)")
    from gdstep.lanes import parse_lane
    try:
        for spec in specs:
            parse_lane(spec)
    except GdstepError as e:
        fail(col, str(e).removeprefix("lanes: "))
    return make(("fork", tuple(specs)), "lanes " + " | ".join(specs))


def run(session, command) -> tuple[list[str], dict, Any, str | None, bool]:
    """Run a descent command: (lines printed, values, run result, line recorded, failed)."""
    if command.name == "line":
        return _line(session), {}, None, None, False
    what = command.args[0]
    if what == "landscape":
        return _landscape(session, dict(command.args[1])), {}, None, None, False
    if what == "fork":
        lanes = session.lanes(list(command.args[1]))
        return [lane.label for lane in lanes.lanes], {}, None, command.text, False
    lanes = session.open_lanes
    if lanes is None:
        raise GdstepError("no lanes are open: fork them first, such as: lanes sgd lr=0.1 | adam lr=0.01")
    if what == "show":
        return lanes.summary().splitlines(), {}, None, None, False
    if what == "close":
        lanes.close()
        return ["lanes closed"], {}, None, command.text, False
    if what == "adopt":
        lanes.adopt(command.args[1])
        return [f"adopted lane {command.args[1]}: {session.cursor}"], {}, None, command.text, False
    _, steps, until = command.args
    lanes.run(steps, until.text if until is not None else None)
    return lanes.summary().splitlines(), {}, None, command.text, False


def _landscape(session, options: dict) -> list[str]:
    land = session.landscape(**options)
    lo = float(land.loss.min())
    i, j = divmod(int(land.loss.argmin()), land.loss.shape[1])
    a, b = land.path[-1]
    return [f"landscape ({land.directions}, {land.data} data, {land.loss.shape[1]}×{land.loss.shape[0]}): {land.note}",
            f"  {land.axes[0]} from {num(land.alphas[0])} to {num(land.alphas[-1])}, "
            f"{land.axes[1]} from {num(land.betas[0])} to {num(land.betas[-1])}",
            f"  loss from {num(lo)} to {num(float(land.loss.max()))}; lowest at ({num(land.alphas[j])}, {num(land.betas[i])})",
            f"  now at ({num(a)}, {num(b)}), the end of a path of {len(land.path)} steps"] + [
            f"  lane {k}: now at ({num(p[-1][0])}, {num(p[-1][1])})" for k, p in enumerate(land.lane_paths, start=1)]


def _line(session) -> list[str]:
    ln = session.line()
    k = int(ln.loss.argmin())
    verdict = ("the step overshoots: the loss after it is higher than before" if ln.at_one > ln.at_zero else
               "the step goes downhill" + (f"; the lowest loss along this line is at t = {ln.t[k]:.2f}"
                                           if abs(ln.t[k] - 1) > 1e-9 else ", to the lowest point along this line"))
    return [f"L(W + t·ΔW) along update {ln.step + 1}, on its batch:",
            f"  t = 0 (now): {num(ln.at_zero)}   t = 1 (the step): {num(ln.at_one)}   "
            f"lowest: {num(float(ln.loss[k]))} at t = {ln.t[k]:.2f}",
            f"  {verdict}"]
