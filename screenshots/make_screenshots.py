"""Drive the app with Pilot through a few states and save SVG screenshots here.

    python screenshots/make_screenshots.py [--out screenshots]

Every picture comes from the app itself, on a bundled scenario, headless at 120×36 (one
at 80×24; the descent pictures at 200×50): among them the loss surface of `linear` with the
path marching in (and zig-zagging out at lr 1.2 on the full batch), four optimizer lanes on
`spiral`, two seed lanes of `two_minima` ending in the two valleys, the per-layer health
plot, and the loss along an overshooting update. `--size 80x24` makes every picture at
another size (to check them); names pick some. The event log is written without clock times so the pictures do not change
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


def _health(app, session) -> None:
    from gdstep.tui.health_plot import HealthPlot

    plot = app.query_one(HealthPlot)
    assert app.query_one("#plot-switcher").current == "health-plot"
    assert plot.health is not None and plot.health.ratios and plot.health.grads is not None, plot.health


def _two_basins(app, session) -> None:
    from gdstep.tui.landscape_plot import LandscapePlot

    picture = app.query_one(LandscapePlot).picture
    assert picture is not None and picture.fine and len(picture.lanes) == 2, picture
    ends = [lane.points[-1] for lane in picture.lanes]          # (w, v) of each lane now
    assert ends[0][0] * ends[1][0] < 0 and ends[0][1] * ends[1][1] < 0, ends


SHOTS = {}


def shot(name: str, *args, **kw) -> None:
    SHOTS[name] = (args, kw)


shot("xor-fresh", "xor", [])
shot("textbook-backward", "textbook", ["b"], select="2.weight")
shot("textbook-update", "textbook", ["u"], select="2.weight", check=_textbook_update)
shot("textbook-forward", "textbook", ["l"], select="2.weight")
shot("spiral-run", "spiral", ["e"] * 30)
shot("linear-surface", "linear", ["s"] * 12, size=(200, 50))
shot("linear-zigzag", "linear", ["s"] * 7, commands=["set batch_size full", "set lr 1.2"], size=(200, 50))
shot("spiral-lanes", "spiral", ["v"], commands=[
    "run max 40", "lanes sgd lr=0.1 | sgd lr=0.1 momentum=0.9 | rmsprop lr=0.01 | adam lr=0.01", "lanes run 60"],
    size=(200, 50), check=_four_lanes)
shot("overshoot-line", "overshoot", ["s", "s", "b", "v"])
shot("overshoot-breakpoint", "overshoot", ["r", "r", "r"])
shot("overshoot-nonfinite", "overshoot", ["r"], commands=["unbreak 1"])
shot("xor-80x24", "xor", ["s", "s", "s"], size=(80, 24))
shot("textbook-light", "textbook", ["u"], select="2.weight", theme="textual-light")
shot("spiral-200x50", "spiral", ["s", "s", "b"], size=(200, 50))
shot("spiral-layer", "spiral", ["s", "b", "up"])

shot("two-minima-lanes", "two_minima", [], commands=["lanes seed=0 | seed=1", "lanes run 30"], size=(200, 50),
     check=_two_basins)
shot("spiral-health", "spiral", ["v", "v", "v"], select="2.weight", commands=["run max 300"], size=(200, 50),
     check=_health)


async def main(out: Path, only: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, (args, kw) in SHOTS.items():
        if not only or name in only:
            await shoot(out, name, *args, **kw)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--size", help="COLSxROWS for every picture (to check other sizes)")
    parser.add_argument("only", nargs="*", help="the pictures to make (default: all)")
    args = parser.parse_args()
    if args.size:
        cols, rows = (int(v) for v in args.size.split("x"))
        for _, kw in SHOTS.values():
            kw["size"] = (cols, rows)
    asyncio.run(main(args.out, args.only))
