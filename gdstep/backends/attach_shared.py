"""Parameters in shared memory (torch.multiprocessing's Hogwild training, as in
pytorch/examples' mnist_hogwild): other processes write them while this one trains, and no
write of theirs moves a version counter here, so gdstep sees none of them. A hold (a break
in watch mode, records read between the loop's calls) puts back only the shared tensors
gdstep itself moved, so a break that only looks leaves the other processes' updates in
place; a rewind writes over what they wrote meanwhile, which attach says once, and an
iteration recomputed across their writes names them among the causes. Mixed into
AttachBackend."""

from __future__ import annotations


class SharedParams:
    _shared_names: list | None = None

    def shared_names(self) -> list[str]:
        """The parameters in the CPU's shared memory (a CUDA tensor counts as shared always:
        not those), found once."""
        if self._shared_names is None:
            self._shared_names = [name for name, p in self._named if p.device.type == "cpu" and p.is_shared()]
        return self._shared_names

    def shared_note(self) -> str | None:
        """What attach says of parameters in shared memory, or None."""
        names = self.shared_names()
        if not names:
            return None
        return (f"{len(names)} of the model's parameters are in shared memory (torch.multiprocessing, as Hogwild "
                "training shares them): gdstep does not see other processes' writes to them; a break that only "
                "looks leaves those in place, but a rewind writes over what they wrote meanwhile, and an iteration "
                "recomputed across their writes comes out otherwise (an inexact event)")

    def shared_hint(self) -> str:
        """The first cause a recomputation that differs names, where parameters are shared."""
        return "another process wrote the parameters in shared memory (Hogwild), or " if self.shared_names() else ""

    def put_back_moved(self, held: tuple, versions: list) -> None:
        """`restore(held)`, except the shared tensors at the version the hold found them at:
        gdstep did not write them, another process may have. (Every way gdstep moves a
        parameter during a hold starts from a restore, whose `copy_` moves its version, even
        where what follows does not: a fused optimizer step on the CPU.)"""
        if self.shared_names():
            self._keep_as_is = frozenset(id(t) for t, v in versions
                                         if t._version == v and t.device.type == "cpu" and t.is_shared())
        try:
            self.restore(held, check=False)
        finally:
            self._keep_as_is = frozenset()
