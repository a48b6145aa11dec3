"""Resumable shuffling sampler: a seeded permutation per epoch plus a position, saved in checkpoints.

The training module counts consumed examples (``advance``) rather than trusting the sampler's own
iteration position, which DataLoader workers run ahead of. ``load_state_dict`` makes the next
``__iter__`` continue the same epoch's permutation from the saved position, so a resumed run sees
exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True):
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = -1          # epoch of the current/last iteration
        self.consumed = 0        # examples of that epoch already trained on
        self._resume: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.num_items

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_items))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_items, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        """Continue the epoch in progress until it is fully consumed; only then start the next one.

        (A checkpoint taken exactly at an epoch's end, then resumed, must not skip the next epoch's start:
        Lightning may create a fresh iterator for a "restarted" epoch.)
        """
        if self._resume is not None:
            self.epoch, start = self._resume
            self._resume = None
        elif self.epoch < 0 or self.consumed >= self.num_items:
            self.epoch += 1
            start = 0
        else:
            start = self.consumed
        self.consumed = start
        yield from self.order(self.epoch)[start:]

    def advance(self, n: int) -> None:
        self.consumed += int(n)

    def state_dict(self) -> dict:
        return {"kind": "examples", "epoch": self.epoch, "consumed": self.consumed, "seed": self.seed,
                "num_items": self.num_items}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind", "examples") != "examples":
            raise ValueError("The checkpoint's sampler counted batches (dataset.order was set); resume with the same "
                             "dataset.order settings, or start a new run.")
        if int(state.get("num_items", self.num_items)) != self.num_items:
            raise ValueError(
                f"The checkpoint was trained on {state['num_items']} examples but the data now has "
                f"{self.num_items}: resume with the same data, or start a new run."
            )
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        if epoch < 0:
            return
        if consumed >= self.num_items:
            epoch, consumed = epoch + 1, 0
        self._resume = (epoch, consumed)
