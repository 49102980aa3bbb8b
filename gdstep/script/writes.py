"""Where a script may write: the policy `save`, `export` and `screenshot` go through.

A replayed script is a document from a stranger, so by default (`WritePolicy()`) it writes
only inside its working folder: a relative path, no `..`, no symlink anywhere on the way,
the folder already there, and never over an existing file unless the command says
`--force`. `gdstep replay --allow-writes DIR` adds folders (same rules inside them, but
absolute paths into them are allowed). At the app's `:` prompt the user typed the path
(`WritePolicy.anywhere()`): any path, and overwriting asks `confirm(path)` (without a
confirm function, the command needs `--force`).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gdstep.errors import GdstepError


@dataclass(frozen=True)
class WritePolicy:
    root: Path | None = None                 # the working folder (None: the current one, when checked)
    allowed: tuple[Path, ...] = ()           # more folders (--allow-writes)
    anywhere_: bool = False                  # the user typed the path
    confirm: Callable[[Path], bool] | None = None   # asked before overwriting (anywhere only)

    @classmethod
    def anywhere(cls, confirm: Callable[[Path], bool] | None = None) -> "WritePolicy":
        return cls(anywhere_=True, confirm=confirm)

    def allowing(self, *folders: str | Path) -> "WritePolicy":
        return WritePolicy(self.root, self.allowed + tuple(Path(f) for f in folders), self.anywhere_, self.confirm)

    def check(self, command: str, path: str | Path, force: bool = False) -> Path:
        """The path to write, or a GdstepError saying in one line why not."""
        path = Path(path)
        if self.anywhere_:
            if _exists(path) and not force and not (self.confirm and self.confirm(path)):
                raise GdstepError(f"{command} {path}: the file exists; add --force to overwrite it")
            _refuse_special(command, path)
            return path
        folders = [(self.root or Path.cwd()).absolute()] + [Path(os.path.abspath(f)) for f in self.allowed]
        if path.is_absolute():
            inside = [f for f in folders[1:] if _is_under(path, f)]
            if not inside:
                raise GdstepError(f"{command} {path}: a script writes only inside its working folder, by a relative "
                                  "path (gdstep replay --allow-writes DIR allows another folder)")
            base, rel = inside[0], Path(os.path.relpath(path, inside[0]))
        else:
            base, rel = folders[0], path
        if ".." in rel.parts:
            raise GdstepError(f"{command} {path}: '..' is not allowed in a script's file names")
        where = base
        for part in rel.parts[:-1]:
            where = where / part
            if where.is_symlink():
                raise GdstepError(f"{command} {path}: {part} is a symbolic link; a script never writes through one")
            if not where.is_dir():
                raise GdstepError(f"{command} {path}: the folder {part} does not exist")
        target = base / rel
        if target.is_symlink():
            raise GdstepError(f"{command} {path}: the file is a symbolic link; a script never writes through one")
        if _exists(target):
            _refuse_special(command, target)
            if not force:
                raise GdstepError(f"{command} {path}: the file exists; add --force to overwrite it")
        return target


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _refuse_special(command: str, path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise GdstepError(f"{command} {path}: not a regular file")


def _is_under(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(folder)
        return True
    except ValueError:
        return False
