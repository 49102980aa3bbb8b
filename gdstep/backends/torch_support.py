"""What every torch code path needs first: torch itself, a device and a dtype, each refused
in one readable line (a BackendError, exit 2) when it is not available here."""

from __future__ import annotations

from typing import Any

from gdstep.errors import BackendError

try:  # gdstep works without torch; only the torch backend needs it
    import torch
except ImportError:  # pragma: no cover - exercised by a test that hides torch
    torch = None  # type: ignore[assignment]

DTYPES = ("float32", "float64")


def require_torch() -> Any:
    """The torch module, or a BackendError saying how to install it."""
    import sys

    module = sys.modules.get("torch", torch)
    if module is None:
        raise BackendError("the torch backend needs PyTorch, which is not installed here "
                           "(pip install torch, or use the numpy backend)")
    return module


def resolve_device(device: str | None) -> tuple[Any, str | None]:
    """(torch.device, a note for the event log or None). "auto" takes CUDA where there is one
    and otherwise the CPU, and says so; "cuda" without CUDA is an error."""
    torch = require_torch()
    if device is None or device == "cpu":
        return torch.device("cpu"), None
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device()), None
        return torch.device("cpu"), "device auto: no CUDA device here, the torch backend runs on the cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise BackendError(f"unknown device {device!r} (expected cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA device is visible"
            raise BackendError(f"device {device!r}: CUDA is not available here ({build}); use --device cpu or auto")
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= count:
            raise BackendError(f"device {device!r}: there {'is' if count == 1 else 'are'} only {count} CUDA device{'s' * (count != 1)}")
        return torch.device("cuda", index), None
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise BackendError(f"device {device!r}: MPS is not available here; use --device cpu")
        return dev, None
    if dev.type != "cpu":
        raise BackendError(f"device {device!r} is not supported (expected cpu, cuda, cuda:N or auto)")
    return dev, None


def torch_dtype(name: str) -> Any:
    torch = require_torch()
    if name not in DTYPES:
        raise BackendError(f"dtype must be \"float32\" or \"float64\", got {name!r}")
    return getattr(torch, name)


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def device_name(device: Any) -> str:
    """"cpu" or "cuda:0": the index always shown for an accelerator."""
    if device.type == "cpu":
        return "cpu"
    return f"{device.type}:{0 if device.index is None else device.index}"


def unmade(model) -> str | None:
    """The name of the first parameter a lazy module has not made yet (LazyLinear before its
    first forward), or None."""
    torch = require_torch()
    return next((name for name, p in model.named_parameters()
                 if isinstance(p, torch.nn.parameter.UninitializedParameter)), None)


def sparse_grads(model) -> str | None:
    """The first module that makes sparse gradients (`nn.Embedding(sparse=True)`,
    `nn.EmbeddingBag(sparse=True)`), by name, or None."""
    return next((name or type(m).__name__ for name, m in model.named_modules() if getattr(m, "sparse", False) is True),
                None)


def subclassed(model) -> str | None:
    """The first parameter that is a tensor subclass (FSDP2's and tensor parallelism's
    DTensor), as "'name' is a DTensor"; None where every one is a plain tensor."""
    torch = require_torch()
    for name, p in model.named_parameters():
        if type(p.data) is not torch.Tensor:
            return f"{name!r} is a {type(p.data).__name__}"
    return None


def needs_closure(optimizer) -> bool:
    """An optimizer whose step() takes no step without a closure (torch.optim.LBFGS):
    gdstep runs forward, loss and backward as phases of their own and cannot give one."""
    import inspect
    try:
        parameter = inspect.signature(type(optimizer).step).parameters.get("closure")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is inspect.Parameter.empty


def attach_refusal(model, optimizer) -> str | None:
    """Why gdstep cannot attach to this model and optimizer (said after "attach: "), or None."""
    sparse, lazy, which = sparse_grads(model), unmade(model), subclassed(model)
    if sparse is not None:
        return (f"{sparse!r} makes sparse gradients (sparse=True): gdstep's norms, records and recomputations take "
                "dense ones; debug the model with sparse=False (and a dense optimizer in place of SparseAdam)")
    if lazy is not None:
        return f"the model's parameter {lazy!r} is not made yet (a lazy module's): call the model once on a batch before attach"
    if which is not None:
        return (f"the model's parameter {which}, a tensor subclass (e.g. the DTensor of FSDP2's fully_shard or of "
                "tensor parallelism): gdstep reads and records whole plain tensors; debug the model unsharded (in one "
                "process, or under DDP)")
    optimizers = getattr(optimizer, "optimizers", [optimizer])
    if any(needs_closure(o) for o in optimizers):
        return (f"{type(optimizer).__name__} needs a closure for step(), which runs the model several times a step; "
                "gdstep steps forward, loss, backward and update one at a time: debug the loop with an optimizer "
                "that steps without one (SGD, Adam, ...)")
    mine = {id(p) for p in model.parameters()}
    if not any(id(p) in mine for o in optimizers for g in o.param_groups for p in g["params"]):
        plain = "layers kept in a plain list or dict register none: hold them in an nn.ModuleList or nn.ModuleDict"
        return ("the model has no parameters (" + plain + ")" if not mine else
                "the model holds none of the parameters the optimizer trains (an optimizer of another model's; or "
                + plain + ")")
    return None
