"""Norms and finiteness tests of torch tensors in one fused read: what a run's records on
demand test each phase with (gdstep.backends.torch_lean), and the chain of bounds reads the
weights with (gdstep.backends.forward_bound)."""

from __future__ import annotations

import math


def finite_flag(torch, tensors: list):
    """Σ of the tensors' norms, where they are: finite when every element is (an overflow of
    finite values makes it inf too: then the exact test decides)."""
    with torch.no_grad():
        if not tensors:
            return torch.zeros(())
        try:
            norms = torch._foreach_norm(tensors)
        except (RuntimeError, TypeError):
            norms = [torch.linalg.vector_norm(t) for t in tensors]
        return torch.stack(norms).sum() if len(norms) > 1 else norms[0]


def fused_finite(torch, tensors: list) -> bool:
    """Whether every element is finite: one number to the host (on the CPU, where a read
    costs less than two more tensor operations, each norm); the exact test on doubt."""
    if tensors and tensors[0].is_cpu:
        if all(map(math.isfinite, cpu_norms(torch, tensors))):
            return True
    elif math.isfinite(finite_flag(torch, tensors).item()):
        return True
    return exactly_finite(torch, tensors)


def cpu_norms(torch, tensors: list) -> list[float]:
    """Each tensor's norm (on the CPU): one fused call, read as Python floats. Gradients are
    off around it by the switch `torch.no_grad()` itself throws, without its context
    manager's Python: after a forward or backward left the caches cold, that costs ~30 µs
    an iteration in watch mode on a small CNN (benchmarks/HISTORY.md)."""
    enabled = torch.is_grad_enabled()
    torch._C._set_grad_enabled(False)
    try:
        norms = torch._foreach_norm(tensors)
    except (RuntimeError, TypeError):
        norms = [torch.linalg.vector_norm(t) for t in tensors]
    finally:
        torch._C._set_grad_enabled(enabled)
    return [n.item() for n in norms]


def exactly_finite(torch, tensors: list) -> bool:
    """The exact test, element by element (when a norm overflowed or is not finite)."""
    return all(bool(torch.isfinite(t).all().item()) for t in tensors)
