"""`gdstep serve [LESSON]`: the app in a web browser, through textual-serve.

Each browser tab that opens the page gets its own process running `gdstep` (or `gdstep
lesson LESSON`), so every learner has an independent session. It listens on localhost
unless told otherwise (`--host 0.0.0.0` for a classroom: anyone who can reach the port gets
an app; its files go to a temporary folder on this computer, never elsewhere).
"""

from __future__ import annotations

import shlex
import socket
import sys

from gdstep.errors import GdstepError


def served_command(lesson: str | None) -> str:
    """The shell command textual-serve runs for each tab."""
    args = [sys.executable, "-m", "gdstep.cli"] + (["lesson", lesson] if lesson is not None else []) + ["--served"]
    return shlex.join(args)


def serve(lesson: str | None, host: str = "localhost", port: int = 8000) -> int:
    if lesson is not None:
        from gdstep import lessons
        lesson = str(lessons.find(lesson).number)            # a bad lesson: one line, before serving
    if not 1 <= port <= 65535:
        raise GdstepError(f"gdstep serve: --port must be between 1 and 65535, got {port}")
    try:
        from textual_serve.server import Server
    except ImportError:
        raise GdstepError("gdstep serve needs the textual-serve package: pip install textual-serve") from None
    _check_port(host, port)
    title = "gdstep" + (f" — lesson {lesson}" if lesson else "")
    Server(served_command(lesson), host=host, port=port, title=title).serve()
    return 0


def _check_port(host: str, port: int) -> None:
    """A port in use or a host that is not this machine's: one line, not aiohttp's traceback."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise GdstepError(f"gdstep serve: --host {host}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            raise GdstepError(f"gdstep serve: cannot listen on {host}:{port}: {e.strerror or e}") from None
