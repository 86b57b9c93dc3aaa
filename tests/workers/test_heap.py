"""A worker freezes its heap after a slow full collection, and unfreezes it once the
loops alive then have turned over (what died meanwhile is collected again), and
freezes it again after that collection."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from workers.heap import TURNOVER, UNFREEZE_AFTER, Heap


@pytest.fixture
def heap() -> Iterator[Heap]:
    gc.unfreeze()  # a worker that ran in this process may have frozen it
    heap = Heap(budget=0.0)  # every collection counts as slow
    heap.watch()
    yield heap
    heap.close()
    gc.unfreeze()


def test_a_slow_full_collection_freezes_the_heap_until_loops_turn_over(heap: Heap) -> None:
    gc.collect(1)
    heap.tick(loops=8000)
    assert gc.get_freeze_count() == 0  # a young collection, however slow, scans little

    gc.collect()
    heap.tick(loops=8000)
    assert gc.get_freeze_count() > 0

    for _ in range(TURNOVER * 8000 - 1):
        heap.loop_ended()
    assert gc.get_freeze_count() > 0
    heap.loop_ended()
    assert gc.get_freeze_count() == 0


def test_a_small_frozen_heap_waits_for_the_floor_of_ended_loops(heap: Heap) -> None:
    gc.collect()
    heap.tick(loops=10)
    for _ in range(UNFREEZE_AFTER - 1):
        heap.loop_ended()
    assert gc.get_freeze_count() > 0
    heap.loop_ended()
    assert gc.get_freeze_count() == 0


class Node:
    me: Node


def test_an_unfrozen_heap_is_frozen_again_after_the_collection_that_reclaims_it(
    heap: Heap,
) -> None:
    node = Node()
    node.me = node  # a cycle: only the garbage collector frees it
    freed = weakref.ref(node)
    gc.collect()
    heap.tick(loops=10)
    heap.budget = 3600.0  # from now on no collection is slow
    del node
    gc.collect()
    assert freed() is not None  # frozen: not scanned

    for _ in range(UNFREEZE_AFTER):
        heap.loop_ended()
    heap.tick(loops=10)
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert freed() is None
    heap.tick(loops=10)
    assert gc.get_freeze_count() > 0
