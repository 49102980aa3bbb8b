"""One concept, one home: every layer and loss kind is a registered class that owns all its
parts, and no module outside the concept files names a concrete kind."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from gdstep.nn.layers import LAYERS, Activation, layer_from_torch
from gdstep.nn.losses import LOSSES, loss_class

PACKAGE = Path(__file__).resolve().parent.parent / "gdstep"
CONCEPT_DIRS = {("nn", "layers"), ("nn", "losses")}
# "linear" is also a data generator (data.py, and scenario.py reading [data]).
ALLOWED = {("data.py", "linear"), ("scenario.py", "linear")}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def test_no_module_outside_a_concept_file_names_a_layer_or_loss_kind():
    kinds = set(LAYERS) | set(LOSSES)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if tuple(rel.parts[:2]) in CONCEPT_DIRS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in kinds
                    and id(node) not in skip and (rel.name, node.value) not in ALLOWED):
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_every_layer_kind_owns_its_parts(kind):
    cls = LAYERS[kind]
    assert cls.kind == kind and cls.tex and cls.torch_class
    layer = cls.build(3, 5, **cls.options(*((4,) if cls.affine else ())))
    twin = layer.torch_module()
    back = layer_from_torch(twin, 3)
    assert type(back) is cls and repr(back) == repr(layer)
    assert layer.text and layer.features_out(5) in (4, 5)
    if issubclass(cls, Activation):
        assert "'(z) = " in layer.derivative_text or kind == "identity"
    x = np.linspace(-2.0, 2.0, 10).reshape(2, 5)
    params = {name: np.ones(shape) for name, shape in layer.param_shapes.items()}
    y = layer.forward(params, x)
    grad_x, _ = layer.backward(params, x, y, np.ones_like(y), frozenset(params))
    assert grad_x.shape == x.shape


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_every_loss_kind_owns_its_parts(kind):
    cls = loss_class(kind)
    assert cls.kind == kind and cls.tex != "L" and cls.grad_formula != "∂L/∂y"
    assert cls.class_targets <= cls.classification
    assert str(cls.config_text({})) == kind
