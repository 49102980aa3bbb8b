"""The C heap of a numpy run: freed arrays are reused, not given back to the system.

A numpy step allocates a few arrays of the model's size and frees them the step after (the
backend's state is immutable: every update makes new arrays). With glibc's default settings,
arrays of over 128 KiB come from fresh memory each time (mmap, or a heap trimmed on every
free), so each step faults every page of them in again: at about 3 µs a 4 KiB page, that is
a fifth of a step of a 26k-parameter float64 MLP. Raising the thresholds once per process
keeps freed memory in the heap for the next step, as a long-running training process wants.
Attach mode sets them too: the references its records hold for a while change the order in
which a torch loop frees and allocates its tensors, and with the defaults each step then
faults its activations in afresh. Not on other C libraries, nor where the user set the thresholds (MALLOC_*_ variables).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20      # arrays under this come from the heap (glibc's largest setting)
TRIM_THRESHOLD = 64 * 2**20      # free memory at the heap's top kept for reuse

_done = False


def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds once; True when they are set (now or before)."""
    global _done
    if _done:
        return True
    _done = True
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
