"""Reading arrays of either backend (numpy arrays, torch tensors) without importing torch.

The views pull only what they show: a window, summary statistics, one element.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np


def is_torch(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


def to_numpy(a: Any) -> np.ndarray:
    """A numpy copy or view of `a`. A torch dtype numpy has no twin for (bfloat16, the
    float8 kinds) comes as float32, which holds each of its values exactly; `dtype_name`
    still says what it was."""
    if is_torch(a):
        t = a.detach()
        if widened(t):
            t = t.float()
        return t.cpu().numpy()
    return np.asarray(a)


def dtype_name(a: Any) -> str:
    """"float32", "bfloat16", … for an array of either backend."""
    return str(getattr(a, "dtype", type(a).__name__)).removeprefix("torch.")


def widened(a: Any) -> bool:
    """A floating tensor numpy cannot hold as it is: `to_numpy` gives it as float32."""
    if not is_torch(a) or not a.is_floating_point():
        return False
    return str(a.dtype) not in ("torch.float16", "torch.float32", "torch.float64")


def element(a: Any, index: tuple[int, ...]) -> float:
    if is_torch(a):
        return float(a[index].item())
    return float(a[index])


def shape(a: Any) -> tuple[int, ...]:
    return tuple(a.shape)


def sq_norm(a: Any) -> float:
    if is_torch(a):
        return float((a.double() ** 2).sum().item())
    flat = a.ravel()
    return float(flat.dot(flat))


def all_finite(arrays: Iterable[Any]) -> bool:
    """True when every element is finite: Σa² per array first, the exact test only on doubt.
    Views of one buffer (a backend's flat parameters and state) are summed once, over the
    buffer, when together they are at least half as large as it: one large reduction costs
    less than many small ones, and a non-finite value outside the views only costs the
    exact test of the views."""
    tensors = None
    bases = None
    for a in arrays:
        if type(a) is np.ndarray:
            if a.dtype.kind == "f":
                base = a.base
                if base is None:
                    if not _finite(a):
                        return False
                    continue
                if bases is None:
                    bases = {}
                entry = bases.get(id(base))
                if entry is None:
                    bases[id(base)] = [base, a.size, [a]]
                else:
                    entry[1] += a.size
                    entry[2].append(a)
            continue
        if a is None:
            continue
        if isinstance(a, (int, float)):
            if not math.isfinite(a):
                return False
            continue
        if is_torch(a):
            if tensors is None:
                tensors = []
            tensors.append(a)
            continue
        if not math.isfinite(a.sum()) and not np.isfinite(a).all():
            return False
    if bases is not None:
        for base, size, views in bases.values():
            whole = type(base) is np.ndarray and 2 * size >= base.size and base.dtype == views[0].dtype
            if not (whole and _finite(base)) and not all(_finite(v) for v in views):
                return False
    return tensors is None or _torch_all_finite(tensors)


def all_finite_paired(arrays: list[np.ndarray]) -> bool:
    """`all_finite` for numpy arrays that come in pairs of one size (a backend's flat
    parameters and flat optimizer state): one dot product a·b per pair reads both at once.
    It is finite only if every element of both is (a non-finite element makes its product
    inf or nan, 0·inf included, and a non-finite partial sum stays so); an overflow of
    finite values takes the exact test."""
    rest = []
    i = 0
    while i < len(arrays):
        a = arrays[i]
        b = arrays[i + 1] if i + 1 < len(arrays) else None
        if b is not None and a.size == b.size and a.dtype == b.dtype and a.dtype.kind == "f":
            if not math.isfinite(a.reshape(-1).dot(b.reshape(-1))) \
                    and not (np.isfinite(a).all() and np.isfinite(b).all()):
                return False
            i += 2
        else:
            rest.append(a)
            i += 1
    return all_finite(rest) if rest else True


def paired_views(tensors: list) -> list | None:
    """Flat numpy views of CPU torch tensors, in their own memory, ordered in pairs of one
    size and dtype for `all_finite_paired` (one dot product reads both of a pair; a tensor
    left without a partner is paired with itself); None where numpy cannot view one in
    place (a dtype numpy lacks, a strided tensor, one off the CPU). A view marks its
    tensor's storage not resizable, for good: only for tensors gdstep owns."""
    groups: dict[tuple, list] = {}
    try:
        for t in tensors:
            if not (t.is_cpu and t.is_contiguous()):
                return None
            a = t.detach().numpy().reshape(-1)
            if a.dtype.kind != "f":
                return None
            groups.setdefault((a.size, a.dtype), []).append(a)
    except (RuntimeError, TypeError):
        return None
    views = []
    for group in groups.values():
        if len(group) % 2:
            group.append(group[-1])
        views += group
    return views


def _finite(a: np.ndarray) -> bool:
    """Σa² (one BLAS dot, reading the array once) is finite exactly when every element is,
    unless it overflows (|a| above ~1e154 in float64, ~1e19 in float32): then the exact test."""
    flat = a.reshape(-1)
    return math.isfinite(flat.dot(flat)) or bool(np.isfinite(a).all())


def _torch_all_finite(tensors: list) -> bool:
    """The same test for torch tensors, where they live: one fused norm over the tensors of
    each device (views of one buffer: over the buffer, as above), finite exactly when every
    element is, unless it overflows: then the exact test; off the CPU, one transfer to the
    host per device."""
    import torch

    checked = []
    bases: dict[int, list] | None = None
    for t in tensors:
        if not (t.is_floating_point() or t.is_complex()):
            continue
        base = t._base
        if base is None:
            checked.append(t)
            continue
        if bases is None:
            bases = {}
        entry = bases.get(id(base))
        if entry is None:
            bases[id(base)] = [base, t.numel(), [t]]
        else:
            entry[1] += t.numel()
            entry[2].append(t)
    if bases is not None:
        for base, size, views in bases.values():
            whole = 2 * size >= base.numel() and base.dtype == views[0].dtype
            checked.extend([base] if whole else views)
    if not checked:
        return True
    device = checked[0].get_device()
    groups = [checked]
    if any(t.get_device() != device for t in checked):
        by_device: dict[Any, list] = {}
        for t in checked:
            by_device.setdefault(t.device, []).append(t)
        groups = list(by_device.values())
    for group in groups:
        try:
            norms = torch._foreach_norm(group)
        except (RuntimeError, TypeError):
            norms = [torch.linalg.vector_norm(t) for t in group]
        if group[0].is_cpu:
            ok = all(math.isfinite(n.item()) for n in norms)
        else:
            ok = math.isfinite(torch.stack(norms).sum().item())
        if not ok:
            return all(bool(torch.isfinite(t).all().item()) for t in tensors if t.is_floating_point() or t.is_complex())
    return True


def first_nonfinite(a: Any) -> tuple[tuple[int, ...], float] | None:
    """The first non-finite element in C order and its value, or None."""
    if a is None:
        return None
    if isinstance(a, (int, float)):
        return None if math.isfinite(a) else ((), float(a))
    arr = to_numpy(a)
    bad = np.flatnonzero(~np.isfinite(arr))
    if not len(bad):
        return None
    index = tuple(int(i) for i in np.unravel_index(bad[0], arr.shape))
    return index, float(arr[index])


@dataclass(frozen=True)
class Stats:
    count: int
    mean: float
    std: float
    min: float
    max: float
    norm: float
    nonfinite: int


def stats(a: Any) -> Stats:
    """Summary statistics, computed where the array lives; non-finite values are counted apart."""
    if is_torch(a):
        import torch
        t = a.detach().double()
        finite = torch.isfinite(t)
        bad = int((~finite).sum().item())
        vals = t[finite] if bad else t.reshape(-1)
        if vals.numel() == 0:
            return Stats(t.numel(), math.nan, math.nan, math.nan, math.nan, math.nan, bad)
        return Stats(t.numel(), vals.mean().item(), vals.std(unbiased=False).item(), vals.min().item(),
                     vals.max().item(), torch.linalg.vector_norm(vals).item(), bad)
    arr = np.asarray(a, dtype=float)
    finite = np.isfinite(arr)
    bad = int(arr.size - np.count_nonzero(finite))
    vals = arr[finite] if bad else arr.ravel()
    if vals.size == 0:
        return Stats(arr.size, math.nan, math.nan, math.nan, math.nan, math.nan, bad)
    return Stats(arr.size, float(vals.mean()), float(vals.std()), float(vals.min()), float(vals.max()),
                 float(np.sqrt(np.dot(vals, vals))), bad)


def window(a: Any, row: int, col: int, rows: int, cols: int) -> tuple[np.ndarray, int, int]:
    """A rows×cols window of a 1-D or 2-D array around (row, col), as numpy, with its origin."""
    shp = shape(a)
    if len(shp) == 1:
        r0 = max(0, min(row - rows // 2, shp[0] - rows))
        return to_numpy(a[r0:r0 + rows]).reshape(-1, 1), r0, 0
    if len(shp) == 0:
        return to_numpy(a).reshape(1, 1), 0, 0
    r0 = max(0, min(row - rows // 2, shp[0] - rows))
    c0 = max(0, min(col - cols // 2, shp[1] - cols))
    return to_numpy(a[r0:r0 + rows, c0:c0 + cols]), r0, c0
