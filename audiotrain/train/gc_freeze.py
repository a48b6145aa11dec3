"""Python's cyclic garbage collector while a job trains.

A full collection walks every object the process holds, and the imported libraries (torch, Lightning,
transformers, MLflow, ...) are millions of them: each full collection stalls the training loop for about
0.3-0.5 s on this kind of machine. What exists when training starts (the libraries, the model, the dataset)
lives for the whole run, so it is frozen out of the collector's walks while ``fit`` runs and handed back
afterwards: a sweep that runs several jobs in one process still collects each job's leftovers.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    gc.collect()  # garbage that exists now is freed first, never frozen
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
