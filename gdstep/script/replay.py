"""`gdstep replay SCENARIO SCRIPT [--json]`: run a script headless and print a transcript.

Exit 0 when every command ran and every `expect` held, 1 at the first failed `expect`
(the transcript names its line and the values it read), 2 for a script that does not
parse or a command that cannot run (one line on stderr naming file, line and column),
130 when interrupted (the line reached is printed first).

A script is a document from a stranger: it writes only as `writes` allows (by default inside
the working folder; see gdstep.script.writes). A recording made by `save` carries its
provenance; when the scenario, its data or the environment differ, replay says so on
stderr before it starts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from gdstep.errors import ScriptError
from gdstep.script.parser import parse_script
from gdstep.script.runner import Runner, Screenshot
from gdstep.script.writes import WritePolicy


def read_script(path: str | Path) -> tuple[str, str]:
    file = str(path)
    try:
        return Path(path).read_text(encoding="utf-8"), file
    except FileNotFoundError:
        raise ScriptError(file, None, None, "no such file") from None
    except IsADirectoryError:
        raise ScriptError(file, None, None, "is a directory, not a script") from None
    except UnicodeDecodeError:
        raise ScriptError(file, None, None, "is not a UTF-8 text file") from None
    except OSError as e:
        raise ScriptError(file, None, None, e.strerror or str(e)) from None


def drift(session, text: str) -> list[str]:
    """What differs between a recording's provenance and this session (empty: nothing, or none)."""
    from gdstep.provenance import differences, provenance, recorded
    before = recorded(text)
    return differences(before, provenance(session)) if before else []


def replay(session, script: str | Path, json_lines: bool = False, out: TextIO | None = None,
           screenshot: Screenshot | None = None, writes: WritePolicy | None = None,
           warn: TextIO | None = None) -> int:
    """`screenshot` saves the app's picture for `screenshot FILE.svg` (the command line passes it)."""
    out = out or sys.stdout
    text, file = read_script(script)
    commands = parse_script(text, file)
    runner = Runner(session, screenshot=screenshot, writes=writes)
    runner.file = file
    for command in commands:        # every name checked before anything runs
        runner.check(command)
    changed = drift(session, text)
    if changed:
        print(f"gdstep: {file}: recorded elsewhere: {'; '.join(changed)} — the replay may not reach the same state",
              file=warn or sys.stderr)
    if not json_lines:
        print(f"replaying {file} on {session.describe()}", file=out)
    for command in commands:
        try:
            outcome = runner.execute(command)
        except KeyboardInterrupt:
            print(f"interrupted at {file}:{command.line} ({command.text}) — {session.cursor}", file=out, flush=True)
            raise
        if json_lines:
            print(json.dumps(outcome.to_json(), ensure_ascii=False), file=out, flush=True)
        else:
            print(f"{command.line:>4}  {command.text}", file=out)
            for line in outcome.lines:
                print(f"      {line}", file=out)
        if outcome.error:
            raise outcome.exception or ScriptError(file, command.line, command.column, outcome.message)
        if outcome.failed_expect:
            if not json_lines:
                print(f"FAILED: {file}:{command.line}: {outcome.lines[0]}", file=out)
            return 1
    if not json_lines:
        loss = session.loss_value
        print(f"done: {len(commands)} command{'' if len(commands) == 1 else 's'}, {session.cursor}" + (f", loss {loss:.6g}" if loss is not None else ""), file=out)
    return 0
