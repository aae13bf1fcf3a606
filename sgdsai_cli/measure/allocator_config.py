"""``PYTORCH_CUDA_ALLOC_CONF``: the options of the CUDA caching allocator that change its memory use.

    cfg = parse_alloc_conf("expandable_segments:True,max_split_size_mb:128")
    cfg = config_from_env()            # the variable of this process (or of ``environ``)

The syntax and the checks follow torch's parser (``c10/core/AllocatorConfig.cpp``, ``parseArgs``;
``c10/cuda/CUDAAllocatorConfig.cpp`` before torch 2.9): a comma-
separated list of ``key:value``; ``roundup_power2_divisions`` takes either one number or a list
``[256:1,512:2,>:4]`` (``parseRoundUpPower2Divisions``). Options that move no memory
(``release_lock_on_cudamalloc``, ``pinned_use_cuda_host_register``, ``pinned_num_register_threads``,
``pinned_use_background_threads``) are accepted and ignored; ``backend:cudaMallocAsync`` is accepted
but the model is of the native allocator (``AllocatorConfig.backend`` says which was asked for).
An unknown key or a bad value is ``BadInput`` naming it, as torch refuses it at start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sgdsai_cli.errors import BadInput

MiB = 1024**2
K_LARGE_BUFFER = 20 * MiB  # kLargeBuffer
# roundup_power2_divisions has one entry per power-of-two interval from 1 MiB up (kRoundUpPowerOfTwoIntervals)
ROUNDUP_INTERVALS = 16
_IGNORED = {"release_lock_on_cudamalloc", "pinned_use_cuda_host_register", "pinned_num_register_threads",
            "pinned_use_background_threads", "pinned_reserve_segment_size_mb", "per_process_memory_fraction",
            "graph_capture_record_stream_reuse"}


@dataclass(frozen=True)
class AllocatorConfig:
    """The allocator options the model honours (defaults: torch's)."""

    max_split_size_bytes: int | None = None  # None: unlimited (SIZE_MAX), every block may be split
    max_non_split_rounding_bytes: int = K_LARGE_BUFFER  # an oversize block serves requests up to this much smaller
    roundup_power2_divisions: tuple[int, ...] = (0,) * ROUNDUP_INTERVALS
    expandable_segments: bool = False
    garbage_collection_threshold: float = 0.0  # acts only under a memory limit (set_per_process_memory_fraction)
    backend: str = "native"
    text: str = ""  # the configuration string it came from ("" = defaults)

    def divisions(self, size: int) -> int:
        """``roundup_power2_divisions(size)``: the divisions of the power-of-two interval holding ``size``."""
        log_size = size.bit_length() - 1
        start = MiB.bit_length() - 1
        index = log_size - start if log_size > start else 0
        return self.roundup_power2_divisions[min(index, ROUNDUP_INTERVALS - 1)]


def _bool(key: str, value: str) -> bool:
    if value not in ("True", "False"):
        raise BadInput(f"PYTORCH_CUDA_ALLOC_CONF {key} must be True or False, not '{value}'",
                       field="PYTORCH_CUDA_ALLOC_CONF", value=value)
    return value == "True"


def _number(key: str, value: str, kind=int):
    try:
        return kind(value)
    except ValueError:
        raise BadInput(f"PYTORCH_CUDA_ALLOC_CONF {key} needs a number, not '{value}'",
                       field="PYTORCH_CUDA_ALLOC_CONF", value=value) from None


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _divisions(value: str) -> tuple[int, ...]:
    """``parseRoundUpPower2Divisions``: one value for all intervals, or ``[MB:div,...,>:div]``."""
    bad = BadInput(f"PYTORCH_CUDA_ALLOC_CONF roundup_power2_divisions: bad value '{value}'",
                   field="PYTORCH_CUDA_ALLOC_CONF", value=value)
    if not value.startswith("["):
        n = _number("roundup_power2_divisions", value)
        if not _power_of_two(n):  # the single-value form takes no 0
            raise bad
        return (n,) * ROUNDUP_INTERVALS
    if not value.endswith("]"):
        raise bad
    out = [0] * ROUNDUP_INTERVALS
    first, last = True, 0
    for item in filter(None, value[1:-1].split(",")):
        key, sep, div = item.partition(":")
        n = _number("roundup_power2_divisions", div) if sep else -1
        if n < 0 or (n != 0 and not _power_of_two(n)):
            raise bad
        if key.strip() == ">":
            out[last:] = [n] * (ROUNDUP_INTERVALS - last)
            continue
        mb = _number("roundup_power2_divisions", key)
        if not _power_of_two(mb):
            raise bad
        index = min(mb.bit_length() - 1, ROUNDUP_INTERVALS - 1)
        if first:
            out[:index] = [n] * index
            first = False
        out[index] = n
        last = index
    return tuple(out)


def _split_items(text: str) -> list[str]:
    """Commas inside ``[...]`` belong to the list value."""
    items, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return [i.strip() for i in items if i.strip()]


def parse_alloc_conf(text: str | None) -> AllocatorConfig:
    """The ``AllocatorConfig`` of a ``PYTORCH_CUDA_ALLOC_CONF`` string (None or "" gives the defaults)."""
    text = (text or "").strip()
    kw: dict = {}
    for item in _split_items(text.replace(" ", "")):  # torch's lexer drops spaces
        key, sep, value = item.partition(":")
        key, value = key.strip(), value.strip()
        if not sep:
            raise BadInput(f"PYTORCH_CUDA_ALLOC_CONF item '{item}' is not key:value",
                           field="PYTORCH_CUDA_ALLOC_CONF", value=item)
        if key == "max_split_size_mb":
            mb = _number(key, value)
            if mb < K_LARGE_BUFFER // MiB:  # torch: "max_split_size_mb too small, must be >= 20"
                raise BadInput(f"PYTORCH_CUDA_ALLOC_CONF max_split_size_mb must be >= 20, not {mb}",
                               field="PYTORCH_CUDA_ALLOC_CONF", value=value)
            kw["max_split_size_bytes"] = mb * MiB
        elif key == "max_non_split_rounding_mb":
            mb = _number(key, value)
            if mb < K_LARGE_BUFFER // MiB:
                raise BadInput(f"PYTORCH_CUDA_ALLOC_CONF max_non_split_rounding_mb must be >= 20, not {mb}",
                               field="PYTORCH_CUDA_ALLOC_CONF", value=value)
            kw["max_non_split_rounding_bytes"] = mb * MiB
        elif key == "garbage_collection_threshold":
            t = _number(key, value, float)
            if not 0.0 < t < 1.0:  # torch: "must be between 0.0 and 1.0" (exclusive)
                raise BadInput(f"PYTORCH_CUDA_ALLOC_CONF garbage_collection_threshold must be in (0, 1), not {value}",
                               field="PYTORCH_CUDA_ALLOC_CONF", value=value)
            kw["garbage_collection_threshold"] = t
        elif key == "roundup_power2_divisions":
            kw["roundup_power2_divisions"] = _divisions(value)
        elif key == "expandable_segments":
            kw["expandable_segments"] = _bool(key, value)
        elif key == "backend":
            if value not in ("native", "cudaMallocAsync"):
                raise BadInput(f"PYTORCH_CUDA_ALLOC_CONF backend must be native or cudaMallocAsync, not '{value}'",
                               field="PYTORCH_CUDA_ALLOC_CONF", value=value)
            kw["backend"] = value
        elif key not in _IGNORED:
            raise BadInput(f"PYTORCH_CUDA_ALLOC_CONF: unknown option '{key}'",
                           field="PYTORCH_CUDA_ALLOC_CONF", value=key)
    return AllocatorConfig(text=text, **kw)


def config_from_env(environ=None) -> AllocatorConfig:
    """The configuration in ``PYTORCH_CUDA_ALLOC_CONF`` (torch also reads ``PYTORCH_ALLOC_CONF``, preferred)."""
    env = os.environ if environ is None else environ
    return parse_alloc_conf(env.get("PYTORCH_ALLOC_CONF") or env.get("PYTORCH_CUDA_ALLOC_CONF"))
