"""Snapshot tests (pytest-textual-snapshot) of seeded, deterministic states of the app.

The event log is made without timestamps so the pictures do not depend on the clock.
Update the pictures with `pytest tests/test_tui_snapshots.py --snapshot-update`, and look
at them (tests/__snapshots__/) before committing.
"""

from __future__ import annotations

from conftest import press, settle

import gdstep
from gdstep.tui.app import make_app
from gdstep.tui.model_tree import ModelTree


def _app(scenario: str, theme: str | None = None):
    app = make_app(gdstep.open(scenario), timestamps=False)
    if theme:
        app.theme = theme
    return app


def _keys(*keys: str, select: str | None = None):
    async def run_before(pilot) -> None:
        await settle(pilot)
        if select:
            pilot.app.query_one(ModelTree).select_parameter(select)
            await settle(pilot)
        await press(pilot, *keys)
    return run_before


def test_textbook_after_backward_shows_the_chain_rule(snap_compare):
    assert snap_compare(_app("textbook"), terminal_size=(120, 36), run_before=_keys("b", select="2.weight"))


def test_textbook_after_update_shows_the_update_arithmetic(snap_compare):
    assert snap_compare(_app("textbook"), terminal_size=(120, 36), run_before=_keys("u", select="2.weight"))


def test_textbook_after_update_in_the_light_theme(snap_compare):
    assert snap_compare(_app("textbook", theme="textual-light"), terminal_size=(120, 36),
                        run_before=_keys("u", select="2.weight"))


def test_xor_after_forward_at_80_by_24(snap_compare):
    assert snap_compare(_app("xor"), terminal_size=(80, 24), run_before=_keys("f"))


def test_overshoot_breakpoint_with_the_loss_surface(snap_compare):
    assert snap_compare(_app("overshoot"), terminal_size=(120, 36), run_before=_keys("r", "r", "r"))


def test_spiral_at_200_by_50_uses_the_room(snap_compare):
    assert snap_compare(_app("spiral"), terminal_size=(200, 50), run_before=_keys("s", "s", "b"))
