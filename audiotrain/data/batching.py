"""Duration-bucketed, group-aware batch sampler: group/duration orders, batches capped in padded seconds, exact resume.

``BucketBatchSampler`` yields lists of dataset indices (give it to ``DataLoader(batch_sampler=...)``).
Each example belongs to a group (a speaker, a singer, an album: whatever the dataset groups by; one group
for all when it has none). Each epoch the sampler builds one *global* plan of batches from the durations
and groups, seeded by ``(seed, epoch)``, so every DDP rank computes the same plan and takes every
``world``-th batch of it.

Orders (``shuffle=True``, the default, randomises within the rules each epoch; ``shuffle=False``
keeps dataset order and first-appearance group order, a reproducible reference form):

* ``interleaved`` - round-robin across groups: the first item of every group, then the second...
  (each group's items in a seeded per-epoch order; groups in a seeded per-epoch order).
* ``duration`` - buckets of ``round(duration)`` seconds (Python rounding, half to even); each bucket
  sorted ascending, then interleaved by group inside the bucket; buckets concatenated short -> long.
* ``speaker`` - every batch holds a single group: each group's items are packed into batches and
  groups then take turns, one batch each (group-balanced), in a seeded per-epoch group order.
  (The order keeps the name VALL-E's loader gives it.)
* ``random`` - a seeded permutation (the same one ``ResumableSampler.order(epoch)`` draws).

Packing: items are added to the current batch in plan order; the batch is flushed when it holds
``batch_size`` items, or when adding the next item would make its cost - longest duration x count,
which is what padding makes the model compute - exceed ``max_batch_seconds``. An item longer than
the cap alone forms a batch of one (never dropped; counted in ``oversized``). ``drop_last`` drops the
epoch's final batch when the end of the data cut it short (fewer than ``batch_size`` items and not an
oversized singleton). ``shuffle_batches`` then shuffles whole batches (seeded).

Resume: the training module calls ``advance(len(batch))`` once per batch it trains on (see the
``Resumable`` protocol). This sampler counts *batches* (``ResumableSampler`` counts *examples*; the
call is the same). ``state_dict()`` holds the epoch, the batches consumed, the world size, the
settings and a fingerprint of the durations and groups; after ``load_state_dict()`` the next
``__iter__`` yields exactly the batch an uninterrupted run would have produced next. States written
under the sampler's earlier name (kind ``speech_batch``) load unchanged: only the name changed.

Epochs: the sampler is a cursor over the endless sequence epoch 0, epoch 1, ... of batches, moved
only by ``advance``. ``__iter__`` runs from the cursor to the end of the cursor's epoch (the next
epoch once the current one is fully consumed). So an iterator created and dropped before training
(Lightning makes one in ``setup_data``, and with ``reload_dataloaders_every_n_epochs`` another at the
epoch start), prefetched batches that were never trained on, or an epoch that Lightning cuts short
(its cached ``len`` is stale, or its own restart bookkeeping ends a resumed epoch early) never skip
or repeat a batch: the batch stream is the same however it is split into Lightning epochs. Plain
loops that never call ``advance`` replay the same epoch; they choose one with ``set_epoch``.
``len()`` is this rank's batch count for the cursor's epoch; counts can differ by a few batches
between epochs when ``max_batch_seconds`` is set, so with Lightning set
``reload_dataloaders_every_n_epochs=1`` to have it re-read ``len()`` at every epoch start.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from itertools import zip_longest
from typing import Iterator, Protocol, Sequence, runtime_checkable

import torch
from torch.utils.data import Sampler

ORDERS = ("interleaved", "duration", "speaker", "random")
STATE_KIND = "bucket_batch"
STATE_KINDS = (STATE_KIND, "speech_batch")  # "speech_batch": the same state, written under the earlier name


@runtime_checkable
class Resumable(Protocol):
    """What ``TrainModule`` needs from a sampler to resume mid-epoch exactly.

    ``advance(batch_len)`` is called once per batch the training step consumed, with the number of
    examples in it; each sampler counts in its own unit (examples or batches).
    """

    def advance(self, batch_len: int) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def fingerprint(durations: Sequence[float], groups: Sequence[str]) -> str:
    """A short hash of the durations (to 0.1 ms) and groups: changes when the data does."""
    h = hashlib.sha256()
    h.update(",".join(str(round(float(d) * 10_000)) for d in durations).encode())
    h.update(b"\x00")
    h.update("\x1f".join(groups).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


def padding_waste(batches: Sequence[Sequence[int]], lengths: Sequence[float]) -> float:
    """Positions a padded batch computes ÷ the real ones: ``sum(max(len) × count) / sum(len)`` over the batches
    (1.0 = no padding). ``lengths`` in any unit (seconds, frames, tokens), indexed by the batches' items."""
    real = sum(float(lengths[i]) for b in batches for i in b)
    if real <= 0:
        raise ValueError("padding_waste needs batches with some length in them")
    return sum(max(float(lengths[i]) for i in b) * len(b) for b in batches if b) / real


def _round_robin(lists: Sequence[Sequence]) -> list:
    """``[[a1, a2], [b1]] -> [a1, b1, a2]`` (zip_longest, holes skipped)."""
    hole = object()
    return [x for row in zip_longest(*lists, fillvalue=hole) for x in row if x is not hole]


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of indices over a dataset of durations and groups; see the module docstring for the exact rules."""

    def __init__(self, durations: Sequence[float], groups: Sequence[str], order: str = "interleaved",
                 max_batch_seconds: float | None = None, batch_size: int = 1, seed: int = 0,
                 shuffle_batches: bool = False, drop_last: bool = False, *, shuffle: bool = True,
                 num_replicas: int | None = None, rank: int | None = None):
        if len(durations) != len(groups):
            raise ValueError(f"Got {len(durations)} durations but {len(groups)} groups: give one of each per item.")
        if order not in ORDERS:
            raise ValueError(f"order={order!r} is unknown: use one of {', '.join(ORDERS)}.")
        if max_batch_seconds is not None and not max_batch_seconds > 0:
            raise ValueError(f"max_batch_seconds={max_batch_seconds} must be positive (or None for no cap).")
        if batch_size < 0 or (batch_size == 0 and max_batch_seconds is None):
            raise ValueError(f"batch_size={batch_size} must be at least 1 "
                             "(0 = no count limit, only with max_batch_seconds).")
        if (num_replicas is None) != (rank is None):
            raise ValueError("Give both num_replicas and rank, or neither (then torch.distributed decides).")
        if num_replicas is not None and not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas}).")
        self.durations = [float(d) for d in durations]
        bad = [i for i, d in enumerate(self.durations) if not (math.isfinite(d) and d >= 0)]
        if bad:
            raise ValueError(f"Item {bad[0]} has duration {self.durations[bad[0]]}: durations must be finite and >= 0.")
        self.group_of = [str(g) for g in groups]
        self.order = order
        self.max_batch_seconds = float(max_batch_seconds) if max_batch_seconds is not None else None
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle_batches = bool(shuffle_batches)
        self.drop_last = bool(drop_last)
        self.shuffle = bool(shuffle)
        self._num_replicas, self._rank = num_replicas, rank
        self.members: dict[str, list[int]] = {}
        for i, g in enumerate(self.group_of):
            self.members.setdefault(g, []).append(i)
        self.fingerprint = fingerprint(self.durations, self.group_of)
        cap = self.max_batch_seconds
        self.oversized = sum(d > cap for d in self.durations) if cap is not None else 0
        self.epoch = -1          # the cursor: epoch in progress (-1 before the first)...
        self.consumed = 0        # ...and how many of its batches (this rank) were trained on
        self._cache: dict[tuple, list[list[int]]] = {}

    # ---- world ----------------------------------------------------------------------------
    def world(self) -> tuple[int, int]:
        """``(num_replicas, rank)``: as given, else from torch.distributed when initialised, else (1, 0)."""
        if self._num_replicas is not None:
            return self._num_replicas, self._rank
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    # ---- the plan -------------------------------------------------------------------------
    def batch_cost(self, batch: Sequence[int]) -> float:
        """Padded seconds of a batch: longest duration x count."""
        return max((self.durations[i] for i in batch), default=0.0) * len(batch)

    def _perm(self, items: list, g: torch.Generator) -> list:
        if not self.shuffle or len(items) < 2:
            return list(items)
        return [items[j] for j in torch.randperm(len(items), generator=g).tolist()]

    def _pack(self, seq: Sequence[int]) -> list[list[int]]:
        cap, bs, dur = self.max_batch_seconds, self.batch_size, self.durations
        batches: list[list[int]] = []
        cur: list[int] = []
        longest = 0.0
        for i in seq:
            d = dur[i]
            if cap is not None and d > cap:
                if cur:
                    batches.append(cur)
                    cur, longest = [], 0.0
                batches.append([i])
                continue
            grown = max(longest, d)
            if cur and ((bs and len(cur) >= bs) or (cap is not None and grown * (len(cur) + 1) > cap)):
                batches.append(cur)
                cur, grown = [], d
            cur.append(i)
            longest = grown
        if cur:
            batches.append(cur)
        return batches

    def _is_short(self, batch: list[int]) -> bool:
        oversized = self.max_batch_seconds is not None and len(batch) == 1 \
            and self.durations[batch[0]] > self.max_batch_seconds
        return not oversized and (self.batch_size == 0 or len(batch) < self.batch_size)

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The whole epoch's batches, before the split across ranks (identical on every rank)."""
        key = ("global", epoch)
        if key in self._cache:
            return self._cache[key]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n = len(self.durations)
        if self.order == "random":
            batches = self._pack(torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n)))
        else:
            spk = self._perm(list(self.members), g)
            per = {s: self._perm(self.members[s], g) for s in spk}
            if self.order == "speaker":
                batches = _round_robin([self._pack(per[s]) for s in spk])
            elif self.order == "interleaved":
                batches = self._pack(_round_robin([per[s] for s in spk]))
            else:  # duration
                rank_of = {i: r for r, i in enumerate(_round_robin([per[s] for s in spk]))}
                buckets: dict[int, list[int]] = {}
                for i in range(n):
                    buckets.setdefault(round(self.durations[i]), []).append(i)
                flat: list[int] = []
                for b in sorted(buckets):
                    members = sorted(buckets[b], key=lambda i: (self.durations[i], rank_of[i]))
                    flat += _round_robin([[i for i in members if self.group_of[i] == s] for s in spk])
                batches = self._pack(flat)
        if self.drop_last and batches and self._is_short(batches[-1]):
            batches = batches[:-1]
        if self.shuffle_batches and len(batches) > 1:
            batches = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
        self._remember(key, batches)
        return batches

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch``: every ``world``-th batch of the global plan, from ``rank``.

        The plan is first made a multiple of the world size so every rank runs the same number of
        steps (DDP would hang otherwise): with ``drop_last`` the tail is dropped, else it is padded by
        repeating the plan's first batches.
        """
        world, rank = self.world()
        key = ("rank", epoch, world, rank)
        if key in self._cache:
            return self._cache[key]
        plan = self.global_batches(epoch)
        if world > 1 and plan:
            if self.drop_last:
                plan = plan[: len(plan) // world * world]
            else:
                target = math.ceil(len(plan) / world) * world
                plan = (plan * math.ceil(target / len(plan)))[:target]
        mine = plan[rank::world]
        self._remember(key, mine)
        return mine

    def _remember(self, key: tuple, value: list[list[int]]) -> None:
        if len(self._cache) >= 8:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = value

    # ---- iteration ------------------------------------------------------------------------
    def _upcoming(self) -> int:
        """The cursor's epoch: the one in progress, or the next once it is fully consumed."""
        if self.epoch < 0:
            return 0
        if self.consumed >= len(self.epoch_batches(self.epoch)):
            return self.epoch + 1
        return self.epoch

    def __len__(self) -> int:
        return len(self.epoch_batches(self._upcoming()))

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self._upcoming()
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0
        start = self.consumed
        yield from (list(b) for b in self.epoch_batches(epoch)[start:])

    def set_epoch(self, epoch: int) -> None:
        """Move the cursor to the first batch of ``epoch``."""
        self.epoch, self.consumed = int(epoch), 0

    def advance(self, batch_len: int = 1) -> None:
        """One batch was trained on: move the cursor (``batch_len``, its example count, is unused here)."""
        if self.epoch < 0 or self.consumed >= len(self.epoch_batches(self.epoch)):
            self.epoch, self.consumed = self._upcoming(), 0
        self.consumed += 1

    # ---- checkpoints ----------------------------------------------------------------------
    def settings(self) -> dict:
        return {"order": self.order, "max_batch_seconds": self.max_batch_seconds, "batch_size": self.batch_size,
                "seed": self.seed, "shuffle_batches": self.shuffle_batches, "drop_last": self.drop_last,
                "shuffle": self.shuffle}

    def state_dict(self) -> dict:
        return {"kind": STATE_KIND, "epoch": self.epoch, "consumed": self.consumed, "num_replicas": self.world()[0],
                "fingerprint": self.fingerprint, "num_items": len(self.durations), "settings": self.settings()}

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` was taken; refuse other data or other batching settings."""
        if state.get("kind") not in STATE_KINDS:
            raise ValueError("The checkpoint's sampler state is not a BucketBatchSampler's: resume with the "
                             "same sampler settings, or start a new run.")
        if state["fingerprint"] != self.fingerprint:
            raise ValueError(
                f"The checkpoint was trained on different data ({state.get('num_items')} items, fingerprint "
                f"{state['fingerprint']}; now {len(self.durations)} items, {self.fingerprint}): resume with the "
                "same data, or start a new run.")
        changed = {k: (v, self.settings()[k]) for k, v in state["settings"].items() if self.settings().get(k) != v}
        if changed:
            what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ValueError(f"The batching settings changed since the checkpoint ({what}): "
                             "resume with the same settings, or start a new run.")
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        if epoch < 0:
            self.epoch, self.consumed = -1, 0
            return
        world = self.world()[0]
        old_world = int(state.get("num_replicas", world))
        if old_world != world:
            consumed = consumed * old_world // world
            warnings.warn(f"The checkpoint was taken with {old_world} ranks and this run has {world}: "
                          "resuming at the nearest batch, so a few batches may repeat.", stacklevel=2)
        self.epoch, self.consumed = epoch, min(consumed, len(self.epoch_batches(epoch)))
