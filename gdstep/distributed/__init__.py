"""Attach mode under DistributedDataParallel: every rank attached, one debugger.

`ranks_for(model, ...)` is what `gdstep.attach` asks: a `Ranks` when the model is a DDP
model in an initialised process group, else None (the single-process attach mode)."""

from __future__ import annotations

from gdstep.distributed.channel import RankLost


def is_ddp(model) -> bool:
    try:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel
    except ImportError:
        return False
    return isinstance(model, DistributedDataParallel) and dist.is_available() and dist.is_initialized()


def ranks_for(model, dbg_rank: int | str = 0, rank_timeout: float = 60.0):
    if not is_ddp(model):
        return None
    from gdstep.distributed.ranks import Ranks
    return Ranks(model, dbg_rank, rank_timeout)


def backend_class(ranks):
    """The backend attach mode builds: DDP's own gradients under DDP."""
    if ranks is None:
        from gdstep.backends.torch_attach import AttachBackend
        return AttachBackend
    from gdstep.distributed.backend import DistributedAttachBackend
    return DistributedAttachBackend


__all__ = ["RankLost", "backend_class", "is_ddp", "ranks_for"]
