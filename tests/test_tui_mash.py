"""Hundreds of keys and ten resizes, runs started and paused on the way: the app never dies,
and the recording it keeps replays to the same state, bit for bit."""

from __future__ import annotations

import random

import numpy as np

import gdstep
from gdstep.script import Runner
from gdstep.tui.app import make_app
from conftest import settle

KEYS = ["n", "space", "f", "l", "b", "u", "s", "e", "left", "r", "g", "up", "down", "right", "v", "p", "question_mark",
        "escape", "tab", "x", "0", "enter", "pageup", "pagedown", "home", "end"]
SIZES = [(80, 24), (120, 36), (200, 50), (60, 20), (1, 1), (100, 30)]


def state(s):
    return (s.position, {k: v.tobytes() for k, v in s.params.items()}, tuple(s.history.losses))


async def test_mashing_keys_and_resizes_keeps_a_recording_that_replays_to_the_same_state():
    rng = random.Random(7)
    s = gdstep.open("spiral")
    s.epochs = 6                                   # a run key stops at the epoch limit soon
    app = make_app(s, timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        for k in range(400):
            if k % 40 == 0:
                await pilot.resize_terminal(*rng.choice(SIZES))
            key = rng.choice(KEYS)
            if key == "r" and rng.random() < 0.5:
                await pilot.press("r")             # start a run, then pause it a moment later
                await pilot.pause(0.01)
                key = "r"
            await pilot.press(key)
            if app.screen is not app.screen_stack[0]:
                await pilot.press("escape")         # leave a help screen or the palette
            if k % 100 == 0:
                await settle(pilot)
        if app.driver.running:
            await pilot.press("r")
        await settle(pilot)
        lines = list(app.runner.lines)
        live = state(s)
    fresh = gdstep.open("spiral")
    fresh.epochs = 6
    replay = Runner(fresh)
    for line in lines:
        assert replay.execute_line(line).ok, line
    assert state(fresh) == live
    assert len(lines) > 20
