"""Objects alive when training starts are kept out of the collector's walks, and handed back afterwards."""
from __future__ import annotations

import gc
import weakref

from audiotrain.train.gc_freeze import long_lived_objects_frozen


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_freezes_what_exists_and_collects_it_again_afterwards():
    before = Node()
    ref = weakref.ref(before)
    garbage = Node()
    garbage_ref = weakref.ref(garbage)
    del garbage  # unreachable cycle present at the start: collected first, never frozen
    with long_lived_objects_frozen():
        assert garbage_ref() is None
        assert gc.get_freeze_count() > 0
        del before
        gc.collect()
        assert ref() is not None  # frozen: a full collection does not even look at it
        inside = Node()
        inside_ref = weakref.ref(inside)
        del inside
        gc.collect()
        assert inside_ref() is None  # what the loop creates is collected as usual
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert ref() is None  # handed back: collected after training
