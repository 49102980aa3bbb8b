"""The loss kinds, one file each, registered by kind in LOSSES (see base.py)."""

from gdstep.nn.losses.base import (LOSSES, Loss, loss_for_torch_class, loss_class, make_loss, register,
                                   torch_loss_kind)
from gdstep.nn.losses.mse import MSE
from gdstep.nn.losses.sse import SSE
from gdstep.nn.losses.half_sse import HalfSSE
from gdstep.nn.losses.mae import MAE
from gdstep.nn.losses.huber import Huber
from gdstep.nn.losses.bce import BCE
from gdstep.nn.losses.cross_entropy import CrossEntropy
from gdstep.nn.losses.nll import NLL

__all__ = ["BCE", "LOSSES", "MAE", "MSE", "NLL", "SSE", "CrossEntropy", "HalfSSE", "Huber", "Loss",
           "loss_for_torch_class", "loss_class", "make_loss", "register", "torch_loss_kind"]
