"""The command line: `gdstep [SCENARIO] [--script FILE.gds]`, `list`, `run`, `replay`, `check`,
`lesson [N|NAME]`, `serve [LESSON]`.

Exit codes: 0 ok, 1 a failed expectation, 2 bad input — one line on stderr naming the
file, the line or key path, and what is wrong; never a traceback for a user mistake. 3 when
standard output is closed (`| head`: quietly) or full (one line on stderr); 130 on Ctrl+C and
143 on SIGTERM, after saying where training or the replay got to. Numerical RuntimeWarnings
are not printed: a non-finite value is reported by the run itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from typing import Sequence

from gdstep.errors import GdstepError

COMMANDS = ("list", "run", "replay", "check", "lesson", "serve")
OUTPUT_LOST = 3


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it stops as Ctrl+C does (files cleaned up)."""


class OutputLost(Exception):
    """Standard output was closed or is full."""

    def __init__(self, error: OSError):
        self.error = error


class _GuardedOutput:
    """sys.stdout, with a failed write turned into OutputLost (not any other OSError)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as e:
            raise OutputLost(e) from None

    def flush(self):
        try:
            self._stream.flush()
        except OSError as e:
            raise OutputLost(e) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


class UsageError(GdstepError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _backend_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("numpy", "torch"), default=None,
                   help="numpy (the exact reference; the default) or torch (a .py scenario always)")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (torch backend)")
    p.add_argument("--dtype", choices=("float64", "float32"), default=None, help="override the scenario's dtype")


def build_parser(command: str | None) -> argparse.ArgumentParser:
    if command is None:
        p = _Parser(prog="gdstep", description="Step through neural-network training one phase at a time. "
                    f"Commands: {', '.join(COMMANDS)} (gdstep COMMAND --help).")
        p.add_argument("scenario", nargs="?", default=None, help="a scenario file or a bundled name (default: xor)")
        p.add_argument("--script", default=None, metavar="FILE.gds",
                       help="play this script in the app as a lesson, one step at a time (space or → advances)")
        p.add_argument("--served", action="store_true", help=argparse.SUPPRESS)   # run by `gdstep serve`
        _backend_options(p)
        return p
    p = _Parser(prog=f"gdstep {command}")
    if command == "list":
        p.description = "The bundled scenarios."
    elif command == "check":
        p.description = "Validate a scenario and print what it would build."
        p.add_argument("scenario")
        p.add_argument("--parity", action="store_true", help="also run a few steps on numpy and torch and compare")
        _backend_options(p)
    elif command == "run":
        p.description = "Train headless with a progress bar, then print a summary."
        p.add_argument("scenario")
        p.add_argument("--epochs", type=int, default=None, help="train at most this many epochs")
        p.add_argument("--max-steps", type=int, default=None, help="train at most this many iterations")
        p.add_argument("--until", default=None, help='stop when this condition holds, e.g. "loss < 0.01"')
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        _backend_options(p)
    elif command == "lesson":
        p.description = "List the lessons, or play one in the app (space or → advances, other keys explore)."
        p.add_argument("lesson", nargs="?", default=None, help="the lesson's number or name")
        p.add_argument("--served", action="store_true", help=argparse.SUPPRESS)   # run by `gdstep serve`
        _backend_options(p)
    elif command == "serve":
        p.description = "Serve the app (or a lesson) to web browsers: one independent session per browser tab."
        p.add_argument("lesson", nargs="?", default=None, help="the lesson's number or name (default: the app on xor)")
        p.add_argument("--host", default="localhost", help="the address to listen on (default: localhost only)")
        p.add_argument("--port", type=int, default=8000, help="the port (default: 8000)")
    elif command == "replay":
        p.description = "Run a script headless and print a transcript."
        p.add_argument("scenario")
        p.add_argument("script")
        p.add_argument("--json", action="store_true", help="one JSON object per command")
        p.add_argument("--allow-writes", action="append", default=[], metavar="DIR",
                       help="also let the script write in DIR (by default only inside the working folder)")
        _backend_options(p)
    return p


def open_session(args):
    import gdstep
    from gdstep.bundled import resolve
    python = resolve(args.scenario).suffix == ".py"
    if python and args.backend == "numpy":
        raise UsageError(f"{args.scenario}: a Python scenario runs on the torch backend (leave out --backend numpy)")
    backend = args.backend or ("torch" if python else "numpy")
    session = gdstep.open(args.scenario, backend=backend, device=args.device, dtype=args.dtype)
    for event in session.events:
        if event.kind == "info":            # e.g. device "auto" fell back to the cpu
            print(f"gdstep: {event.message}", file=sys.stderr)
    return session


def cmd_list(args) -> int:
    from gdstep.bundled import DEFAULT, bundled
    rows = bundled()
    width = max((len(name) for name, _, _ in rows), default=0)
    for name, _, description in rows:
        mark = " (default)" if name == DEFAULT else ""
        print(f"{name:<{width}}  {description}{mark}")
    return 0


def cmd_check(args) -> int:
    from gdstep.summary import describe_scenario
    session = open_session(args)
    print(describe_scenario(session))
    if args.parity:
        print(session.compare_backends(device=args.device))
    return 0


def cmd_run(args) -> int:
    from gdstep.summary import run_summary
    session = open_session(args)
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError(f"gdstep run: --epochs must be at least 1, got {args.epochs}")
        session.epochs = args.epochs
    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError(f"gdstep run: --max-steps must be at least 1, got {args.max_steps}")
    until = None
    if args.until:
        from gdstep.conditions import parse_condition
        try:
            until = parse_condition(args.until).check_names(session.backend.param_shapes)
        except GdstepError as e:
            raise UsageError(f"gdstep run: --until: {e}") from None
    started = time.perf_counter()
    try:
        result = _run_with_progress(session, until, args.max_steps, quiet=args.quiet)
    except KeyboardInterrupt as e:     # Ctrl+C or SIGTERM: say where training got to, then stop
        from gdstep.records import RunResult, StopReason
        how = "SIGTERM" if isinstance(e, Terminated) else "Ctrl+C"
        result = RunResult(StopReason.INTERRUPTED, 0, session.step_count, session.cursor, f"interrupted ({how})")
        print(run_summary(session, result, time.perf_counter() - started))
        return 143 if isinstance(e, Terminated) else 130
    print(run_summary(session, result, time.perf_counter() - started))
    return 0


def _run_with_progress(session, until, max_steps, quiet: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        return session.run(until=until, max_steps=max_steps)
    total = max_steps or session.epochs * session.iterations_per_epoch
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task(session.scenario.name, total=total, loss="–")
        last = [0.0]

        def tick() -> bool:
            now = time.perf_counter()
            if now - last[0] > 0.1:
                last[0] = now
                loss = session.loss_value
                progress.update(task, completed=session.step_count, loss=f"{loss:.6g}" if loss is not None else "–")
            return False

        return session.run(until=until, max_steps=max_steps, on_phase=tick)


def cmd_replay(args) -> int:
    from gdstep.script.replay import replay
    from gdstep.tui.screenshot import headless_screenshot     # imports the app only when a script shoots
    from gdstep.script.writes import WritePolicy
    from pathlib import Path
    for folder in args.allow_writes:
        if not Path(folder).is_dir():
            raise UsageError(f"gdstep replay: --allow-writes {folder}: no such folder")
    session = open_session(args)
    writes = WritePolicy(Path.cwd()).allowing(*args.allow_writes)
    try:
        return replay(session, args.script, json_lines=args.json, screenshot=headless_screenshot, writes=writes)
    except KeyboardInterrupt as e:      # replay has said which line it reached
        return 143 if isinstance(e, Terminated) else 130


def _need_terminal(args) -> None:
    if args.served:                      # textual-serve's web driver talks through pipes
        return
    if not (sys.stdin.isatty() and sys.__stderr__.isatty()):   # Textual reads stdin, draws on stderr
        raise UsageError("gdstep: the app needs a terminal; without one use "
                         f"`gdstep run {args.scenario or 'xor'}` or `gdstep replay SCENARIO SCRIPT`")


def cmd_tui(args) -> int:
    from gdstep.tui.app import run_tui
    session = open_session(args)
    commands = _lesson_script(session, args.script) if args.script else None
    _need_terminal(args)
    if commands is not None:
        from pathlib import Path
        from gdstep.tui.lesson_app import run_lesson
        return run_lesson(session, commands, Path(args.script).name, served=args.served)
    if args.served:
        from gdstep.tui.lesson_app import run_served
        return run_served(session)
    return run_tui(session)


def _lesson_script(session, path):
    """A script parsed and its names checked against the session: mistakes before the app opens."""
    from gdstep.script import Runner, parse_script
    from gdstep.script.replay import read_script
    text, file = read_script(path)
    commands = parse_script(text, file)
    probe = Runner(session)
    probe.file = file
    for command in commands:
        probe.check(command)
    return commands


def cmd_lesson(args) -> int:
    from gdstep import lessons
    catalogue = lessons.load()
    if args.lesson is None:
        for line in lessons.listing(catalogue):
            print(line)
        return 0
    lesson = lessons.find(args.lesson, catalogue)
    args.scenario = str(lesson.scenario)
    args.backend = args.backend or lesson.backend
    session = open_session(args)
    commands = _lesson_script(session, lesson.script)
    _need_terminal(args)
    from gdstep.tui.lesson_app import run_lesson
    return run_lesson(session, commands, f"lesson {lesson.number} · {lesson.title}", served=args.served)


def cmd_serve(args) -> int:
    from gdstep.tui.serve import serve
    return serve(args.lesson, args.host, args.port)


def _terminate(signum, frame):
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    stdout = sys.stdout
    previous = None
    if command is not None:             # the app handles its own signals
        sys.stdout = _GuardedOutput(stdout)
        try:
            previous = signal.signal(signal.SIGTERM, _terminate)
        except ValueError:              # not the main thread
            pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            args = build_parser(command).parse_args(argv[1:] if command else argv)
            handler = {"list": cmd_list, "check": cmd_check, "run": cmd_run, "replay": cmd_replay, "lesson": cmd_lesson,
                       "serve": cmd_serve, None: cmd_tui}[command]
            code = handler(args)
            sys.stdout.flush()
            return code
    except GdstepError as e:
        print(f"gdstep: {e}" if not str(e).startswith("gdstep") else str(e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print("gdstep: interrupted" + (" (SIGTERM)" if isinstance(e, Terminated) else ""), file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except (OutputLost, BrokenPipeError) as e:   # `gdstep replay … | head`: the reader left
        error = e.error if isinstance(e, OutputLost) else e
        _silence(stdout)
        if not isinstance(error, BrokenPipeError):
            print(f"gdstep: standard output: {error.strerror or error}", file=sys.stderr)
        return OUTPUT_LOST
    finally:
        sys.stdout = stdout
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _silence(stream) -> None:
    """Nothing more goes to a standard output that is gone (nor at exit, when Python flushes)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
