"""What the loop changed itself between gdstep's calls: parameters and optimizer state in
place (weight clipping, pruning, a reset of Adam's moments: their version counters moved),
kept as the loop's edit so checkpoints and recomputations hold them; hyperparameters (an lr
scheduler's step, a param_groups edit), logged as settings so a rewind replays them. A
mixin of `Debugger`."""

from __future__ import annotations

from operator import is_


class LoopEdits:
    def _check_loop_edits(self) -> tuple | None:
        """Parameters the loop changed in place since gdstep last ran (weight clipping,
        pruning: their version counters moved) are kept as the loop left them: checkpoints
        and recomputations hold them from this iteration on. Returns the versions where
        they were compared and nothing moved (they are the versions now), else None."""
        s, versions = self.session, self._versions
        if s is None or versions is None or self.ranks is not None or s.position != 4 * self._loop_step:
            return None
        changed = self.backend.changed_params(versions)
        if changed:
            s.keep_loop_edit(changed, horizon=self.backend.kept_batches + 2)
            return None
        return versions

    def _note_versions(self) -> None:
        """Where the parameters stand as gdstep leaves them to the loop."""
        self._versions = self.backend.param_versions()

    def _sync_groups(self) -> None:
        """The loop's own changes of hyperparameters (an lr scheduler's step, a param_groups
        edit) take effect at this iteration: logged as settings, so a rewind replays them."""
        s, b = self.session, self.backend
        groups = b.torch_optimizer.param_groups
        raw = [x for g in groups for item in ((g, None), *g.items()) for x in item]     # each group, its keys and values
        kept = self._groups_raw       # the same objects as last time, all immutable: nothing changed
        if kept is not None and len(kept) == len(raw) and all(map(is_, raw, kept)):
            return
        self._groups_raw = raw if all(_immutable(v) for g in groups for k, v in g.items() if k != "params") else None
        live = b.loop_groups()
        seen = getattr(self, "_groups", None)
        self._groups = live
        if seen is None or live == seen:
            return
        if len(live) != len(seen):         # add_param_group: the checkpoints hold the old groups
            s.log("info", "the loop added a param group: rewinds before this iteration restore the groups as they were")
            return
        changes = {i: {k: v for k, v in g.items() if seen[i].get(k) != v} for i, g in enumerate(live) if g != seen[i]}
        s._settings.record(s.step_count, {"groups": changes})


def _immutable(value) -> bool:
    """A hyperparameter no in-place change can reach (a tensor lr can change unseen)."""
    return value is None or type(value) in (float, int, bool, str) or (type(value) is tuple and all(map(_immutable, value)))
