"""`export` (the worked example) of an attached loop: a conv net's images and feature maps
are tables of each sample's values flattened, and a loss function that gives the batch's
loss alone (F.cross_entropy) has no per-sample column. (Found by a practitioner's run of
pytorch/examples' mnist under attach mode: both raised.)"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

import gdstep
from gdstep.fmt import num
from gdstep.script.export import worked_example


def _row(text: str, heading: str, row: str = "0") -> list[str]:
    """The cells of the first table after `heading`, in the row named `row`."""
    part = text[text.index(heading):]
    line = next(line for line in part.splitlines() if line.startswith(f"| {row} | "))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_a_conv_nets_worked_example_shows_each_samples_values_flattened():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    conv0 = F.conv2d(x, model[0].weight.detach(), model[0].bias.detach())      # before the update
    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss())
    dbg.step(x, y)
    text = worked_example(dbg.session)
    assert _row(text, "## 1. The batch")[:8] == [num(v) for v in x[0].flatten()[:8].tolist()]
    assert _row(text, "**Layer 0:")[:8] == [num(v) for v in conv0[0].flatten()[:8].tolist()]
    assert "(each row's 1×8×8 values, flattened in order)" in text       # the batch: a sample a row
    assert "(each row's 4×6×6 values, flattened in order)" in text       # the feature maps
    assert "(each row's 1×3×3 values, flattened in order)" in text       # the kernel: an output channel a row
    assert re.search(r"\| loss \|", text)                       # the loss module's per-sample values
    assert "loop iteration 1 (update 1)" in text and "epoch" not in text
    dbg.close()


def test_an_image_targets_columns_are_cut_as_the_outputs_are():
    """An image-to-image loss (MSE on 5×5 maps): the target's 25 columns are cut to the
    first 8 and a "…", as the output's are (before: all of them, 784 for an MNIST image)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 1, 5, 5), torch.randn(4, 1, 5, 5)
    dbg = gdstep.attach(model, opt, nn.MSELoss())
    dbg.step(x, y)
    text = worked_example(dbg.session)
    head = next(line for line in text.splitlines() if line.startswith("| row | y"))
    assert head.count("| t[") == 8 and head.count("| y[") == 8 and head.count("…") == 2
    assert _row(text, "## 3. Loss")[8 + 1:8 + 1 + 8] == [num(v) for v in y[0].flatten()[:8].tolist()]
    dbg.close()


def test_a_loss_function_with_no_per_sample_values_exports_the_batchs_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 64), torch.randint(0, 10, (8,))
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y).item()
    dbg = gdstep.attach(model, opt, F.cross_entropy)
    dbg.step(x, y)
    text = worked_example(dbg.session)
    assert "(no loss per sample: the loss function gives the batch's alone)" in text
    assert f"**L = {num(loss)}**" in text
    dbg.close()
