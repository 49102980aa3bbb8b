"""Attach mode on models as practitioners write them — a CNN with BatchNorm and Dropout, an
LSTM language model with its hidden state and clipping, an Embedding + TransformerEncoderLayer
with OneCycleLR, a VAE returning (recon, mu, logvar), param groups with StepLR, a GradScaler —
each checked against a bare PyTorch loop run here, to the bit, and with a rewind in the middle
(back 4 iterations, step 4 again) that must leave parameters, buffers, optimizer state and
scheduler state exactly as they were without it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gdstep


def same(a, b, path="") -> None:
    """Exactly equal, tensors bit for bit, through dicts and lists (state_dicts)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            same(u, v, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def snapshot(case) -> tuple:
    sched = case.get("sched")
    return (copy.deepcopy(case["model"].state_dict()), copy.deepcopy(case["opt"].state_dict()),
            copy.deepcopy(sched.state_dict()) if sched is not None else None)


# -- the models ---------------------------------------------------------------------------------

class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.log_softmax(self.fc(self.drop(torch.flatten(x, 1))), dim=1)


class RNNModel(nn.Module):
    """word_language_model's RNNModel, small: forward(input, hidden) -> (output, hidden)."""

    def __init__(self, ntoken=20, ninp=8, nhid=12, nlayers=2):
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=0.2)
        self.decoder = nn.Linear(nhid, ntoken)
        self.nlayers, self.nhid, self.ntoken = nlayers, nhid, ntoken

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        return F.log_softmax(self.decoder(self.drop(output)).view(-1, self.ntoken), dim=1), hidden

    def init_hidden(self, bsz):
        return (torch.zeros(self.nlayers, bsz, self.nhid), torch.zeros(self.nlayers, bsz, self.nhid))


class TinyTransformer(nn.Module):
    def __init__(self, ntoken=20, d=16):
        super().__init__()
        self.emb = nn.Embedding(ntoken, d)
        self.layer = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.1, batch_first=True)
        self.out = nn.Linear(d, ntoken)

    def forward(self, src, mask=None):
        return self.out(self.layer(self.emb(src), src_mask=mask))


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(36, 16), nn.Linear(16, 4), nn.Linear(16, 4)
        self.fc3, self.fc4 = nn.Linear(4, 16), nn.Linear(16, 36)

    def forward(self, x):
        h = F.relu(self.fc1(x.view(-1, 36)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(logvar) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def vae_loss(out, x):
    recon, mu, logvar = out
    bce = F.binary_cross_entropy(recon, x.view(-1, 36), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def cnn_case(seed=0):
    torch.manual_seed(seed)
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 1, 14, 14, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(10)]
    return dict(model=model, opt=opt, sched=sched, loss_fn=F.nll_loss, batches=batches, args=lambda: ())


def transformer_case(seed=0):
    torch.manual_seed(seed)
    model = TinyTransformer()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=12)
    g = torch.Generator().manual_seed(2)
    mask = nn.Transformer.generate_square_subsequent_mask(6)
    batches = [(torch.randint(0, 20, (4, 6), generator=g), torch.randint(0, 20, (4, 6), generator=g)) for _ in range(10)]
    return dict(model=model, opt=opt, sched=sched, batches=batches, args=lambda: (), kwargs={"mask": mask},
                loss_fn=lambda out, y: F.cross_entropy(out.reshape(-1, 20), y.reshape(-1)),
                clip=lambda: nn.utils.clip_grad_norm_(model.parameters(), 0.5))


def vae_case(seed=0):
    torch.manual_seed(seed)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(3)
    batches = [(x, x) for x in (torch.rand(8, 1, 6, 6, generator=g) for _ in range(10))]
    return dict(model=model, opt=opt, loss_fn=vae_loss, batches=batches, args=lambda: ())


def groups_case(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.1, "momentum": 0.9},
                           {"params": model[2].parameters(), "lr": 0.01}], lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.7)
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(10)]
    return dict(model=model, opt=opt, sched=sched, loss_fn=nn.CrossEntropyLoss(), batches=batches, args=lambda: ())


CASES = {"cnn_batchnorm_dropout_steplr": cnn_case, "transformer_onecycle_clip": transformer_case,
         "vae_tuple_output": vae_case, "param_groups_steplr": groups_case}


def run_bare(case) -> list[float]:
    model, opt, sched, loss_fn = case["model"], case["opt"], case.get("sched"), case["loss_fn"]
    losses = []
    for x, y in case["batches"]:
        opt.zero_grad()
        loss = loss_fn(model(x, *case["args"](), **case.get("kwargs", {})), y)
        loss.backward()
        if case.get("clip"):
            case["clip"]()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
    return losses


def attached_loop(case, on_break=None, breakpoints=()):
    sched = case.get("sched")
    dbg = gdstep.attach(case["model"], case["opt"], case["loss_fn"], breakpoints=list(breakpoints),
                        on_break=on_break or (lambda s, m: None), before_update=case.get("clip"), scheduler=sched)
    losses = []
    for x, y in case["batches"]:
        losses.append(dbg.step(x, y, *case["args"](), **case.get("kwargs", {})))
        if sched is not None:
            sched.step()
    dbg.close()
    return losses, dbg


def back_and_again(session, message):
    """What a user does at a break: look 4 iterations back, then come forward again."""
    session.back(iterations=4)
    session.step(4)


@pytest.mark.parametrize("name", list(CASES))
def test_attached_loop_matches_the_bare_loop_and_rewinds_are_exact(name):
    bare = CASES[name]()
    bare_losses = run_bare(bare)
    plain = CASES[name]()
    plain_losses, dbg = attached_loop(plain)
    assert plain_losses == bare_losses
    same(snapshot(plain), snapshot(bare))
    rewound = CASES[name]()
    seen = []
    rewound_losses, dbg = attached_loop(rewound, on_break=lambda s, m: (seen.append(m), back_and_again(s, m)),
                                        breakpoints=["step == 6"])
    assert len(seen) == 1
    assert rewound_losses == bare_losses
    same(snapshot(rewound), snapshot(bare))
    assert dbg.session.replay_inexact is None


def test_the_update_shows_the_clipped_gradient_and_the_lr_in_force():
    case = transformer_case()
    looked = {}

    def look(session, message):
        session.update()
        rec = session.record("update")
        looked["grad"] = {n: u.grad.clone() for n, u in rec.params.items()}
        looked["raw"] = {n: g.clone() for n, g in session.record("backward").grads.items()}
        looked["lr"] = rec.lr
        looked["history"] = dict(session.backend.lr_history)

    dbg = gdstep.attach(case["model"], case["opt"], case["loss_fn"], breakpoints=["step == 3 and phase == 'backward'"],
                        on_break=look, before_update=case["clip"], scheduler=case["sched"])
    lrs = []
    for x, y in case["batches"][:5]:
        lrs.append(case["opt"].param_groups[0]["lr"])
        dbg.step(x, y, **case["kwargs"])
        case["sched"].step()
    raw = torch.cat([g.flatten() for g in looked["raw"].values()])
    used = torch.cat([g.flatten() for g in looked["grad"].values()])
    assert raw.norm() > 0.5                              # clipping had work to do
    torch.testing.assert_close(used.norm(), torch.tensor(0.5), rtol=1e-5, atol=0)
    torch.testing.assert_close(used, raw * (0.5 / (raw.norm() + 1e-6)), rtol=1e-5, atol=1e-9)
    assert looked["lr"] == lrs[3] and looked["history"][3] == (lrs[3],)
    assert dbg.backend.scheduler_name == "OneCycleLR"


def test_an_lstm_with_its_hidden_state_and_clipping_matches_the_bare_loop_and_rewinds():
    def build():
        torch.manual_seed(0)
        model = RNNModel()
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        g = torch.Generator().manual_seed(5)
        data = torch.randint(0, 20, (7 * 5 + 1, 3), generator=g)
        batches = [(data[i:i + 5], data[i + 1:i + 6].reshape(-1)) for i in range(0, 35, 5)]
        return model, opt, batches

    def repackage(h):
        return tuple(t.detach() for t in h)

    model, opt, batches = build()
    hidden = model.init_hidden(3)
    for x, y in batches:
        opt.zero_grad()
        hidden = repackage(hidden)
        out, hidden = model(x, hidden)
        F.nll_loss(out, y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
    expected = copy.deepcopy(model.state_dict())

    for breakpoints in ([], ["step == 5"]):
        model, opt, batches = build()
        dbg = gdstep.attach(model, opt, lambda out, y: F.nll_loss(out[0], y), breakpoints=breakpoints,
                            on_break=back_and_again, before_update=lambda: nn.utils.clip_grad_norm_(model.parameters(), 0.25))
        hidden = model.init_hidden(3)
        for x, y in batches:
            dbg.step(x, y, hidden)
            hidden = repackage(dbg.output[1])
        same(model.state_dict(), expected)
        assert [n for n, _ in dbg.named_outputs] == ["output[0]", "output[1][0]", "output[1][1]"]
        assert dbg.session.replay_inexact is None
        dbg.close()


def test_watch_mode_lstm_back_recomputes_with_the_hidden_state_and_reads_the_clipped_gradient():
    def build():
        torch.manual_seed(0)
        model = RNNModel()
        model.drop.p = 0.0
        model.rnn.dropout = 0.0
        return model, torch.optim.SGD(model.parameters(), lr=1.0)

    g = torch.Generator().manual_seed(6)
    data = torch.randint(0, 20, (31, 3), generator=g)
    batches = [(data[i:i + 5], data[i + 1:i + 6].reshape(-1)) for i in range(0, 30, 5)]
    seen = {}

    def look(session, message):
        session.back(phases=3)                  # to before the forward, with model(input, hidden)
        session.forward(); session.loss(); session.backward()
        seen["grads"] = {n: g.clone() for n, g in session.record("backward").grads.items()}

    runs = []
    for watching in (False, True):
        model, opt = build()
        dbg = gdstep.attach(model, opt, lambda out, y: F.nll_loss(out[0], y),
                            breakpoints=["step == 3 and phase == 'backward'"], on_break=look) if watching else None
        hidden, used = model.init_hidden(3), []
        for x, y in batches:
            opt.zero_grad()
            hidden = tuple(t.detach() for t in hidden)
            out, hidden = model(x, hidden)
            loss = F.nll_loss(out, y)
            loss.backward()
            if dbg is not None:
                dbg.watch(loss, y)
            nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            used.append({n: p.grad.clone() for n, p in model.named_parameters()})
            opt.step()
        runs.append((copy.deepcopy(model.state_dict()), used, dbg))
    same(runs[1][0], runs[0][0])                    # the debugger only looked
    dbg = runs[1][2]
    rec = dbg.session.record("update")
    for name, u in rec.params.items():               # the gradient step() used: clipped
        same(u.grad, runs[1][1][-1][name], name)
    raw = torch.cat([g.flatten() for g in seen["grads"].values()])
    assert raw.norm() > 0.25                          # backward's own gradient, recomputed exactly
    assert dbg.session.replay_inexact is None


def test_gradscaler_skips_what_the_bare_loop_skips():
    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 124, backoff_factor=2.0 ** -8, growth_interval=2)
        return model, opt, scaler

    g = torch.Generator().manual_seed(7)
    batches = [(torch.randn(16, 6, generator=g), 100 * torch.randn(16, 1, generator=g)) for _ in range(8)]
    model, opt, scaler = build()
    for x, y in batches:
        opt.zero_grad()
        scaler.scale(F.mse_loss(model(x), y)).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
    expected, scale = copy.deepcopy(model.state_dict()), scaler.get_scale()

    model, opt, scaler = build()
    breaks = []
    dbg = gdstep.attach(model, opt, nn.MSELoss(), scaler=scaler, on_break=lambda s, m: breaks.append(m),
                        before_update=lambda: nn.utils.clip_grad_norm_(model.parameters(), 1.0))
    for x, y in batches:
        dbg.step(x, y)
    same(model.state_dict(), expected)
    assert scaler.get_scale() == scale and dbg.backend.skipped
    assert breaks and all("non-finite" in m for m in breaks)     # the overflowing gradients paused, named
    assert any("GradScaler skipped" in e.message for e in dbg.session.events)


def test_watch_mode_with_a_gradscaler_shows_unscaled_gradients_and_puts_the_scaler_back():
    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 1))
        return model, torch.optim.Adam(model.parameters(), lr=0.01), torch.amp.GradScaler("cpu", growth_interval=3)

    g = torch.Generator().manual_seed(8)
    batches = [(torch.randn(16, 6, generator=g), torch.randn(16, 1, generator=g)) for _ in range(8)]
    seen = {}

    def look(session, message):
        seen["backward"] = {n: g.clone() for n, g in session.record("backward").grads.items()}
        session.back(iterations=2)
        session.step(2)
        session.forward(); session.loss(); session.backward()

    results = []
    for watching in (False, True):
        model, opt, scaler = build()
        dbg = gdstep.attach(model, opt, nn.MSELoss(), ["step == 4 and phase == 'backward'"], on_break=look,
                            scaler=scaler) if watching else None
        for i, (x, y) in enumerate(batches):
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            scaler.scale(loss).backward()
            if dbg is not None:
                dbg.watch(loss, y)
            scaler.unscale_(opt)
            if i == 4:
                seen.setdefault("unscaled", {n: p.grad.clone() for n, p in model.named_parameters()})
            nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            scaler.step(opt)
            scaler.update()
        results.append((copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()), scaler.get_scale()))
    same(results[1], results[0])
    for name, grad in seen["backward"].items():          # the gradient of the loss, not of scale·loss
        same(grad, seen["unscaled"][name], name)
    assert dbg.session.replay_inexact is None


class DictModel(nn.Module):
    """A model that takes a dict batch (or keyword arguments) and returns a dict."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, batch=None, *, ids=None, mask=None):
        if batch is not None:
            ids, mask = batch["ids"], batch["mask"]
        h = (self.emb(ids) * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return {"logits": self.head(h), "pooled": h}


def dict_loss(out, y):
    return F.cross_entropy(out["logits"], y["label"])


@pytest.mark.parametrize("style", ["dict batch", "keyword arguments"])
def test_dict_batches_dict_targets_and_dict_outputs(style):
    def build():
        torch.manual_seed(0)
        model = DictModel()
        return model, torch.optim.AdamW(model.parameters(), lr=0.01)

    g = torch.Generator().manual_seed(9)
    batches = [({"ids": torch.randint(0, 30, (6, 5), generator=g), "mask": (torch.rand(6, 5, generator=g) > 0.2).float() + 0.01},
                {"label": torch.randint(0, 3, (6,), generator=g)}) for _ in range(8)]
    model, opt = build()
    for batch, y in batches:
        opt.zero_grad()
        dict_loss(model(batch), y).backward()
        opt.step()
    expected = snapshot({"model": model, "opt": opt})
    model, opt = build()
    dbg = gdstep.attach(model, opt, dict_loss, ["step == 6"], on_break=back_and_again)
    for batch, y in batches:
        if style == "dict batch":
            dbg.step(batch, y)
        else:
            dbg.step(None, y, **batch)
    same(snapshot({"model": model, "opt": opt}), expected)
    assert [n for n, _ in dbg.named_outputs] == ["output['logits']", "output['pooled']"]
    rec = dbg.session.record("forward")
    assert torch.equal(rec.inputs, batches[-1][0]["ids"])      # the batch's first tensor is what is shown
    assert dbg.session.replay_inexact is None


def test_the_first_dbg_step_runs_a_sequential_once_and_probes_another_model_first():
    """Which rows a model calls is found by a trial forward, except in an nn.Sequential,
    which calls every child."""
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.unused = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x)

    for model, first, forwards in ((nn.Sequential(nn.Linear(3, 2)), lambda m: m[0], 1),
                                   (Wrapped(), lambda m: m.fc, 2)):
        calls = []
        first(model).register_forward_pre_hook(lambda m, a: calls.append(1))
        dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss())
        dbg.step(torch.randn(4, 3), torch.randn(4, 2))
        assert len(calls) == forwards
        assert [info.name for info in dbg.session.backend.layers][:1] == (["0"] if forwards == 1 else ["fc"])
        if forwards == 2:            # the trial found the module the forward never calls
            assert "unused" not in [info.name for info in dbg.session.backend.layers]
