"""The README tour's pictures: each lesson played up to its moment, then the app's screen.

    python screenshots/lessons/make.py [--out screenshots/lessons] [NUMBER …]

Each lesson's script (scenarios/lessons.toml) runs through the script Runner up to the
line named below, exactly as `gdstep replay` plays it; the narration (`say`) changes
nothing, so it is skipped here. Then the app opens headless on that session at 200×56, the
lower plot is switched to the one the lesson talks about there, and the screen is saved
as an SVG (no clock times in the event log, so the pictures do not change between runs).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gdstep  # noqa: E402
from gdstep.bundled import scenarios_dir  # noqa: E402
from gdstep.script import Runner  # noqa: E402
from gdstep.script.parser import parse_command  # noqa: E402
from gdstep.tui.app import make_app  # noqa: E402
from gdstep.tui.model_tree import ModelTree  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZE = (200, 56)                # wide enough for the plots to show a landscape's detail
PLOTS = {"boundary": ("boundary-plot",), "landscape": ("landscape-plot",), "line": ("line-plot",),
         "grad": ("grad-plot", "health-plot")}          # the health plot holds ‖∇W‖ per layer too


@dataclass(frozen=True)
class Shot:
    until: str                  # play the script up to and including the first line starting so
    plot: str                   # the lower plot: boundary | landscape | line | grad (‖∇W‖ per layer)
    select: str | None = None   # the parameter selected in the model tree
    keys: tuple[str, ...] = ()  # then these keys (shift+right moves to the next element)


SHOTS = {
    1: Shot("expect abs(loss - 7.5)", "grad", "0.weight"),
    2: Shot("landscape", "landscape", "0.weight"),
    3: Shot("landscape", "landscape"),
    4: Shot("gradcheck 2.weight[0,0]", "grad", "2.weight"),
    5: Shot("expect lane(3).epoch == 101", "landscape"),
    6: Shot("landscape", "landscape"),
    7: Shot("print state 0.weight", "grad", "0.weight", ("shift+right",)),
    8: Shot("landscape path=300", "landscape"),
    9: Shot("expect step < 200", "boundary", "0.weight"),
    10: Shot("expect loss < 0.05", "boundary"),
    11: Shot("expect grad_norm(relu.0.weight)", "grad", "sig.0.weight"),
    12: Shot("print state 0.weight", "grad", "0.weight"),
}


def play(entry: dict, until: str):
    scenario = scenarios_dir() / entry["scenario"]
    session = gdstep.open(scenario, backend="torch" if scenario.suffix == ".py" else "numpy")
    runner = Runner(session)
    for number, line in enumerate((scenarios_dir() / entry["script"]).read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("say "):
            continue
        command = parse_command(line, number, entry["script"])
        if command is not None:
            outcome = runner.execute(command)
            assert outcome.ok, f"{entry['script']}:{number}: {outcome.message}"
        if line.startswith(until):
            return session, runner
    raise SystemExit(f"{entry['script']}: no line starts with {until!r}")


async def settle(pilot) -> None:
    for _ in range(3):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def shoot(out: Path, number: int, entry: dict) -> Path:
    shot = SHOTS[number]
    session, runner = play(entry, shot.until)
    app = make_app(session, runner, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        if shot.select:
            app.query_one(ModelTree).select_parameter(shot.select)
            await settle(pilot)
        for key in shot.keys:
            await pilot.press(key)
            await settle(pilot)
        wanted = PLOTS[shot.plot]
        for _ in range(4):
            if app.query_one("#plot-switcher").current in wanted:
                break
            await pilot.press("v")
            await settle(pilot)
        assert app.query_one("#plot-switcher").current in wanted, shot
        path = out / f"{Path(entry['script']).stem}.svg"
        path.write_text(app.export_screenshot(title=f"gdstep lesson {number}: {entry['title']}"), encoding="utf-8")
    print(f"{path}: {session.cursor}")
    return path


async def main(out: Path, numbers: list[int]) -> None:
    lessons = tomllib.loads((scenarios_dir() / "lessons.toml").read_text(encoding="utf-8"))["lesson"]
    out.mkdir(parents=True, exist_ok=True)
    for number in numbers or range(1, len(lessons) + 1):
        await shoot(out, number, lessons[number - 1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("numbers", nargs="*", type=int)
    args = parser.parse_args()
    asyncio.run(main(args.out, args.numbers))
