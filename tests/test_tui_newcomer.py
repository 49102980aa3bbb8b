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
