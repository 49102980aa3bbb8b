"""Scenario files: every key and its default, every dataset kind, and bad input — one clean
ScenarioError naming the file, the key path (or TOML line) and what is wrong, and from
`gdstep check` exit 2 with exactly one line on stderr. A hypothesis test mutates valid
scenarios and asserts that nothing but that clean error ever comes out."""

from __future__ import annotations

import contextlib
import io
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gdstep
from gdstep.bundled import bundled
from gdstep.cli import main
from gdstep.errors import ScenarioError
from gdstep.optim import SGD, Adam
from gdstep.scenario import LayerSpec, load_scenario, parse_scenario

MINIMAL = """
[data]
kind = "xor"

[model]
layers = [ { linear = 1 } ]

[loss]
kind = "mse"

[optimizer]
kind = "sgd"
"""

XOR = """
name = "x"
seed = 4

[data]
kind = "xor"
n = 40

[model]
layers = [ { linear = 4 }, "tanh", { linear = 1 }, "sigmoid" ]

[loss]
kind = "bce"

[optimizer]
kind = "sgd"
lr = 0.1
"""


def parse(text: str, path: str | Path = "/tmp/scenario.toml"):
    return parse_scenario(text, Path(path))


def error_of(text: str, path: str | Path = "/tmp/scenario.toml") -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse(text, path)
    return info.value


# -- every key and its default -------------------------------------------------------------------

def test_defaults_of_a_minimal_scenario():
    s = parse(MINIMAL, "/tmp/minimal.toml")
    assert s.name == "minimal"                    # the file's stem
    assert s.description == ""
    assert s.seed == 0
    assert s.data.kind == "xor" and dict(s.data.options) == {"n": 200, "noise": 0.1}
    assert s.model.layers == (LayerSpec("linear", 1),)
    assert s.model.init == "torch"                # torch.nn.Linear's own default
    assert s.model.init_scale is None
    assert s.model.frozen == ()
    assert s.model.dtype is None
    assert dict(s.init) == {}
    assert s.loss.kind == "mse"
    assert s.optimizer == SGD()                   # torch.optim.SGD's defaults
    assert s.optimizer.lr == 1e-3
    t = s.training
    assert (t.batch_size, t.epochs, t.shuffle, t.stop_when) == (None, 100, True, None)
    assert s.breakpoints == ()
    assert parse_scenario(MINIMAL).name == "scenario"


def test_every_key_is_read():
    text = """
name = "All keys"
description = "Every key set."
seed = 7

[data]
kind = "blobs"
n = 60
classes = 3
features = 4
std = 0.5

[model]
layers = [ { linear = 5, bias = false }, "relu", { leaky_relu = 0.2 }, "sigmoid", "tanh", "identity", { linear = 3 } ]
init = "uniform"
init_scale = 0.3
frozen = ["6.bias"]
dtype = "float32"

[init]
"6.bias" = [0.1, 0.2, 0.3]

[loss]
kind = "cross_entropy"

[optimizer]
kind = "adam"
lr = 0.02
betas = [0.8, 0.95]
eps = 1e-6
weight_decay = 0.01
amsgrad = true

[training]
batch_size = 16
epochs = 3
shuffle = false
stop_when = "loss < 0.1"

[[breakpoints]]
when = "grad_norm > 10"

[[breakpoints]]
when = "nan"
"""
    s = parse(text)
    assert (s.name, s.description, s.seed) == ("All keys", "Every key set.", 7)
    assert s.data.kind == "blobs" and dict(s.data.options) == {"n": 60, "classes": 3, "features": 4, "std": 0.5}
    assert s.dataset.x.shape == (60, 4)
    assert s.model.layers == (LayerSpec("linear", 5, bias=False), LayerSpec("relu"), LayerSpec("leaky_relu", negative_slope=0.2),
                              LayerSpec("sigmoid"), LayerSpec("tanh"), LayerSpec("identity"), LayerSpec("linear", 3))
    assert (s.model.init, s.model.init_scale, s.model.frozen, s.model.dtype) == ("uniform", 0.3, ("6.bias",), "float32")
    np.testing.assert_array_equal(s.init["6.bias"], [0.1, 0.2, 0.3])
    assert s.loss.kind == "cross_entropy"
    assert s.optimizer == Adam(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01, amsgrad=True)
    t = s.training
    assert (t.batch_size, t.epochs, t.shuffle, t.stop_when) == (16, 3, False, "loss < 0.1")
    assert s.breakpoints == ("grad_norm > 10", "nan")

    session = gdstep.open(s)
    assert session.backend.dtype == "float32"
    assert session.params["6.bias"].dtype == np.float32
    np.testing.assert_allclose(session.params["6.bias"], [0.1, 0.2, 0.3], rtol=1e-7)
    assert "0.bias" not in session.params                        # bias = false
    assert np.all(np.abs(session.params["0.weight"]) <= 0.3)    # uniform(±init_scale)
    assert [bp.text for bp in session.breakpoints] == ["grad_norm > 10", "nan"]
    session.step(2)
    np.testing.assert_allclose(session.params["6.bias"], [0.1, 0.2, 0.3], rtol=1e-7)   # frozen
    assert set(session.optimizer_state) == {"0.weight", "6.weight"}
    assert len(session.record("forward").indices) == 16
    np.testing.assert_array_equal(session.record("forward").indices, np.arange(16, 32))  # shuffle = false


def test_huber_delta_and_batch_size_full():
    s = parse(MINIMAL.replace('kind = "mse"', 'kind = "huber"\ndelta = 0.25') + '\n[training]\nbatch_size = "full"\n')
    assert s.loss.delta == 0.25
    assert s.training.batch_size is None
    e = error_of(MINIMAL + '\n[training]\nbatch_size = "half"\n')
    assert e.where == "training.batch_size"
    # delta belongs to huber only
    assert error_of(MINIMAL.replace('kind = "mse"', 'kind = "mse"\ndelta = 0.25')).where == "loss.delta"


def test_batch_size_larger_than_the_data_is_full_batch():
    s = parse(XOR + "\n[training]\nbatch_size = 1000\n")
    assert s.training.batch_size is None


@pytest.mark.parametrize("kind, args", [
    ("sgd", "momentum = 0.9\ndampening = 0.1\nweight_decay = 0.01\nnesterov = false"),
    ("rmsprop", "alpha = 0.9\neps = 1e-6\nmomentum = 0.5\ncentered = true\nweight_decay = 0.1"),
    ("adagrad", "lr_decay = 0.1\neps = 1e-9\nweight_decay = 0.1\ninitial_accumulator_value = 0.2"),
    ("adam", "betas = [0.5, 0.6]\neps = 1e-4\nweight_decay = 0.3\namsgrad = true"),
    ("adamw", "betas = [0.5, 0.6]\neps = 1e-4\nweight_decay = 0.3\namsgrad = true"),
])
def test_optimizer_arguments_are_torch_arguments(kind, args):
    import torch
    s = parse(MINIMAL.replace('kind = "sgd"', f'kind = "{kind}"\nlr = 0.05\n{args}'))
    from gdstep.optim import hyperparameters
    hp = hyperparameters(s.optimizer)
    opt = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad,
           "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]([torch.nn.Parameter(torch.zeros(1))], **hp)
    for key, value in hp.items():
        assert opt.defaults[key] == (tuple(value) if key == "betas" else value), key
    for line in args.splitlines():
        key, _, value = (p.strip() for p in line.partition("="))
        assert key in hp


# -- initialisation ------------------------------------------------------------------------------

def init_params(init: str, seed: int = 0, extra: str = "") -> dict[str, np.ndarray]:
    text = XOR.replace("seed = 4", f"seed = {seed}").replace('layers = [', f'init = "{init}"\n{extra}layers = [')
    text = text.replace("{ linear = 4 }", "{ linear = 200 }").replace("n = 40", "n = 40\nnoise = 0.1")
    return gdstep.open(parse(text)).params


def test_init_kinds_follow_their_formulas():
    fan_in, fan_out = 2, 200                     # layer 0; layer 2 is 200 -> 1
    p = init_params("torch")
    assert np.abs(p["0.weight"]).max() <= 1 / math.sqrt(fan_in) and np.abs(p["0.bias"]).max() <= 1 / math.sqrt(fan_in)
    assert np.abs(p["2.weight"]).max() <= 1 / math.sqrt(200)
    assert np.abs(p["0.weight"]).max() > 0.9 / math.sqrt(fan_in)          # spread over the whole range
    assert np.abs(p["0.bias"]).max() > 0.5 / math.sqrt(fan_in)

    p = init_params("xavier")
    bound = math.sqrt(6 / (fan_in + fan_out))
    assert np.abs(p["0.weight"]).max() <= bound and np.abs(p["0.weight"]).max() > 0.9 * bound
    assert not p["0.bias"].any() and not p["2.bias"].any()

    p = init_params("he")
    assert np.std(p["2.weight"]) == pytest.approx(math.sqrt(2 / 200), rel=0.2)
    assert np.std(p["0.weight"]) == pytest.approx(math.sqrt(2 / fan_in), rel=0.2)

    p = init_params("normal")
    assert np.std(p["0.weight"]) == pytest.approx(0.1, rel=0.2)
    p = init_params("normal", extra="init_scale = 2.0\n")
    assert np.std(p["0.weight"]) == pytest.approx(2.0, rel=0.2)
    p = init_params("uniform", extra="init_scale = 0.5\n")
    assert np.abs(p["0.weight"]).max() <= 0.5 and np.abs(p["0.weight"]).max() > 0.45
    p = init_params("zeros")
    assert not any(v.any() for v in p.values())


def test_init_is_seeded():
    a, b, c = init_params("torch", 1), init_params("torch", 1), init_params("torch", 2)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["0.weight"], c["0.weight"])


# -- datasets ------------------------------------------------------------------------------------

DATA = {
    "xor": 'kind = "xor"\nn = 40',
    "moons": 'kind = "moons"\nn = 50\nnoise = 0.2',
    "circles": 'kind = "circles"\nn = 50\nnoise = 0.05\nfactor = 0.3',
    "spiral": 'kind = "spiral"\nn = 60\nclasses = 4\nnoise = 0.3',
    "blobs": 'kind = "blobs"\nn = 45\nclasses = 3\nfeatures = 5\nstd = 0.7',
    "linear": 'kind = "linear"\nn = 30\nfeatures = 3\nnoise = 0.1',
    "sine": 'kind = "sine"\nn = 25\nnoise = 0.05',
}


def data_scenario(data: str, seed: int, loss: str = "mse", outputs: int = 1) -> str:
    return f"""
seed = {seed}
[data]
{data}
[model]
layers = [ {{ linear = {outputs} }} ]
[loss]
kind = "{loss}"
[optimizer]
kind = "sgd"
"""


@pytest.mark.parametrize("kind", sorted(DATA))
def test_generated_data_is_fixed_by_the_seed(kind):
    a = parse(data_scenario(DATA[kind], 1)).dataset
    b = parse(data_scenario(DATA[kind], 1)).dataset
    c = parse(data_scenario(DATA[kind], 2)).dataset
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)
    n = int(re.search(r"n = (\d+)", DATA[kind]).group(1))
    assert a.x.shape[0] == (n // 4 * 4 if kind == "spiral" else n)
    assert np.all(np.isfinite(a.x)) and np.all(np.isfinite(a.y))


@pytest.mark.parametrize("kind", ["xor", "moons", "circles", "spiral", "blobs", "linear", "sine"])
def test_every_generator_works_with_its_defaults(kind):
    s = parse(data_scenario(f'kind = "{kind}"', 0))
    d = s.dataset
    assert d.n == s.data.options["n"] > 0
    assert np.all(np.isfinite(d.x)) and np.all(np.isfinite(d.y))
    if kind in ("xor", "moons", "circles", "blobs"):
        assert d.n == 200                          # SPEC.md: n = 200
    session = gdstep.open(s)
    session.step()
    assert math.isfinite(session.loss_value)


def test_standardize():
    raw = parse(data_scenario(DATA["blobs"], 3))
    assert raw.data.standardize is False
    s = parse(data_scenario(DATA["blobs"] + "\nstandardize = true", 3))
    x = raw.dataset.x
    np.testing.assert_allclose(s.dataset.x, (x - x.mean(axis=0)) / x.std(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(s.dataset.y, raw.dataset.y)
    assert error_of(data_scenario(DATA["blobs"] + '\nstandardize = "yes"', 3)).where == "data.standardize"


def test_dataset_shapes_and_classes():
    d = parse(data_scenario(DATA["spiral"], 0)).dataset
    assert d.is_classification and d.n_classes == 4 and np.bincount(d.y).tolist() == [15] * 4
    d = parse(data_scenario(DATA["blobs"], 0)).dataset
    assert d.x.shape == (45, 5) and np.bincount(d.y).tolist() == [15, 15, 15]
    d = parse(data_scenario('kind = "blobs"\nn = 900\nclasses = 3\nfeatures = 2\nstd = 0.25', 0)).dataset
    for k in range(3):
        spread = d.x[d.y == k] - d.x[d.y == k].mean(axis=0)
        assert spread.std() == pytest.approx(0.25, rel=0.1)
    assert np.all(np.abs(d.x) < 5.0 + 6 * 0.25)                # centres drawn in [−5, 5]
    d = parse(data_scenario(DATA["linear"], 0)).dataset
    assert d.x.shape == (30, 3) and d.y.shape == (30, 1) and not d.is_classification
    for kind in ("moons", "circles", "xor"):
        d = parse(data_scenario(DATA[kind], 0)).dataset
        assert d.x.shape[1] == 2 and set(np.unique(d.y)) == {0, 1}


def test_noiseless_generators_follow_their_definitions():
    d = parse(data_scenario('kind = "xor"\nn = 8\nnoise = 0.0', 0)).dataset
    for (x1, x2), label in zip(d.x, d.y):
        assert label == (int(x1) ^ int(x2))
    d = parse(data_scenario('kind = "linear"\nn = 20\nfeatures = 2\nweights = [2.0, -3.0]\nbias = 0.5\nnoise = 0.0', 0)).dataset
    np.testing.assert_allclose(d.y[:, 0], d.x @ np.array([2.0, -3.0]) + 0.5, rtol=0, atol=1e-15)
    d = parse(data_scenario('kind = "sine"\nn = 20\nnoise = 0.0', 0)).dataset
    np.testing.assert_allclose(d.y[:, 0], np.sin(d.x[:, 0]), rtol=0, atol=1e-15)
    d = parse(data_scenario('kind = "circles"\nn = 40\nnoise = 0.0\nfactor = 0.3', 0)).dataset
    radius = np.hypot(d.x[:, 0], d.x[:, 1])
    np.testing.assert_allclose(radius[d.y == 0], 1.0, atol=1e-12)
    np.testing.assert_allclose(radius[d.y == 1], 0.3, atol=1e-12)
    d = parse(data_scenario('kind = "moons"\nn = 40\nnoise = 0.0', 0)).dataset
    outer, inner = d.x[d.y == 0], d.x[d.y == 1]
    np.testing.assert_allclose(np.hypot(outer[:, 0], outer[:, 1]), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.hypot(inner[:, 0] - 1.0, inner[:, 1] - 0.5), 1.0, atol=1e-12)


def test_inline_data():
    s = parse(data_scenario('kind = "inline"\nx = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]\ny = [0, 2, 1]', 0,
                            loss="cross_entropy", outputs=3))
    np.testing.assert_array_equal(s.dataset.x, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(s.dataset.y, [0, 2, 1])
    assert s.dataset.is_classification
    s = parse(data_scenario('kind = "inline"\nx = [0.5, 1.5]\ny = [[1.0], [2.0]]', 0))
    assert s.dataset.x.shape == (2, 1) and s.dataset.y.shape == (2, 1)
    e = error_of(data_scenario('kind = "inline"\nx = [[1.0], [2.0]]\ny = [1.0]', 0))
    assert e.where == "data.y" and "2" in e.message
    e = error_of(data_scenario('kind = "inline"\nx = [[1.0, 2.0], [3.0]]\ny = [1.0, 2.0]', 0))
    assert e.where == "data.x"
    e = error_of(data_scenario('kind = "inline"\ny = [1.0]', 0))
    assert (e.where, e.message) == ("data.x", "missing")


def write_csv(tmp_path: Path, body: str, data: str) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "flowers.csv").write_text(body)
    path = tmp_path / "flowers.toml"
    path.write_text(data_scenario(data, 0, loss="cross_entropy", outputs=3))
    return path


CSV = "length,width,species\n1.0,0.5,setosa\n2.0,1.5,virginica\n1.5,1.0,versicolor\n1.1,0.4,setosa\n"


def test_csv_with_string_labels(tmp_path):
    path = write_csv(tmp_path, CSV, 'kind = "csv"\npath = "data/flowers.csv"\ntarget = "species"')
    s = load_scenario(path)
    d = s.dataset
    np.testing.assert_array_equal(d.x, [[1.0, 0.5], [2.0, 1.5], [1.5, 1.0], [1.1, 0.4]])
    assert d.feature_names == ("length", "width")
    assert d.class_names == ("setosa", "versicolor", "virginica")     # sorted
    np.testing.assert_array_equal(d.y, [0, 2, 1, 0])
    session = gdstep.open(path)
    session.step()
    assert math.isfinite(session.loss_value)
    # the target defaults to the last column; features may be chosen
    path.write_text(data_scenario('kind = "csv"\npath = "data/flowers.csv"\nfeatures = ["width"]', 0, loss="cross_entropy", outputs=3))
    d = load_scenario(path).dataset
    np.testing.assert_array_equal(d.x[:, 0], [0.5, 1.5, 1.0, 0.4])


def test_csv_missing_column(tmp_path):
    path = write_csv(tmp_path, CSV, 'kind = "csv"\npath = "data/flowers.csv"\ntarget = "colour"')
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    e = info.value
    assert e.file == str(path)
    assert e.where == "data.target"
    assert "'colour'" in e.message and "length, width, species" in e.message
    path.write_text(data_scenario('kind = "csv"\npath = "data/flowers.csv"\nfeatures = ["length", "height"]', 0,
                                  loss="cross_entropy", outputs=3))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.where == "data.features" and "'height'" in info.value.message


def test_csv_bad_rows_and_missing_file(tmp_path):
    path = write_csv(tmp_path, "a,b,label\n1.0,2.0,x\n1.0,oops,y\n", 'kind = "csv"\npath = "data/flowers.csv"')
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert "row 3" in info.value.message and "'oops'" in info.value.message
    path = write_csv(tmp_path, CSV, 'kind = "csv"\npath = "data/nothere.csv"')
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.where == "data.path" and "nothere.csv" in info.value.message


# -- bad input: one clean error naming file, place and problem -----------------------------------

BAD = {
    "wrong key": (XOR.replace("lr = 0.1", "lr = 0.1\nmomentun = 0.9"), "optimizer.momentun", "did you mean 'momentum'"),
    "wrong top-level key": ("seeds = 3\n" + XOR, "seeds", "unknown key"),
    "wrong type": (XOR.replace("lr = 0.1", 'lr = "fast"'), "optimizer.lr", "expected a number, got a string"),
    "wrong type bool": (XOR.replace("n = 40", "n = true"), "data.n", "expected an integer"),
    "negative lr": (XOR.replace("lr = 0.1", "lr = -0.1"), "optimizer.lr", "learning rate must be >= 0"),
    "unknown layer": (XOR.replace('"tanh"', '"tanhh"'), "model.layers[1]", "did you mean 'tanh'"),
    "layer table": (XOR.replace("{ linear = 4 }", "{ conv = 4 }"), "model.layers[0]", "linear"),
    "no linear layer": (XOR.replace('layers = [ { linear = 4 }, "tanh", { linear = 1 }, "sigmoid" ]', 'layers = ["tanh"]'),
                        "model.layers", "linear"),
    "zero units": (XOR.replace("{ linear = 4 }", "{ linear = 0 }"), "model.layers[0].linear", "positive"),
    "empty layers": (XOR.replace('[ { linear = 4 }, "tanh", { linear = 1 }, "sigmoid" ]', "[]"), "model.layers", "at least one"),
    "outputs vs classes": (XOR.replace('{ linear = 1 }, "sigmoid"', '{ linear = 3 }, "sigmoid"').replace('"bce"', '"cross_entropy"'),
                           None, None),   # 3 outputs for 2 classes is fine: must parse
    "bce without sigmoid": (XOR.replace(', "sigmoid"', ""), "loss.kind", "sigmoid"),
    "init shape": (XOR + '\n[init]\n"0.weight" = [[1.0, 2.0]]\n', 'init."0.weight"', "shape (1, 2)"),
    "init name": (XOR + '\n[init]\n"1.weight" = [[1.0, 2.0]]\n', 'init."1.weight"', "no such parameter"),
    "frozen name": (XOR.replace('kind = "bce"', 'kind = "bce"').replace("[loss]", 'frozen = ["9.bias"]\n[loss]'),
                    "model.frozen[0]", "no parameter '9.bias'"),
    "unknown loss": (XOR.replace('"bce"', '"bse"'), "loss.kind", "unknown loss"),
    "unknown optimizer": (XOR.replace('"sgd"', '"adamm"'), "optimizer.kind", "did you mean 'adam'"),
    "unknown data kind": (XOR.replace('kind = "xor"', 'kind = "xoor"'), "data.kind", "unknown data kind"),
    "bad betas": (XOR.replace('"sgd"', '"adam"').replace("lr = 0.1", "lr = 0.1\nbetas = [0.9]"), "optimizer.betas", "two numbers"),
    "beta out of range": (XOR.replace('"sgd"', '"adam"').replace("lr = 0.1", "lr = 0.1\nbetas = [0.9, 1.5]"), "optimizer.betas", "beta2"),
    "nesterov": (XOR.replace("lr = 0.1", "lr = 0.1\nnesterov = true"), "optimizer.nesterov", "momentum"),
    "bad condition": (XOR + '\n[training]\nstop_when = "loss <"\n', "training.stop_when", "column 7"),
    "bad breakpoint": (XOR + '\n[[breakpoints]]\nwhen = "3.weight[0,0] > 1"\n', "breakpoints[0].when", "no parameter '3.weight'"),
    "epochs": (XOR + "\n[training]\nepochs = 0\n", "training.epochs", "at least 1"),
    "missing section": (XOR.replace('[loss]\nkind = "bce"\n', ""), "loss", "missing"),
    "misspelled section": (XOR.replace("[optimizer]", "[optimiser]"), "optimizer", "missing (the file has 'optimiser'"),
    "a boolean, as TOML spells it": (XOR.replace("lr = 0.1", "lr = true"), "optimizer.lr", "got a boolean true"),
    "negative seed": (XOR.replace("seed = 4", "seed = -1"), "seed", ">= 0"),
    "nan": (XOR.replace("lr = 0.1", "lr = nan"), "optimizer.lr", "finite"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_names_file_key_and_problem(case):
    text, where, message = BAD[case]
    if where is None:
        parse(text)
        return
    e = error_of(text, "/tmp/bad.toml")
    assert e.file == "/tmp/bad.toml"
    assert e.where == where
    assert message in e.message
    assert str(e).startswith(f"/tmp/bad.toml: {where}: ")
    assert "\n" not in str(e)


def test_broken_toml_names_the_line():
    text = XOR.replace('kind = "bce"', 'kind = "bce')
    line = text.splitlines().index('kind = "bce') + 1
    e = error_of(text, "/tmp/broken.toml")
    assert e.file == "/tmp/broken.toml"
    assert e.where.startswith(f"line {line}, column ")
    assert e.message.startswith("invalid TOML")
    e = error_of("[data\nkind = 1")
    assert e.where.startswith("line 1")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ScenarioError, match="no such file"):
        load_scenario(tmp_path / "nope.toml")
    with pytest.raises(ScenarioError, match="directory"):
        load_scenario(tmp_path)


def cli_check(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check", str(path)])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case", ["wrong key", "wrong type", "negative lr", "unknown layer", "init shape", "frozen name"])
def test_check_exits_2_with_one_line(tmp_path, case):
    text, where, message = BAD[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, out, err = cli_check(path)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    assert str(path) in lines[0] and where in lines[0] and message in lines[0]
    assert "Traceback" not in err


def test_check_in_a_real_process_on_broken_toml_and_missing_csv(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text(XOR.replace('kind = "bce"', 'kind = "bce'))
    csv = write_csv(tmp_path, CSV, 'kind = "csv"\npath = "data/flowers.csv"\ntarget = "colour"')
    for path, where in [(bad, "line "), (csv, "data.target")]:
        proc = subprocess.run([sys.executable, "-m", "gdstep.cli", "check", str(path)], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, proc.stderr
        assert str(path) in lines[0] and where in lines[0]
        assert "Traceback" not in proc.stderr


# -- mutated scenarios: only the clean error, ever ------------------------------------------------

SEEDS = [p.read_text() for _, p, _ in bundled()] + [XOR, MINIMAL]
KEYS = ["name", "seed", "kind", "n", "noise", "layers", "init", "frozen", "dtype", "lr", "momentum", "betas", "eps",
        "batch_size", "epochs", "shuffle", "stop_when", "when", "x", "y", "path", "target", "classes", "features",
        "weights", "bias", "delta", "amsgrad", "nesterov", "centered", "init_scale", "factor", "linear", "zzz", "0.weight"]
VALUES = ["0", "-1", "1", "2", "3", "7", "0.5", "-0.5", "1e300", "-1e300", "nan", "inf", "true", "false", '""', '"x"',
          '"full"', '"loss < 0.1"', '"nan or"', '"relu"', '"adam"', '"cross_entropy"', '"mse"', '"inline"', '"spiral"',
          '"float32"', '"float16"', "[]", "[1, 2]", "[[1.0, 2.0]]", '["tanh"]', "[{ linear = 0 }]", "[{ linear = 2 }]",
          "{ a = 1 }", "[0.9, 0.999]", "1979-05-27", '"0.weight"', '"he"', '"zeros"']
JUNK = ["[model]", "[[breakpoints]]", "[init]", "[optimizer.extra]", "x = ", "= 3", "[", "]]", '"', "a.b.c = 1",
        'when = "loss > 1"', "lr = 0.1", "layers = [", "\\", "[training]\nbatch_size = 0", '"0.bias" = [1.0]', "ü = 1"]


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 3))):
        lines = text.splitlines()
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "rename", "value", "junk", "truncate", "duplicate", "char"]))
        if op == "delete":
            del lines[i]
        elif op == "rename" and "=" in lines[i]:
            _, _, value = lines[i].partition("=")
            lines[i] = f"{draw(st.sampled_from(KEYS))} ={value}"
        elif op == "value" and "=" in lines[i]:
            key, _, _ = lines[i].partition("=")
            lines[i] = f"{key}= {draw(st.sampled_from(VALUES))}"
        elif op == "junk":
            lines.insert(i, draw(st.sampled_from(JUNK) | st.text(max_size=12)))
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "char":
            j = draw(st.integers(0, len(lines[i])))
            cut = draw(st.integers(0, 1))
            lines[i] = lines[i][:j] + draw(st.sampled_from(list("=[]{}\",.#-0_ a\t"))) + lines[i][j + cut:]
        text = "\n".join(lines)
        if op == "truncate":
            text = text[: draw(st.integers(0, len(text)))]
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_scenarios_parse_or_raise_scenario_error(text):
    try:
        s = parse_scenario(text, Path("/tmp/mutated.toml"))
    except ScenarioError as e:
        assert e.file == "/tmp/mutated.toml"
        assert e.message and "\n" not in str(e)
        # a place: a key path, a TOML line, or the end of the document
        assert e.where or "end of document" in e.message, str(e)
        return
    gdstep.open(s)       # what parses also builds


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_scenarios_through_check_exit_0_or_2_with_one_line(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mutated.toml"
        path.write_text(text, encoding="utf-8")
        code, out, err = cli_check(path)
    assert code in (0, 2), (code, err)
    if code == 2:
        assert out == ""
        assert len(err.splitlines()) == 1, err
        assert str(path) in err
    else:
        assert err == "" and out.startswith(f"{path}: ok")
    assert "Traceback" not in err


def test_absurd_sample_counts_are_a_clean_error(monkeypatch):
    e = error_of(XOR.replace("n = 40", "n = 9223372036854775807"))
    assert e.where == "data.n" and "at most 10,000,000" in e.message       # gdstep.limits, before allocating

    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 745. GiB for an array with shape (100000000000,)")
    monkeypatch.setattr("gdstep.scenario.make_dataset", no_memory)
    e = error_of(XOR.replace("n = 40", "n = 1000000"))
    assert e.where == "data" and "Unable to allocate" in e.message
