"""Issue 10: the app as a newcomer meets it. Pilot tests at fixed sizes."""

from __future__ import annotations

import re

import pytest
from conftest import command, log_kinds, log_text, press, select, settle, until

import gdstep
from gdstep.tui.app import make_app
from gdstep.tui.phase_bar import PhaseBar


def _svg_text(path) -> str:
    return path.read_text().replace("&#160;", " ")


async def test_phase_bar_keeps_the_numbers_on_screen_at_80_columns():
    session = gdstep.open("spiral")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, *["s"] * 12)
        bar = app.query_one(PhaseBar)
        lines = str(bar.render()).split("\n")
        width = bar.content_size.width
        assert len(lines) == 2 and all(len(line) <= width for line in lines)
        assert "step 12" in lines[0] and "forward" in lines[0]
        assert lines[1].startswith("loss ") and "lr 0.01" in lines[1] and "adam" in lines[1]
        assert "numpy" in lines[1]


async def test_a_screenshot_from_the_prompt_shows_the_app_paused_with_its_footer(tmp_path):
    session = gdstep.open("xor")
    app = make_app(session, timestamps=False, frame_interval=0.02)
    target = tmp_path / "a.svg"
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        app.simulate_key("r")
        await until(lambda: session.position > 0)
        await until(lambda: not app.running, timeout=30)
        await settle(pilot)
        await command(pilot, f"screenshot {target}")
        await settle(pilot)
    svg = _svg_text(target)
    assert "paused" in svg and "running" not in svg
    footer = "".join(re.findall(r'line-35\)">([^<]*)<', svg))
    assert "step" in footer and "quit" in footer


async def test_a_screenshot_that_cannot_be_written_is_one_line_in_the_log(tmp_path, monkeypatch):
    import errno
    import os

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("gdstep.files.tempfile.mkstemp", full_disk)
    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    target = tmp_path / "a.svg"
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await command(pilot, f"screenshot {target}")
        await settle(pilot)
        assert app.is_running
        errors = [m for kind, m in app.query_one("EventLog").messages if kind == "error"]
        assert len(errors) == 1 and "No space left on device" in errors[0] and "\n" not in errors[0]
        await press(pilot, "s")
        assert session.step_count == 1
    assert not target.exists() and not list(tmp_path.iterdir())


def test_paging_a_command_list_before_it_is_laid_out_does_not_raise():
    from textual.command import CommandList
    from textual.widgets.option_list import Option

    import gdstep.tui.app  # noqa: F401  (installs the guard)

    listing = CommandList()
    listing.add_options([Option("a"), Option("b")])
    listing.highlighted = 0
    listing.action_page_down()          # Textual 8.2.8 alone: KeyError: 0
    listing.action_page_up()
    assert listing.highlighted == 0


def test_sigterm_restores_the_terminal(tmp_path):
    """The app in a pseudo-terminal, sent SIGTERM: it leaves the alternate screen and turns
    mouse tracking off before it exits."""
    import os
    import pty
    import select as select_
    import signal
    import subprocess
    import sys
    import time

    main, child = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="80", LINES="24")
    proc = subprocess.Popen([sys.executable, "-m", "gdstep.cli", "xor"], stdin=child, stdout=child, stderr=child,
                            env=env, start_new_session=True)
    os.close(child)
    out = b""

    def read_for(seconds: float) -> None:
        nonlocal out
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select_.select([main], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                out += chunk
    try:
        deadline = time.monotonic() + 30
        while b"\x1b[?1049h" not in out or b"0.weight" not in out:
            assert time.monotonic() < deadline, "the app did not start"
            read_for(0.2)
        read_for(0.5)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while proc.poll() is None:          # read while it exits: a full pty would block it
            assert time.monotonic() < deadline, "the app did not exit"
            read_for(0.1)
        read_for(0.3)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    tail = out[out.rindex(b"\x1b[?1049h"):]
    assert b"\x1b[?1049l" in tail and b"\x1b[?1000l" in tail
