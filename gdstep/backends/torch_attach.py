"""The backend of attach mode: the user's own model and optimizer, and as data the batches
their training loop hands over.

It keeps the batches of the last few iterations, so a rewind in the debugger recomputes
them exactly; the next batch is the loop's to give. In watch mode (the loop calls
`backward()` and `step()` itself) the phases are not computed but observed: hooks record
the loop's own forward, the gradients it made and its `optimizer.step()`, and the Session
receives those values as the phases' results.
"""

from __future__ import annotations

from typing import Any, Mapping

from gdstep.backends.torch_layers import first_tensor
from gdstep.backends.torch_module import ModuleBackend
from gdstep.backends.torch_optim import config_of, group_hyperparameters
from gdstep.errors import GdstepError
from gdstep.records import ParamUpdate


class AttachBackend(ModuleBackend):
    def __init__(self, model, loss, optimizer, keep: int = 16):
        self._watching = False
        self._deltas: list = []
        self.last_input = None
        super().__init__(model, loss, optimizer, None, None, track_rng=True)
        self._sequential = False          # record through hooks: the loop's own forward too
        self.remove_hooks()
        self._install_hooks()
        self._capture = True              # every forward of the model, not only ours
        self._reuse_copies = False        # the loop may change parameters between steps,
        self._trust_versions = False      # even through .data, which counts no version
        self._batches: dict[int, tuple[Any, Any]] = {}
        self._keep = max(1, keep)
        self._observed: dict[str, Any] = {}
        self._driving = False
        self._groups = None

    # -- hooks -----------------------------------------------------------------------------------

    def _install_hooks(self) -> None:
        model = self.model
        for i, (_, module) in enumerate(self._rows):
            self._hooks.append(module.register_forward_hook(self._hook(i)))
        self._hooks.append(model.register_forward_pre_hook(self._input_hook))

    def _input_hook(self, module, args):
        if self._capture and args:
            self.last_input = first_tensor(args)
            self._order = []

    def _hook(self, i: int):
        def record(module, args, output):
            if not self._capture:
                return
            out = first_tensor(output)
            self._slots[i] = out
            self._order.append(i)
            if self._watching and out is not None and out.requires_grad:
                out.register_hook(lambda g, i=i: self._deltas.__setitem__(i, g))
        return record

    def trial(self, x) -> list[bool]:
        """Which rows produce an output: the model once on two samples, no grad, eval mode."""
        try:
            _, called = self.probe(x[:2])
        except Exception:           # the real forward will say what is wrong
            called = [True] * len(self._rows)
        self._slots = [None] * len(self._rows)
        return called

    def layers_seen(self) -> list[bool]:
        """Which rows produced an output in the loop's latest forward."""
        return [o is not None for o in self._slots]

    @property
    def watching(self) -> bool:
        return self._watching

    def has_grads(self) -> bool:
        """Whether the loop has made gradients (called backward) since they were last cleared."""
        return any(p.grad is not None for _, p in self._train)

    def loop_state(self) -> tuple:
        """What the loop holds between its backward() and step(): parameters, optimizer
        state, the gradients and the phases observed; `put_back` restores it exactly."""
        return self.capture(), [(p, p.grad) for _, p in self._train], dict(self._observed)

    def put_back(self, held: tuple) -> None:
        live, grads, observed = held
        self.restore(live)
        for p, g in grads:
            p.grad = g
        self._observed.update(observed)

    # -- data ------------------------------------------------------------------------------------

    def add_batch(self, step: int, x, y) -> None:
        self._batches[step] = (x, y)
        self.x, self.y = x, y
        self.n_samples = len(x)
        for old in [s for s in self._batches if s <= step - self._keep]:
            del self._batches[old]

    def batch(self, indices) -> tuple[Any, Any]:
        """The batch of the iteration at hand; past the loop's latest, the latest (for views
        that only look: running forward there is refused)."""
        step = self._updates
        if step in self._batches:
            return self._batches[step]
        if not self._batches:
            raise GdstepError("attach mode: no batch has been seen yet")
        latest = max(self._batches)
        if step > latest:
            return self._batches[latest]
        raise GdstepError(f"attach mode keeps the batches of the last {self._keep} iterations; "
                          f"iteration {step + 1} is older, so it cannot be recomputed")

    def evaluation_data(self) -> tuple[Any, Any]:
        """The latest batch: the loop's data set is not ours to see."""
        if self.x is None:
            raise GdstepError("attach mode: no batch has been seen yet")
        if self.y is None:
            raise GdstepError("attach mode: watch(loss) was given no targets (pass watch(loss, y))")
        return self.x, self.y

    def sync_config(self) -> None:
        """Follow the loop's own changes of hyperparameters (an lr scheduler)."""
        groups = [group_hyperparameters(g) for g in self.torch_optimizer.param_groups]
        if groups != self._groups:
            self._groups = groups
            self.optimizer = config_of(self.torch_optimizer)

    # -- observing the loop's own phases (watch mode) --------------------------------------------

    def observe_iteration(self, loss) -> None:
        """Queue the forward, loss and backward the loop has just done."""
        torch = self._torch
        outs = list(self._slots)
        outputs = tuple(None if o is None else o.detach() for o in outs)
        deltas = tuple(self._deltas) if len(self._deltas) == len(outs) else (None,) * len(outs)
        grads = {name: p.grad.detach().clone() for name, p in self._train if p.grad is not None}
        value = loss.detach().reshape(()).item() if isinstance(loss, torch.Tensor) else float(loss)
        self._observed = {"forward": outputs, "loss": (None, value), "backward": (deltas[-1] if deltas else None, deltas, grads)}

    def start_watching(self) -> None:
        self._watching = True
        self._deltas = [None] * len(self._rows)

    def new_iteration(self) -> None:
        self._slots = [None] * len(self._rows)
        self._deltas = [None] * len(self._rows)

    def observe_before_step(self) -> None:
        names = [name for name, p in self._train if p.grad is not None]
        self._observed["before"] = (names, self._param_copies(names), self._state_copies())

    def observe_after_step(self) -> bool:
        before = self._observed.pop("before", None)
        if before is None:
            return False
        names, old, state_before = before
        new, after = self._param_copies(names), self._state_copies()
        self._observed["update"] = (names, old, new, state_before, after)
        # the checkpoint the Session takes right after this update is these copies
        self._fresh = (new, after) if len(names) == len(self._named) else None
        return True

    def forward(self, x):
        observed = self._observed.pop("forward", None)
        if observed is not None:
            return observed
        if self._batches and self._updates > max(self._batches):
            raise GdstepError("attach mode: the next batch comes from your training loop; "
                              "quit the debugger (q) to let the loop go on")
        return super().forward(x)

    def loss(self, outputs, y):
        observed = self._observed.pop("loss", None)
        if observed is not None:
            return observed
        if y is None:
            raise GdstepError("watch(loss) was given no targets, so the loss cannot be recomputed: "
                              "pass dbg.watch(loss, y)")
        return super().loss(outputs, y)

    def backward(self, x, outputs, y):
        observed = self._observed.pop("backward", None)
        return observed if observed is not None else super().backward(x, outputs, y)

    def update(self, grads: Mapping[str, Any]) -> dict[str, ParamUpdate]:
        observed = self._observed.pop("update", None)
        if observed is not None:
            names, old, new, before, after = observed
            self._updates += 1
            return {n: ParamUpdate(n, old[n], grads.get(n), new[n], before[n], after[n]) for n in names if n in grads}
        self._driving = True
        try:
            return super().update(grads)
        finally:
            self._driving = False

    def backward_lean(self, x, outputs, y) -> dict[str, Any]:
        observed = self._observed.pop("backward", None)
        return observed[2] if observed is not None else super().backward_lean(x, outputs, y)

    def update_lean(self, grads: Mapping[str, Any], check: bool = True, defer: bool = False):
        self._driving = True
        try:
            return super().update_lean(grads, check, defer)
        finally:
            self._driving = False

    @property
    def keep(self) -> int:
        """Iterations whose batches are kept: a run checkpoints at least this often."""
        return self._keep

    def capture(self):
        """A checkpoint; copies made by the loop's observed step serve once, right after it."""
        checkpoint = super().capture()
        self._fresh = None
        return checkpoint

    @property
    def driving(self) -> bool:
        return self._driving

    def restore(self, checkpoint) -> None:
        self._observed.clear()
        super().restore(checkpoint)
