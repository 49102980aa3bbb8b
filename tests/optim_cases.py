"""The optimizer cases every parity test runs: each option of each optimizer on its own, and
all of them at once. One table, shared by the numpy-vs-torch.optim test and the
numpy-vs-torch-backend test. A new optimizer adds its kind to TORCH and its options here."""

from __future__ import annotations

# Every option of every kind, alone and combined.
CASES = [
    ("sgd", {"lr": 0.05}),
    ("sgd", {"lr": 0.05, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("sgd", {"lr": 0.05, "weight_decay": 0.1}),
    ("sgd", {"lr": 0.03, "momentum": 0.7, "dampening": 0.1, "weight_decay": 0.05}),
    ("sgd", {"lr": 0.03, "momentum": 0.9, "nesterov": True, "weight_decay": 0.02}),
    ("rmsprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.01, "alpha": 0.9}),
    ("rmsprop", {"lr": 0.01, "eps": 1e-3}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.9}),
    ("rmsprop", {"lr": 0.01, "centered": True}),
    ("rmsprop", {"lr": 0.01, "weight_decay": 0.1}),
    ("rmsprop", {"lr": 0.005, "alpha": 0.95, "eps": 1e-6, "momentum": 0.5, "centered": True, "weight_decay": 0.01}),
    ("adagrad", {"lr": 0.1}),
    ("adagrad", {"lr": 0.1, "lr_decay": 0.05}),
    ("adagrad", {"lr": 0.1, "eps": 1e-3}),
    ("adagrad", {"lr": 0.1, "weight_decay": 0.1}),
    ("adagrad", {"lr": 0.1, "initial_accumulator_value": 0.5}),
    ("adagrad", {"lr": 0.2, "lr_decay": 0.01, "eps": 1e-6, "weight_decay": 0.05, "initial_accumulator_value": 0.1}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "betas": (0.8, 0.99)}),
    ("adam", {"lr": 0.01, "eps": 1e-4}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adam", {"lr": 0.01, "amsgrad": True}),
    ("adam", {"lr": 0.02, "betas": (0.5, 0.9), "eps": 1e-6, "weight_decay": 0.05, "amsgrad": True}),
    ("adamw", {"lr": 0.01}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.3}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.0}),
    ("adamw", {"lr": 0.01, "betas": (0.7, 0.95), "eps": 1e-5, "amsgrad": True, "weight_decay": 0.1}),
]

# Every option at once, per kind (each is also a case above).
ALL_ON = {
    "sgd": {"lr": 0.03, "momentum": 0.7, "dampening": 0.1, "weight_decay": 0.05},
    "rmsprop": {"lr": 0.005, "alpha": 0.95, "eps": 1e-6, "momentum": 0.5, "centered": True, "weight_decay": 0.01},
    "adagrad": {"lr": 0.2, "lr_decay": 0.01, "eps": 1e-6, "weight_decay": 0.05, "initial_accumulator_value": 0.1},
    "adam": {"lr": 0.02, "betas": (0.5, 0.9), "eps": 1e-6, "weight_decay": 0.05, "amsgrad": True},
    "adamw": {"lr": 0.01, "betas": (0.7, 0.95), "eps": 1e-5, "amsgrad": True, "weight_decay": 0.1},
}

# The torch.optim class each kind must agree with: written here, not read from the code under test.
TORCH = {"sgd": "SGD", "rmsprop": "RMSprop", "adagrad": "Adagrad", "adam": "Adam", "adamw": "AdamW"}


def case_id(case) -> str:
    kind, args = case
    return kind + "-" + "-".join(f"{k}={v}" for k, v in args.items() if k != "lr")
