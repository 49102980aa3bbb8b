"""Lesson 11: vanishing gradients — two deep stacks side by side, sigmoid and ReLU.

Both stacks are 2 → 16 → 16 → 16 → 16 → 16 → 16 → 2 on the same two moons: one with
sigmoid units and torch's default init, one with ReLU units and He init. They train side
by side in one model (the loss is the sum of their two cross-entropies, so neither
affects the other's gradients), and the gradient norm per layer shows the first one's
gradient shrinking layer by layer on its way back, and the second one's not.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

name = "Lesson 11: vanishing gradients"
description = ("Two deep stacks on two moons, side by side: sigmoid with the default init, whose gradient "
               "shrinks layer by layer on the way back, and ReLU with He init, whose gradient does not.")
seed = 0
batch_size = "full"
epochs = 300
shuffle = False

DEPTH = 6          # hidden layers in each stack
WIDTH = 16

torch.manual_seed(seed)


def stack(activation: type[nn.Module]) -> nn.Sequential:
    layers, width_in = [], 2
    for _ in range(DEPTH):
        layers += [nn.Linear(width_in, WIDTH), activation()]
        width_in = WIDTH
    layers.append(nn.Linear(WIDTH, 2))
    return nn.Sequential(*layers)


class SideBySide(nn.Module):
    """Two networks on the same input; the output is both one's class scores side by side,
    (n, 4): columns 0-1 the sigmoid stack's, 2-3 the ReLU stack's."""

    def __init__(self):
        super().__init__()
        self.sig = stack(nn.Sigmoid)           # torch's default init
        self.relu = stack(nn.ReLU)
        for layer in self.relu:
            if isinstance(layer, nn.Linear):   # He init: variance 2 / fan_in, biases 0
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x):
        return torch.cat([self.sig(x), self.relu(x)], dim=1)


def loss_fn(scores, y):
    """The two stacks' cross-entropies, added: each one's gradient is its own."""
    return F.cross_entropy(scores[:, :2], y) + F.cross_entropy(scores[:, 2:], y)


def moons(n: int, noise: float = 0.1):
    """Two interleaved half circles, labels 0 and 1."""
    t = torch.linspace(0, math.pi, n // 2).repeat(2)
    label = torch.arange(n) // (n // 2)
    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)
    x = torch.where(label[:, None] == 0, upper, lower) + noise * torch.randn(n, 2)
    return x, label


model = SideBySide()
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
data = moons(200)
