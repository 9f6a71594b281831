"""Puts the next batches on the devices while the current step runs.

`DevicePrefetcher` wraps a host batch iterator (`mvcl.data.BatchIterator`) and a ``put`` function
(for example ``jax.make_array_from_process_local_data`` onto the batch's ``NamedSharding``).
JAX copies to the devices asynchronously, so once the loop has dispatched step ``s`` (which also
returns at once), the copy of batch ``s + 1`` made by the following ``next`` overlaps with it.

Checkpoints must record the batches the loop has *consumed*, not those already on the way:
`get_state` returns the host iterator's state from before the oldest batch still queued, so a
run restored from it sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar

Out = TypeVar("Out")


class StatefulIterator(Protocol):
    """An iterator with ``get_state() -> dict`` and ``set_state(dict)``, like `BatchIterator`."""

    def __next__(self) -> Any: ...

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: Mapping[str, Any]) -> None: ...


class DevicePrefetcher(Generic[Out], Iterator[Out]):
    """``put(batch)`` of each host batch, `ahead` batches in advance.

    Args:
      iterator: the host batches, with ``get_state``/``set_state``.
      put: makes the device value of one host batch (must not block on the copy).
      ahead: batches on the devices beyond the one `next` returns (1: the next step's).
    """

    def __init__(self, iterator: StatefulIterator, put: Callable[[Any], Out], *, ahead: int = 1):
        if ahead < 0:
            raise ValueError(f"ahead must be >= 0, got {ahead}")
        self.iterator = iterator
        self.put = put
        self.ahead = ahead
        self._queue: collections.deque[tuple[dict[str, Any], Out]] = collections.deque()

    def __iter__(self) -> DevicePrefetcher[Out]:
        return self

    def __next__(self) -> Out:
        while len(self._queue) < self.ahead + 1:
            state = self.iterator.get_state()
            self._queue.append((state, self.put(next(self.iterator))))
        return self._queue.popleft()[1]

    def get_state(self) -> dict[str, Any]:
        """The host iterator's state after the batches `next` has returned (not those queued)."""
        if self._queue:
            return dict(self._queue[0][0])
        return self.iterator.get_state()

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Drops the queued batches and continues from `state`."""
        self._queue.clear()
        self.iterator.set_state(state)

    def __getattr__(self, name: str) -> Any:
        # ``steps_per_epoch``, ``epoch``, ``close``, ... of the host iterator.
        if name == "iterator":
            raise AttributeError(name)
        return getattr(self.iterator, name)
