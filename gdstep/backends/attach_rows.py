"""How attach mode runs the model's rows: hooked, so that the loop's own forward is
recorded, or not where nothing needs them — watch mode's forward of an nn.Sequential the
bounds prove finite before it runs (gdstep.backends.attach_watch), and gdstep's own lean
forward of one, which calls its rows one by one as the torch backend runs a scenario's
model. A module with a hook runs torch's slower call path, and each hook a Python call:
about 2 % of a CNN's iteration. Mixed into AttachBackend."""

from __future__ import annotations

from gdstep.backends.detachable import detachable


class AttachRows:
    _direct = False               # gdstep's own forward runs the rows itself: no hook records

    def hook_rows(self, on: bool) -> None:
        """Hook every row, or none but the last: an nn.Sequential whose forward the bounds
        prove finite before it runs needs no look at its rows (WatchObserver), and a module
        with a hook runs torch's slower call path."""
        if on == self._rows_hooked:
            return
        self._rows_hooked = on
        for i, handle in list(self._row_hooks.items()):
            if on:
                new = self._rows[i][1].register_forward_hook(detachable(self._hook(i), self))
                self._hooks[self._hooks.index(handle)] = self._row_hooks[i] = new
            else:
                handle.remove()

    def _run_model(self, x):
        """gdstep's own lean forward of an nn.Sequential with no hook but gdstep's: its rows
        called one by one, as the torch backend runs a scenario's model (no hook fires, and
        torch takes its faster call path); any other forward through the model's call and
        the hooks."""
        calls = self._direct_calls(x) if self._own and self._lean_rows is not None else None
        if calls is None:
            return super()._run_model(x)
        x = self._inputs(x, None)[0]
        self.hook_rows(False)
        self._direct = True
        try:
            outs, out = self._run_rows(x, calls)
        finally:
            self._direct = False
        self._order = list(range(len(self._rows)))
        self._keep_output(out)
        return outs, out

    def _direct_calls(self, x) -> list | None:
        """Each row's `forward`, where the model is an exact nn.Sequential called on a tensor
        alone and nothing but gdstep hooks it or its rows; else None."""
        torch, model = self._torch, self.model
        kept = self._kept(x)
        if (type(model) is not torch.nn.Sequential or "forward" in model.__dict__ or not isinstance(x, torch.Tensor)
                or (kept is not None and (kept.args or kept.kwargs)) or model._forward_hooks):
            return None
        hooks = torch.nn.modules.module
        if (hooks._global_forward_hooks or hooks._global_forward_pre_hooks or hooks._global_backward_hooks
                or hooks._global_backward_pre_hooks):
            return None
        own = {h.id for h in self._hooks}
        if not own.issuperset(model._forward_pre_hooks):
            return None
        calls = []
        for _, m in self._rows:
            if (not own.issuperset(m._forward_hooks) or m._forward_pre_hooks or m._backward_hooks
                    or m._backward_pre_hooks or getattr(m, "_compiled_call_impl", None) is not None):
                return None
            calls.append(m.forward)
        return calls
