"""Writing files the user keeps: atomically, so a crash never leaves half a file behind.

A symbolic link at the path is replaced, never written through (its target's mode is not
copied either); a device, FIFO or folder there is refused. An interruption (Ctrl+C, or
SIGTERM, which the command line turns into one) removes the temporary file."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from gdstep.errors import GdstepError


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise GdstepError(f"{path}: the folder {directory} does not exist")
    try:
        mode = os.lstat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise GdstepError(f"{path}: cannot write: not a regular file")
    except FileNotFoundError:
        pass
    except OSError as e:
        raise GdstepError(f"{path}: cannot write: {e.strerror or e}") from None
    mode = "wb" if isinstance(data, bytes) else "w"
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        # mkstemp makes the file private (0600); the user's file gets the usual mode
        os.fchmod(fd, _mode_of(path))
        with os.fdopen(fd, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise GdstepError(f"{path}: cannot write: {e.strerror or e}") from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def _mode_of(path: Path) -> int:
    """The mode of the regular file being replaced, else what the umask leaves of rw-rw-rw-."""
    try:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            return st.st_mode & 0o777
        raise OSError
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        try:
            os.unlink(tmp)
        except OSError:
            pass
