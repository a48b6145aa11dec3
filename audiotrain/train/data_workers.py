"""How many DataLoader worker processes a job starts: ``dataset.num_workers=auto`` (the default) takes what the
machine in front of the user has — one per CPU core this process may use, less one for the training loop itself,
shared among the training processes of this node, at most :data:`MOST` — and a number above that is kept but
explained once (torch's own two warnings about it are then not repeated)."""
from __future__ import annotations

import os
import warnings

#: more workers than this rarely feed a single training process faster; they cost memory and start-up time
MOST = 8
_explained: set[tuple[int, int]] = set()


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: taskset, SLURM's --cpus-per-task, cgroups cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def auto_workers(cores: int, processes: int = 1) -> int:
    """One worker per core each training process can spare: ``cores // processes - 1``, between 0 and MOST."""
    return max(0, min(MOST, cores // max(1, processes) - 1))


def data_workers(value, processes: int = 1, cores: int | None = None) -> tuple[int, str | None]:
    """``(workers, note)`` for ``dataset.num_workers``: ``auto``/null, or a number (kept; a note when it is more
    than the machine can spare). Anything else is a UserError naming the value."""
    from audiotrain.errors import UserError

    cores = usable_cores() if cores is None else cores
    fit = auto_workers(cores, processes)
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return fit, None
    try:
        n = int(value)
        if n != float(value) or n < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"dataset.num_workers={value!r} is not a number of processes: give 0 (load in the training "
                        f"process), a whole number, or auto ({fit} here).") from None
    note = None
    if n > fit:
        share = f", shared by {processes} training processes" if processes > 1 else ""
        note = (f"dataset.num_workers={n} starts more loader processes than the {cores} CPU core(s) here can spare "
                f"beside training{share} ({fit}): they will take turns on the cores; dataset.num_workers=auto "
                f"picks {fit}.")
        # torch says the same thing, twice per loader: once is enough
        warnings.filterwarnings("ignore", message=r"This DataLoader will create \d+ worker processes")
    return n, note


def explain_once(n: int, note: str | None, say) -> None:
    """Print ``note`` through ``say`` the first time this number of workers is explained in this process."""
    if note is None or (n, usable_cores()) in _explained:
        return
    _explained.add((n, usable_cores()))
    say(note)
