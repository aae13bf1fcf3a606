"""Storage accounting: the bytes behind tensors, each storage counted once.

One rule everywhere (meta sizing, fake-tensor traces, real runs, the live-tensor tracker): a
tensor's bytes are those of its untyped storage, and two tensors share bytes exactly when they
share a storage (views, tied parameters, state aliased between keys). Identity is the storage
itself (``untyped_storage()._cdata``, the address of the C++ storage), not ``data_ptr()``: meta
and fake tensors all have data pointer 0, and an empty CPU tensor may too.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def storage_key(t: torch.Tensor) -> int:
    """The identity of ``t``'s storage (shared by its views and by tensors tied to it)."""
    return t.untyped_storage()._cdata


def unique_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (each shared storage counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen.setdefault(st._cdata, st.nbytes())
    return sum(seen.values())


def state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every tensor in ``optimizer.state`` (all parameters, all keys)."""
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def state_bytes_by_key(optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of ``optimizer.state`` tensors per state key, each storage counted once (first key wins)."""
    seen: set[int] = set()
    by_key: dict[str, int] = {}
    for state in optimizer.state.values():
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            k = storage_key(value)
            if k in seen:
                continue
            seen.add(k)
            by_key[str(key)] = by_key.get(str(key), 0) + value.untyped_storage().nbytes()
    return by_key
