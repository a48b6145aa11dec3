"""Which examples a run holds out for validation: ``val_data=PATH`` (its own files), or ``dataset.val_fraction``
of the training data, split by a hash of each example's group.

The group of a row is the value of its plugin's ``group_field`` (a speaker for VALL-E) where the data has one, else
the example itself (``split_group``): a speaker's utterances are all held out or all trained on, so validation
never hears a training voice. Groups are
ranked by a SHA-256 of their name (no seed, no row order), and the first ``round(fraction * groups)`` (at least
one, never all) are held out: the same data gives the same split in every run, sweep job, resume and
``mode=eval``.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig

from audiotrain.data.prepare import DataError

SALT = "audiotrain-validation"


def split_group(row: Mapping[str, Any], group_field: str | None) -> str:
    """The unit a split keeps together: the row's group (``group_field``, e.g. its speaker) when it has one, else
    the example's key."""
    group = row.get(group_field) if group_field else None
    return f"group:{group}" if group not in (None, "") else f"key:{row['key']}"


def _rank(group: str) -> str:
    return hashlib.sha256(f"{SALT}\x00{group}".encode("utf-8", "surrogatepass")).hexdigest()


def split_rows(rows: Sequence[Mapping[str, Any]], fraction: float, source: str = "the data",
               group_field: str | None = None) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """``(train_rows, val_rows)``: every row of a held-out group goes to validation, the rest to training (each
    list in the rows' own order)."""
    groups = sorted({split_group(r, group_field) for r in rows}, key=lambda g: (_rank(g), g))
    unit = f"{group_field}s" if any(g.startswith("group:") for g in groups) else "examples"
    if len(groups) < 2:
        raise DataError(f"dataset.val_fraction={fraction:g} needs at least 2 {unit} to hold some out, and {source} "
                        f"has {len(groups)}: add data, or give held-out files with val_data=PATH.")
    n_val = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    held = set(groups[:n_val])
    train = [r for r in rows if split_group(r, group_field) not in held]
    val = [r for r in rows if split_group(r, group_field) in held]
    return train, val


def has_validation(cfg: DictConfig) -> bool:
    return bool(cfg.get("val_data")) or bool(cfg.dataset.get("val_fraction"))


def default_metric(cfg: DictConfig) -> str:
    """What a sweep ranks its jobs by: ``sweep_metric`` when set, else the held-out ``val/loss`` when the run has
    validation data, else the fixed-noise loss on training examples."""
    if cfg.get("sweep_metric"):
        return str(cfg.sweep_metric)
    return "val/loss" if has_validation(cfg) else "train_fixed/loss"


def config_problems(cfg: DictConfig) -> list[str]:
    """The validation settings' problems, one sentence each (part of the config check before anything is built)."""
    from pathlib import Path

    p: list[str] = []
    frac = cfg.dataset.get("val_fraction")
    if frac is not None and (isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 <= frac < 1):
        p.append(f"dataset.val_fraction={frac} must be a number in [0, 1), e.g. 0.1 (or null for no split).")
    val = cfg.get("val_data")
    if val and not Path(str(val)).expanduser().exists():
        p.append(f"val_data={val} does not exist: give the path of your held-out data (any format data= takes).")
    if val and frac:
        p.append(f"val_data={val} and dataset.val_fraction={frac} both choose the validation set: give one of them.")
    every = cfg.trainer.get("val_check_interval")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 0):
        p.append(f"trainer.val_check_interval={every} must be a whole number of optimizer steps (0: only at the "
                 "start and the end; null: every trainer.eval_every_n_steps).")
    draws = cfg.trainer.get("val_noise_draws")
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
        p.append(f"trainer.val_noise_draws={draws} must be a positive integer, e.g. 2.")
    return p
