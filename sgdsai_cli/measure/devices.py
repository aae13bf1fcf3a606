"""Devices for commands that compute on real tensors (``gsnr``, ``bench-step``): parsing and records."""

from __future__ import annotations

import platform
from typing import Any

import torch

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"


def meminfo_bytes(key: str) -> int | None:
    """A /proc/meminfo figure in bytes (``MemTotal``, ``MemAvailable``), None where unreadable."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def resolve_device(text: str, *, meta_refusal: str) -> torch.device:
    """'auto' (cuda if available, else cpu), 'cpu', 'cuda' or 'cuda:N'.

    ``meta_refusal`` completes "--device meta cannot ..." for the command at hand. A CUDA device
    that is absent raises EnvironmentUnavailable (exit 3); anything else unknown BadInput (exit 2).
    """
    name = (text or "").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "meta":
        raise BadInput(f"--device meta cannot {meta_refusal}; choose from: {DEVICE_CHOICES}")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise BadInput(f"unknown device '{text}' (choose from: {DEVICE_CHOICES})") from None
    if dev.type not in ("cpu", "cuda"):
        raise BadInput(f"unknown device '{text}' (choose from: {DEVICE_CHOICES})")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EnvironmentUnavailable(f"--device {text}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EnvironmentUnavailable(f"--device {text}: no such GPU (this machine has "
                                         f"{torch.cuda.device_count()})")
    return dev


def device_record(dev: torch.device) -> dict[str, Any]:
    """The envelope's ``environment.device`` for a cpu or cuda device."""
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        uuid = getattr(props, "uuid", None)
        return {"type": "cuda", "name": props.name, "total_memory_bytes": int(props.total_memory),
                "uuid": str(uuid) if uuid else None, "driver": None}
    name = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    return {"type": "cpu", "name": name or platform.processor() or platform.machine() or "cpu",
            "total_memory_bytes": meminfo_bytes("MemTotal"), "uuid": None, "driver": None,
            "threads": torch.get_num_threads()}
