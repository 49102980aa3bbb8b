"""The scenarios that ship with gdstep (`scenarios/` in the repository), found by name."""

from __future__ import annotations

import tomllib
from pathlib import Path

from gdstep.errors import ScenarioError

DEFAULT = "xor"


def scenarios_dir() -> Path:
    """`scenarios/` of a checkout (an editable install), else the copy a wheel installs
    as gdstep/_scenarios."""
    here = Path(__file__).resolve().parent
    checkout = here.parent / "scenarios"
    if checkout.is_dir() and (here.parent / "pyproject.toml").is_file():
        return checkout
    return here / "_scenarios"


def bundled() -> list[tuple[str, Path, str]]:
    """(name, path, description) of every bundled scenario, by name."""
    out = []
    for path in sorted(scenarios_dir().glob("*.toml")):
        try:
            description = tomllib.loads(path.read_text(encoding="utf-8")).get("description", "")
        except (OSError, tomllib.TOMLDecodeError):
            description = "(unreadable)"
        out.append((path.stem, path, description))
    return out


def resolve(name_or_path: str | Path | None) -> Path:
    """A scenario path: the file named, or the bundled scenario of that name."""
    if name_or_path is None:
        name_or_path = DEFAULT
    path = Path(name_or_path)
    if path.exists() or path.suffix in (".toml", ".py") or len(path.parts) > 1:
        return path
    candidate = scenarios_dir() / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    names = ", ".join(name for name, _, _ in bundled())
    raise ScenarioError(str(name_or_path), None, f"no such file, and no bundled scenario of that name (bundled: {names})")
