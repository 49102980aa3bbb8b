"""Where a recording came from, as rr traces carry it: the scenario with a checksum of it and
its data, the versions of gdstep, numpy and torch, the backend, device and dtype. `replay`
compares it with the present before it starts and says what differs."""

from __future__ import annotations

import hashlib
import sys
from importlib import metadata

import numpy as np

from gdstep.text import clean

KEYS = ("sha256", "gdstep", "numpy", "torch", "backend", "device", "dtype")
PREFIX = "# provenance:"


def checksum(scenario) -> str:
    """sha256 of the scenario file's bytes and of the data it built (a csv's rows included)."""
    h = hashlib.sha256()
    path = getattr(scenario, "path", None)
    if path is not None:
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"<unreadable>")
    dataset = getattr(scenario, "dataset", None)
    for array in (getattr(dataset, "x", None), getattr(dataset, "y", None)):
        if array is not None:
            try:
                from gdstep.arrays import to_numpy
                a = np.ascontiguousarray(to_numpy(array))
            except Exception:           # a tensor numpy cannot read: its shape stands for it
                h.update(str(getattr(array, "shape", "")).encode())
                continue
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def provenance(session) -> dict[str, str]:
    b = session.backend
    version = getattr(sys.modules.get("gdstep"), "__version__", "unknown")
    return {"sha256": checksum(session.scenario), "gdstep": version, "numpy": np.__version__,
            "torch": _version("torch"), "backend": b.name, "device": str(b.device), "dtype": str(b.dtype)}


def header(session, script_name: str) -> str:
    """The comment lines a recording starts with; every name in them is cleaned of line breaks,
    so a scenario's name cannot plant a command in the recording."""
    s = session.scenario
    fields = " ".join(f"{k}={clean(v).replace(' ', '_')}" for k, v in provenance(session).items())
    return (f"# gdstep recording of {clean(s.name)}\n"
            f"# replay: gdstep replay {clean(s.file)} {clean(script_name)}\n"
            f"{PREFIX} {fields}\n")


def recorded(text: str) -> dict[str, str] | None:
    """The provenance a script's leading comments carry, or None (a script written by hand)."""
    for line in text.removeprefix("\ufeff").split("\n"):
        line = line.strip()
        if not line.startswith("#"):
            if line:
                return None
            continue
        if line.startswith(PREFIX):
            pairs = (part.partition("=") for part in line[len(PREFIX):].split())
            return {k: v for k, eq, v in pairs if eq and k in KEYS}
    return None


def differences(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """What changed since the recording, one phrase each."""
    out = []
    for key in KEYS:
        if key in before and before[key] != now.get(key):
            what = "the scenario or its data changed" if key == "sha256" else f"{key} {before[key]} → {now.get(key)}"
            out.append(what)
    return out
