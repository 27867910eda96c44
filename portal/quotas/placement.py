"""Choosing GPUs: all on one node, matching the model, best fit.

Best fit picks the node with the fewest free GPUs that still has enough, so whole nodes stay
free for requests that need a whole node. Pure code on plain values: the database work
(locking, reading free devices) happens in the services.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class FreeGpu:
    """A device that may take new work right now."""

    id: int
    node_id: int
    node_name: str
    index: int
    model: str


class FreePool:
    """The free GPUs of the inventory, by node, shrinking as GPUs are taken.

    An admission pass asks it thousands of times, so it remembers the smallest request per
    model that did not fit: the pool only shrinks, so anything as large fails at once.
    """

    def __init__(self, gpus: Iterable[FreeGpu]):
        self._nodes: dict[int, list[FreeGpu]] = {}
        for gpu in sorted(gpus, key=lambda g: (g.node_name, g.index)):
            self._nodes.setdefault(gpu.node_id, []).append(gpu)
        self._smallest_miss: dict[str, int] = {}

    def pick(self, *, count: int, model: str = "") -> list[FreeGpu] | None:
        """`count` GPUs on one node, best fit, or None when no node has them free."""
        if count <= 0:
            return []
        if count >= self._smallest_miss.get(model, count + 1):
            return None
        best: list[FreeGpu] | None = None
        for gpus in self._nodes.values():
            matching = [g for g in gpus if g.model == model] if model else gpus
            if len(matching) >= count and (best is None or len(matching) < len(best)):
                best = matching
                if len(best) == count:
                    break  # an exact fit cannot be beaten
        if best is None:
            self._smallest_miss[model] = count
            return None
        return best[:count]

    def take(self, gpus: Iterable[FreeGpu]) -> None:
        for gpu in gpus:
            self._nodes[gpu.node_id].remove(gpu)

    def hold_for(self, *, model: str = "") -> list[FreeGpu]:
        """Sets aside the node closest to fitting a request that has waited too long.

        Nothing else in this pass may take those GPUs, so as work ends the node fills up
        for the waiting request instead of being nibbled away by smaller ones.
        """
        candidates = [[g for g in gpus if not model or g.model == model] for gpus in self._nodes.values()]
        candidates = [c for c in candidates if c]
        if not candidates:
            return []
        held = max(candidates, key=len)
        node_id = held[0].node_id
        # The whole node is held, not only its matching GPUs: the request needs one node.
        return self._nodes.pop(node_id)

    def free_count(self, *, model: str = "") -> int:
        return sum(1 for gpus in self._nodes.values() for g in gpus if not model or g.model == model)


def gpu_pick(*, free: Iterable[FreeGpu], count: int, model: str = "") -> list[FreeGpu] | None:
    """Best-fit choice of `count` GPUs on one node (see FreePool.pick)."""
    return FreePool(free).pick(count=count, model=model)
