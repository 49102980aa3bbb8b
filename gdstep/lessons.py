"""The lesson catalogue, `scenarios/lessons.toml`: the lessons in order, each a scenario and
a script (paths relative to the catalogue's folder).

    [[lesson]]
    name = "loss"                       # lower case, digits, - and _; not a bare number
    title = "The loss"
    scenario = "lesson01_loss.toml"
    script = "lesson01_loss.gds"
    backend = "torch"                   # optional: the backend it opens on (default numpy; a .py scenario torch)

A lesson is found by its number (1-based, the catalogue's order) or its name.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from gdstep.bundled import scenarios_dir
from gdstep.errors import GdstepError, ScenarioError, suggest
from gdstep.toml_table import Table, toml_error

CATALOGUE = "lessons.toml"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


@dataclass(frozen=True)
class Lesson:
    number: int
    name: str
    title: str
    scenario: Path
    script: Path
    backend: str | None = None          # "torch" for a lesson that needs it (default: as the scenario opens)


def catalogue_path() -> Path:
    return scenarios_dir() / CATALOGUE


def load(path: str | Path | None = None) -> list[Lesson]:
    """Every lesson in order; ScenarioError (file, key path, what is wrong) for a bad catalogue."""
    path = Path(path) if path is not None else catalogue_path()
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(file, None, "no such file (the lesson catalogue)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(file, None, f"cannot read it: {getattr(e, 'strerror', None) or e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise toml_error(file, e, text) from None
    top = Table(data, "", file)
    entries = top.get("lesson", list)
    top.done(["lesson"])
    if not entries:
        top.fail("lesson", "no lessons: add [[lesson]] tables")
    lessons: list[Lesson] = []
    for number, entry in enumerate(entries, start=1):
        table = Table(entry, f"lesson[{number - 1}]", file)
        name = table.get("name", str)
        if not NAME.fullmatch(name) or name.isdigit():
            table.fail(table.key_path("name"), f"{name!r}: lower-case letters, digits, - and _ (not a bare number)")
        if any(lesson.name == name for lesson in lessons):
            table.fail(table.key_path("name"), f"{name!r} is the name of an earlier lesson too")
        title = table.get("title", str)
        files = {}
        for key, suffixes in (("scenario", (".toml", ".py")), ("script", (".gds",))):
            value = table.get(key, str)
            target = path.parent / value
            if target.suffix not in suffixes:
                table.fail(table.key_path(key), f"{value!r}: expected a {' or '.join(suffixes)} file")
            if not target.is_file():
                table.fail(table.key_path(key), f"{value!r}: no such file next to the catalogue")
            files[key] = target
        backend = table.get("backend", str, None)
        if backend not in (None, "numpy", "torch"):
            table.fail(table.key_path("backend"), f"{backend!r}: expected \"numpy\" or \"torch\"")
        table.done()
        lessons.append(Lesson(number, name, title, files["scenario"], files["script"], backend))
    return lessons


def find(key: str, lessons: list[Lesson] | None = None) -> Lesson:
    """The lesson numbered or named `key`; GdstepError with a suggestion otherwise."""
    lessons = load() if lessons is None else lessons
    key = key.strip()
    if key.isdigit():
        n = int(key) if len(key) < 6 else 0
        if 1 <= n <= len(lessons):
            return lessons[n - 1]
        raise GdstepError(f"no lesson {key}: the lessons are numbered 1 to {len(lessons)} (gdstep lesson lists them)")
    for lesson in lessons:
        if lesson.name == key:
            return lesson
    shown = key if len(key) <= 40 else key[:39] + "…"
    raise GdstepError(f"no lesson named {shown!r}" + suggest(key, [lesson.name for lesson in lessons], "lessons")
                      + " (gdstep lesson lists them)")


def listing(lessons: list[Lesson]) -> list[str]:
    """One line a lesson: number, name, title."""
    width = max(len(lesson.name) for lesson in lessons)
    return [f"{lesson.number:>2}  {lesson.name:<{width}}  {lesson.title}" for lesson in lessons]
