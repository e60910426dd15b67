"""A training DataLoader that a checkpoint can stop and resume in the middle of an epoch.

Lightning saves the ``state_dict()`` of a training loader that has one in every checkpoint and
hands it back to ``load_state_dict()`` on resume. :class:`ResumableDataLoader` records the
sampler's epoch and the batches it has handed out in that epoch; a resumed loader leaves out
the batches already done when it is next iterated in the same epoch. They are left out as
indices, before any worker reads an image. Under DDP the indices left out are the rank's own
(after Lightning's distributed sampler has sharded the epoch), and every rank has handed out as
many batches as rank 0, whose state the checkpoint holds.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from torch.utils.data import DataLoader

__all__ = ["ResumableDataLoader"]


class _SkipFirst:
    """A batch (or index) sampler without its first ``skip[0]`` items; the skip, a one-item
    list shared with the loader (no reference back to it, so that a loader and its worker
    processes are freed as soon as they are dropped), is read whenever an iterator is made, so
    persistent workers' iterators see it too."""

    def __init__(self, sampler, skip: list[int]) -> None:
        self.sampler = sampler
        self.skip = skip

    def __iter__(self):
        return islice(iter(self.sampler), self.skip[0], None)

    def __len__(self) -> int:
        return len(self.sampler)


class ResumableDataLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` with ``state_dict``/``load_state_dict``.

    State: ``{"epoch": the sampler's epoch (None if it has none), "batches": handed out in
    it}``. After :meth:`load_state_dict`, the next iteration in the same epoch starts after those
    batches; an iteration in another epoch (a checkpoint saved at an epoch's last batch) starts
    at the beginning. ``len()`` stays the whole epoch's, as the training loop counts it.
    The sampler's epoch is read when the first batch is drawn, after the loop's ``set_epoch``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch: int | None = None
        self._handed_out = 0
        self._resume: tuple[int | None, int] | None = None
        self._skip = [0]

    @property
    def _index_sampler(self):
        return _SkipFirst(super()._index_sampler, self._skip)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "batches": self._handed_out}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = (state_dict["epoch"], int(state_dict["batches"]))

    def __iter__(self):
        return self._batches()

    def _batches(self):
        epoch = getattr(self.sampler, "epoch", None)
        skip = 0
        if self._resume is not None:
            saved_epoch, done = self._resume
            self._resume = None
            if saved_epoch == epoch and done < len(self):
                skip = done
        self._epoch, self._handed_out, self._skip[0] = epoch, skip, skip
        batches = super().__iter__()
        self._skip[0] = 0
        for batch in batches:
            self._handed_out += 1
            yield batch
