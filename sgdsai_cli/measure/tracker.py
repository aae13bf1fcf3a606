"""Live-tensor tracking: the exact bytes of the storages a piece of code allocates, op by op.

    tracker = LiveTracker()
    with tracker:                      # or tracker.start() ... tracker.stop()
        loss = model(batch).sum()
    tracker.live, tracker.peak         # bytes alive now, and their highest point

A ``TorchDispatchMode`` sees every op while it is active. An output storage that is not one of
the op's inputs is an allocation: its bytes are added to ``live`` (each storage once, identity as
in ``storage.storage_key``); a weak reference on the storage object subtracts them when it dies,
so frees are exact too, whether the mode is still active or not. Views and in-place results
share an input's storage and are not allocations. Storages made before the mode started are
not counted.

The same tracker serves the fake-tensor estimate (on fake tensors, which have storages but no
data), the real CPU runs and the tests. Subclasses that want to know more (the estimate's
segments) override ``allocated`` and ``freed``.

``LiveTracker(record_events=True)`` also keeps the ordered allocations and frees in ``events``
(``("a", key, nbytes)`` and ``("f", key)``, ``key`` a sequence number of the tracker; frees are
recorded while the mode is active only) for the caching-allocator model (``measure.allocator``).
Off by default: nothing is kept and nothing slows.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def _storage(t) -> torch.UntypedStorage | None:
    if not isinstance(t, torch.Tensor):
        return None
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # tensor subclasses without a storage
        return None


class LiveTracker(TorchDispatchMode):
    """Bytes of the storages allocated while active and still alive (``live``), their ``peak``."""

    def __init__(self, record_events: bool = False) -> None:
        super().__init__()
        self.events: list[tuple] | None = [] if record_events else None
        self.live = 0
        self.peak = 0
        self.ops = 0
        self.active = False
        self._refs: dict[int, weakref.ref] = {}

    # -- switching on and off
    def __enter__(self):
        self.active = True
        return super().__enter__()

    def __exit__(self, *exc):
        self.active = False
        return super().__exit__(*exc)

    def start(self) -> LiveTracker:
        """Enter the mode (outside a ``with`` block)."""
        self.__enter__()
        return self

    def stop(self) -> None:
        """Leave the mode if active; frees of tracked storages are still counted afterwards."""
        if self.active:
            self.__exit__(None, None, None)

    def reset_peak(self) -> None:
        """Start a new peak from the bytes alive now."""
        self.peak = self.live

    # -- what subclasses may override
    def allocated(self, nbytes: int):
        """Called after an allocation of ``nbytes`` was counted; the value returned is given to ``freed``."""
        return None

    def freed(self, nbytes: int, tag) -> None:
        """Called after a tracked storage of ``nbytes`` died (``tag``: what ``allocated`` returned)."""

    # -- bookkeeping
    def add(self, storage: torch.UntypedStorage) -> None:
        """Count ``storage`` as allocated now (once; empty storages are ignored)."""
        key = storage._cdata
        if key in self._refs:
            return
        nbytes = storage.nbytes()
        if nbytes == 0:
            return
        tag, seq = self.count_allocation(nbytes)
        self._refs[key] = weakref.ref(storage, self._on_free(key, nbytes, tag, seq))

    def count_allocation(self, nbytes: int) -> tuple:
        """Count an allocation of ``nbytes`` (live, peak, event); return (its tag, its event key or None).

        ``add`` calls it for a real storage; a replay of recorded events (``batch_line``) calls it directly."""
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        tag = self.allocated(nbytes)
        seq = None
        if self.events is not None:
            seq = len(self.events)
            self.events.append(("a", seq, nbytes))
        return tag, seq

    def count_free(self, nbytes: int, tag, seq: int | None) -> None:
        """Count the free of an allocation that ``count_allocation`` returned (``tag``, ``seq``) for."""
        self.live -= nbytes
        self.freed(nbytes, tag)
        if seq is not None and self.active:
            self.events.append(("f", seq))

    def _on_free(self, key: int, nbytes: int, tag, seq: int | None = None):
        def callback(ref) -> None:
            if self._refs.get(key) is ref:
                del self._refs[key]
                self.count_free(nbytes, tag, seq)

        return callback

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        out = func(*args, **kwargs)
        inputs = {st._cdata for st in map(_storage, tree_leaves((args, kwargs))) if st is not None}
        for st in map(_storage, tree_leaves(out)):
            if st is not None and st._cdata not in inputs:
                self.add(st)
        return out
