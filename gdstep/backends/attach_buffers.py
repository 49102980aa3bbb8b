"""Buffers the loop replaces: `bn.running_var = torch.ones(…)`, or a state_dict of buffers
loaded with `assign=True`, puts a new tensor in the model where gdstep's list still held the
old one. Checkpoints, rewinds and the loop's state put back after a break would then write
the old tensor while gdstep's recomputations moved the model's new one (a BatchNorm's
statistics left off by the recomputed forwards, unsaid). torch calls a global hook at every
buffer's registration, an assignment's too: gdstep's puts the new tensor in its list and
counts the change, which `changed_params` then keeps as the loop's at the next iteration's
start. Mixed into AttachBackend."""

from __future__ import annotations

from gdstep.backends.detachable import detachable


class FollowedBuffers:
    def _follow_buffers(self) -> None:
        """Hook every buffer registration (torch's hook is global: other models' are ignored)."""
        import torch.nn as nn

        self._module_names = {id(m): name for name, m in self.model.named_modules()}
        self._hooks.append(nn.modules.module.register_module_buffer_registration_hook(detachable(self._buffer_hook)))

    def _buffer_hook(self, module, name: str, tensor) -> None:
        """A buffer of the model's registered or assigned anew (called before torch stores
        it): the list of buffers holds the new tensor in the old one's place, and the change
        counts as the loop's."""
        prefix = self._module_names.get(id(module))
        if prefix is None:
            return
        full = f"{prefix}.{name}" if prefix else name
        kept = [(n, b) for n, b in self._buffers if n != full]
        if tensor is not None:
            at = next((i for i, (n, _) in enumerate(self._buffers) if n == full), len(kept))
            kept.insert(at, (full, tensor))
        self._buffers = kept
        self._buffer_swaps += 1
