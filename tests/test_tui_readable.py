"""What a newcomer reads at 80, 100, 120 and 200 columns: the footer's keys each apart from the
next, the landscape's lane key whole, and log axes labelled with the values themselves."""

from __future__ import annotations

import html
import re

import pytest
from conftest import command, settle, until

import gdstep
from gdstep.script import parse_script
from gdstep.tui.app import make_app
from gdstep.tui.footer import KeyFooter
from gdstep.tui.lesson_app import make_lesson_app


def _screen_lines(app) -> list[str]:
    """The screen as text, one string a line, read from the app's own SVG screenshot (each
    run of text placed at its column: runs of blanks are not written as text)."""
    svg = app.export_screenshot()
    lines = [[" "] * app.size.width for _ in range(app.size.height)]
    for x, length, row, text in re.findall(r'<text [^>]*x="([\d.]+)" y="[\d.]+" textLength="([\d.]+)" '
                                           r'clip-path="url\(#terminal-\d+-line-(\d+)\)">([^<]*)</text>', svg):
        text = html.unescape(text).replace("\xa0", " ")
        column = round(float(x) / (float(length) / len(text)))
        lines[int(row)][column:column + len(text)] = list(text)
    return ["".join(line) for line in lines]


@pytest.mark.parametrize("width", [80, 90, 100, 105, 110, 120, 200])
@pytest.mark.parametrize("lesson", [False, True])
async def test_every_key_in_the_footer_is_apart_from_the_next(width, lesson):
    session = gdstep.open("xor")
    app = make_lesson_app(session, parse_script('say "hi"\nstep 1\n'), "lesson", timestamps=False) if lesson \
        else make_app(session, timestamps=False)
    async with app.run_test(size=(width, 30)) as pilot:
        await settle(pilot)
        footer = app.query_one(KeyFooter)
        line = _screen_lines(app)[-1] + " "
        keys = [k for k in footer.query("FooterKey") if k.description]
        labels = [str(label.render()) for label in footer.query("FooterLabel")]
        # each key and its description whole, then a space: Textual squeezes a footer too wide
        # for the terminal into "to ends step" (the group's label run into the next key)
        for key in keys:
            assert f"{key.key_display} {key.description} " in line, (key.description, line)
        for label in labels:
            assert f"{label} " in line, (label, line)
        shown = {k.description for k in keys}
        assert {"next", "step", "back", "help", "quit"} <= shown
        assert ("lesson" in shown) == lesson
        if width >= 120:
            assert "palette" in shown and "to end" in labels and "gradcheck" in shown
