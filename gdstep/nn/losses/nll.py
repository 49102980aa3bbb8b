"""nll: the negative log-likelihood of integer classes given log-probabilities,
−mean(y[b, t_b]), as torch.nn.NLLLoss(); put a log_softmax layer before it."""

from __future__ import annotations

import numpy as np

from gdstep.nn.losses.base import ArgmaxAccuracy, Loss, register


@register
class NLL(ArgmaxAccuracy, Loss):
    kind, classification = "nll", True
    class_targets = True
    grad_formula = "−onehot(t) / B"
    tex = r"L = -\frac{1}{B}\sum_b y_{b,t_b}"
    torch_class = "NLLLoss"

    @classmethod
    def check_layers(cls, kinds):
        if kinds[-1] != "log_softmax":
            return 'nll takes log-probabilities: end model.layers with "log_softmax"'
        return None

    def forward(self, output, target):
        per_sample = -output[np.arange(len(target)), target]
        return per_sample, float(per_sample.mean())

    def backward(self, output, target):
        grad = np.zeros_like(output)
        grad[np.arange(len(target)), target] = -1.0 / len(target)
        return grad

    def torch(self, output, target):
        import torch.nn.functional as F
        per = F.nll_loss(output, target, reduction="none")
        return per.detach(), per.mean()
