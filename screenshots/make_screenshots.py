"""Drive the app with Pilot through a few states and save SVG screenshots here.

    python screenshots/make_screenshots.py [--out screenshots]

Every picture comes from the app itself, on a bundled scenario, headless at 120×36 (one
at 80×24, one at 200×50): among them the loss surface of `linear` with the path marching
in (and zig-zagging out at lr 1.2), four optimizer lanes on `spiral`, and the loss along an
overshooting update. The event log is written without clock times so the pictures do not change
from one run to the next.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gdstep  # noqa: E402
from gdstep.tui.app import make_app  # noqa: E402
from gdstep.tui.model_tree import ModelTree  # noqa: E402

HERE = Path(__file__).resolve().parent


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def shoot(out: Path, name: str, scenario: str, keys: list[str], *, select: str | None = None,
                size: tuple[int, int] = (120, 36), commands: list[str] = (), theme: str | None = None,
                check=None) -> Path:
    session = gdstep.open(scenario)
    app = make_app(session, timestamps=False)
    if theme:
        app.theme = theme
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        if select:
            app.query_one(ModelTree).select_parameter(select)
            await pilot.pause()
        for text in commands:
            await pilot.press("colon")
            app.query_one("#prompt").value = text
            await pilot.press("enter")
            await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        if check is not None:
            check(app, session)
        path = out / f"{name}.svg"
        path.write_text(app.export_screenshot(title=f"gdstep {scenario}"), encoding="utf-8")
    print(f"{path}: {session.cursor}")
    return path


def _textbook_update(app, session) -> None:
    lines = app.query_one("#arithmetic").lines
    assert lines[-1] == "W_new = W_old − η·g = 0.400000 − 0.5 × 0.082167 = 0.358916", lines


def _four_lanes(app, session) -> None:
    from gdstep.tui.landscape_plot import LandscapePlot

    picture = app.query_one(LandscapePlot).picture
    assert picture is not None and picture.fine and len(picture.lanes) == 4, picture
    assert len(app.query_one("#loss-plot").curves.lanes) == 4


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    await shoot(out, "xor-fresh", "xor", [])
    await shoot(out, "textbook-backward", "textbook", ["b"], select="2.weight")
    await shoot(out, "textbook-update", "textbook", ["u"], select="2.weight", check=_textbook_update)
    await shoot(out, "textbook-forward", "textbook", ["l"], select="2.weight")
    await shoot(out, "spiral-run", "spiral", ["e"] * 30)
    await shoot(out, "linear-surface", "linear", ["s"] * 12)
    await shoot(out, "linear-zigzag", "linear", ["s"] * 8, commands=["set lr 1.2"])
    await shoot(out, "spiral-lanes", "spiral", ["v"], commands=[
        "run max 40", "lanes sgd lr=0.1 | sgd lr=0.1 momentum=0.9 | rmsprop lr=0.01 | adam lr=0.01", "lanes run 60"],
        check=_four_lanes)
    await shoot(out, "overshoot-line", "overshoot", ["s", "s", "b", "v"])
    await shoot(out, "overshoot-breakpoint", "overshoot", ["r", "r", "r"])
    await shoot(out, "overshoot-nonfinite", "overshoot", ["r"], commands=["unbreak 1"])
    await shoot(out, "xor-80x24", "xor", ["s", "s", "s"], size=(80, 24))
    await shoot(out, "textbook-light", "textbook", ["u"], select="2.weight", theme="textual-light")
    await shoot(out, "spiral-200x50", "spiral", ["s", "s", "b"], size=(200, 50))
    await shoot(out, "spiral-layer", "spiral", ["s", "b", "up"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    asyncio.run(main(parser.parse_args().out))
