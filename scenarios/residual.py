"""Two moons, a residual MLP of your own: x + f(x) blocks, written as an nn.Module.

A Python scenario: gdstep runs this file (only because you named it) and steps the model,
loss and optimizer it defines on the torch backend. Parameter names are the module's own
(`inp.weight`, `block.fc1.weight`, …); every submodule's output is recorded.
"""

import math

import torch
from torch import nn

name = "Two moons, residual MLP (Python scenario)"
seed = 0
batch_size = 32
epochs = 60
stop_when = "loss < 0.02"
breakpoints = ["grad_norm > 50"]

torch.manual_seed(seed)


class Residual(nn.Module):
    """x + W₂·tanh(W₁·x + b₁) + b₂: the block learns a correction to its input."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(width, width)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(x)))


class ResidualMLP(nn.Module):
    def __init__(self, width: int = 16, classes: int = 2):
        super().__init__()
        self.inp = nn.Linear(2, width)
        self.block = Residual(width)
        self.act = nn.Tanh()
        self.out = nn.Linear(width, classes)

    def forward(self, x):
        return self.out(self.act(self.block(self.inp(x))))


def moons(n: int, noise: float = 0.1):
    """Two interleaved half circles, labels 0 and 1."""
    t = torch.rand(n) * math.pi
    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)
    label = torch.arange(n) % 2
    x = torch.where(label[:, None] == 0, upper, lower) + noise * torch.randn(n, 2)
    return x, label


model = ResidualMLP()
loss_fn = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
data = moons(256)
