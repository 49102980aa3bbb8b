"""The scenarios that ship with gdstep (`scenarios/` in the repository), found by name."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from gdstep.errors import ScenarioError, suggest

DEFAULT = "xor"


def scenarios_dir() -> Path:
    """`scenarios/` of a checkout (an editable install), else the copy a wheel installs
    as gdstep/_scenarios."""
    here = Path(__file__).resolve().parent
    checkout = here.parent / "scenarios"
    if checkout.is_dir() and (here.parent / "pyproject.toml").is_file():
        return checkout
    return here / "_scenarios"


def _description(path: Path) -> str:
    """The scenario's description, read without running anything (a .py file's docstring)."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            return tomllib.loads(text).get("description", "")
        doc = ast.get_docstring(ast.parse(text)) or ""
        return (doc.strip().splitlines() or [""])[0] + " (Python scenario, torch backend)"
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, tomllib.TOMLDecodeError):
        return "(unreadable)"


def bundled() -> list[tuple[str, Path, str]]:
    """(name, path, description) of every bundled scenario, by name."""
    paths = sorted([*scenarios_dir().glob("*.toml"), *scenarios_dir().glob("*.py")], key=lambda p: p.stem)
    return [(path.stem, path, _description(path)) for path in paths
            if not path.name.startswith("_") and path.name != "lessons.toml"]     # the lesson catalogue


def resolve(name_or_path: str | Path | None) -> Path:
    """A scenario path: the file named, or the bundled scenario of that name."""
    if name_or_path is None:
        name_or_path = DEFAULT
    path = Path(name_or_path)
    if path.exists() or path.suffix in (".toml", ".py") or len(path.parts) > 1:
        return path
    for suffix in (".toml", ".py"):         # naming a bundled .py scenario is naming it
        candidate = scenarios_dir() / f"{name_or_path}{suffix}"
        if candidate.exists():
            return candidate
    names = [name for name, _, _ in bundled()]
    hint = suggest(str(name_or_path), names, "bundled")
    if hint.startswith(";"):                 # a near miss: name it, and still list them all
        hint += f" (bundled: {', '.join(names)})"
    raise ScenarioError(str(name_or_path), None, f"no such file, and no bundled scenario of that name{hint}")
