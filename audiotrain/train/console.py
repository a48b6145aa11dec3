"""The terminal of a job: one rich console (stderr) for the report and results, the file progress bar, and the
library loggers kept quiet. Every part of a job prints through here (``console.quiet`` silences all of it:
the other DDP ranks, benchmarks)."""
from __future__ import annotations

import logging
import warnings
from typing import Iterable

from rich.console import Console

console = Console(stderr=True, soft_wrap=True)


def progress(rows: Iterable, desc: str):
    """A bar over ``rows`` (files being prepared); the rows as they are while the console is quiet."""
    if console.quiet:
        return rows
    from tqdm.auto import tqdm

    return tqdm(rows, desc=desc, unit="file", dynamic_ncols=True)


def quiet_libraries() -> None:
    """Keep the terminal for what matters: our report, the progress bar, the result."""
    for name in ("lightning.pytorch", "lightning.fabric", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # bitsandbytes says it lacks optional GPU-kernel packages on every import; nothing we use needs them
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    # frozen encoders kept inside a backbone stay in eval mode on purpose (no dropout in what is never trained)
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
