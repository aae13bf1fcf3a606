"""Common GPUs and their memory, for "does it fit?" marks and the capacity planner.

``memory_bytes`` is the card's total memory as CUDA reports it (``cudaDeviceProp.totalGlobalMem``,
``torch.cuda.get_device_properties(i).total_memory``), not the marketing figure. Cards are sold in
"GB" that are really GiB of DRAM minus what the driver reserves (ECC, firmware), so the totals sit a
little under ``N * 1024**3``. The figures below are the totals reported on common driver versions
(within a few MiB of each other across drivers); the usable share is smaller still: the CUDA context
takes about 0.3-0.6 GiB and the caching allocator rounds blocks up.

``context_bytes`` is the device memory a training process uses outside the caching allocator: the
CUDA context, cuBLAS/cuDNN workspaces and handles, kernel images (NVML-used minus the allocator's
reserved, at the step peak). It depends on the card, the driver, torch and CUDA, so each figure
says where it came from (``context_source``): measured where a run on the card exists, else an
assumption named as such. A step fits a card when the allocator's predicted reserved peak plus the
context fits its memory: ``reserved_peak_bytes + context_bytes <= memory_bytes``
(``measure.allocator`` predicts the reserved peak).

``custom:SIZE`` names a card of any size (``custom:48GiB``, ``custom:96GB``); SIZE is parsed by
``units.parse_size`` (GiB = 1024**3 bytes, GB = 10**9 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

from sgdsai_cli.errors import BadInput, did_you_mean
from sgdsai_cli.units import parse_size

MiB = 1024**2


# NVML-used minus torch.cuda.max_memory_reserved() at the peak, identical (to the byte) in the four
# real runs of reports/gpu-h100/run2 (llama2-7b bf16 and gpt2-xl bf16, SGD-SaI and AdamW):
# H100 80GB HBM3, driver 580.159.04, torch 2.11.0+cu130
H100_CONTEXT_BYTES = 804_061_184
H100_CONTEXT_SOURCE = ("measured: reports/gpu-h100/run2 (NVML used - reserved, 4 runs), H100 80GB HBM3, "
                       "driver 580.159.04, torch 2.11.0+cu130")
# cards without a run: the H100 figure, an assumption (a context is typically smaller on cards with
# fewer SMs, so this errs on the safe side there; newer CUDA or torch versions may differ either way)
DEFAULT_CONTEXT_BYTES = H100_CONTEXT_BYTES
DEFAULT_CONTEXT_SOURCE = "assumption: the H100 figure (torch 2.11.0+cu130), not measured on this card"


@dataclass(frozen=True)
class GPU:
    """A GPU model: CLI ``name``, display ``label``, total device memory and the context allowance (bytes)."""

    name: str
    label: str
    memory_bytes: int
    context_bytes: int = DEFAULT_CONTEXT_BYTES
    context_source: str = DEFAULT_CONTEXT_SOURCE


# Totals in MiB as CUDA reports them (nvidia-smi "Total" / torch total_memory), converted to bytes.
GPUS: dict[str, GPU] = {
    g.name: g
    for g in [
        GPU("t4-16gb", "T4 16GB", 15_360 * MiB),
        GPU("l4-24gb", "L4 24GB", 22_491 * MiB),
        GPU("rtx4090-24gb", "RTX 4090 24GB", 24_210 * MiB),
        GPU("a10-24gb", "A10 24GB", 22_731 * MiB),
        GPU("a100-40gb", "A100 40GB", 40_370 * MiB),
        GPU("l40s-48gb", "L40S 48GB", 45_589 * MiB),
        GPU("a100-80gb", "A100 80GB", 81_050 * MiB),
        # torch total_memory of the H100 in reports/gpu-h100 (nvidia-smi says 81559 MiB "total")
        GPU("h100-80gb", "H100 80GB", 85_017_493_504, H100_CONTEXT_BYTES, H100_CONTEXT_SOURCE),
        GPU("h200-141gb", "H200 141GB", 143_771 * MiB),
    ]
}

# The cards `plan` plans for by default and `profile` marks as "fits" rows: the same list, one rule (``fits``).
DEFAULT_GPUS: tuple[str, ...] = ("l4-24gb", "rtx4090-24gb", "a100-40gb", "a100-80gb", "h100-80gb", "h200-141gb")
FIT_GPUS = DEFAULT_GPUS


def resolve_gpu(name: str) -> GPU:
    """A GPU by name (``a100-80gb``) or ``custom:SIZE``; BadInput with close matches when unknown."""
    key = str(name).strip().lower()
    if key.startswith("custom:"):
        size = name.split(":", 1)[1]
        return GPU(f"custom:{size}", f"custom {size}", parse_size(size))
    try:
        return GPUS[key]
    except KeyError:
        raise BadInput(f"unknown GPU '{name}'" + did_you_mean(key, list(GPUS) + ["custom:SIZE"])) from None


def fits(gpu: GPU, n_bytes: int | None, context_bytes: int | None = None) -> bool | None:
    """The one fit rule: ``n_bytes + context <= memory``; None when the size is unknown.

    ``n_bytes`` is what the caching allocator holds at the step's peak: the predicted reserved peak
    where the allocator model gave one, else the allocated peak. ``context_bytes`` defaults to the
    card's own allowance (``gpu.context_bytes``); pass 0 for a figure that already includes the
    context (NVML's used memory of a real run).
    """
    if n_bytes is None:
        return None
    context = gpu.context_bytes if context_bytes is None else context_bytes
    return n_bytes + context <= gpu.memory_bytes
