"""Lesson 12: high dimensions — a classifier with 352,010 parameters on the torch backend.

Ten classes of 28×28 "images": each class is a fixed random pattern, each sample that
pattern plus Gaussian noise six times as strong as the pattern. A 784-384-128-10 ReLU network trained
with Adam in mini-batches of 64: the same four phases and the same update rule as on two
numbers, on hundreds of thousands of numbers at once.
"""

import torch
from torch import nn

name = "Lesson 12: high dimensions"
description = ("Ten classes of noisy 28×28 patterns and a 784-384-128-10 ReLU network: 352,010 parameters "
               "trained with Adam in mini-batches, on the torch backend.")
seed = 0
batch_size = 64
epochs = 5
stop_when = "loss < 0.01"

torch.manual_seed(seed)

CLASSES, SIDE, PER_CLASS, NOISE = 10, 28, 100, 6.0


def noisy_patterns():
    """PER_CLASS samples of each class: its pattern (random ±1 pixels) plus noise of std NOISE."""
    patterns = torch.sign(torch.randn(CLASSES, SIDE * SIDE))
    label = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    x = patterns[label] + NOISE * torch.randn(len(label), SIDE * SIDE)
    order = torch.randperm(len(label))
    return x[order], label[order]


model = nn.Sequential(
    nn.Linear(SIDE * SIDE, 384), nn.ReLU(),
    nn.Linear(384, 128), nn.ReLU(),
    nn.Linear(128, CLASSES),
)
loss_fn = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
data = noisy_patterns()
