"""Devices: what a device name means, the record a result keeps of it, its free memory, its OOM.

    dev = resolve_device("auto", auto="meta")   # profile: the first CUDA device, else meta (sizing)
    dev = resolve_device("auto", auto="cpu")    # gsnr, bench-step: the first CUDA device, else the CPU
    device_record(dev)                          # environment.device of a result
    free_bytes(dev)                             # what a "does it fit" check compares against

One function per fact: every command resolves names, records devices, reads free memory and
recognises an out-of-memory failure here. A CPU record always carries ``threads`` (torch's
intra-op threads); a CUDA record carries the UUID as ``GPU-...`` and, when known, the driver.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable

AUTO_FALLBACKS = ("meta", "cpu")


def _choices(auto: str) -> str:
    return "auto, meta, cpu, cuda, cuda:N" if auto == "meta" else "auto, cpu, cuda, cuda:N"


def resolve_device(text: str, *, auto: str = "cpu", meta_refusal: str | None = None) -> torch.device:
    """'auto', 'meta', 'cpu', 'cuda' or 'cuda:N' as a torch device.

    ``auto`` is what 'auto' falls back to without CUDA: "meta" where sizing without a device is
    the answer (profile), "cpu" where real values are needed (gsnr, bench-step); there the meta
    device is refused (BadInput), ``meta_refusal`` saying what it cannot do. A CUDA device that is
    absent raises EnvironmentUnavailable; any other name BadInput.
    """
    if auto not in AUTO_FALLBACKS:
        raise ValueError(f"auto must be one of {AUTO_FALLBACKS}, not {auto!r}")
    name = str(text or "").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else auto)
    if name == "meta":
        if auto == "meta":
            return torch.device("meta")
        raise BadInput(f"device meta cannot {meta_refusal or 'run real tensors (it has no values)'}; "
                       f"choose from: {_choices(auto)}", field="device", value=text)
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        # an unknown name carries its value but no field: the message reads the same in Python and the CLI
        raise BadInput(f"unknown device '{text}' (choose from: {_choices(auto)})", value=text)
    if dev.type == "cuda":
        _check_cuda(dev, text)
    return dev


def _check_cuda(dev: torch.device, text: str) -> None:
    if not torch.cuda.is_available():
        raise EnvironmentUnavailable(f"device '{text}': CUDA is not available on this machine "
                                     f"(torch {torch.__version__})", field="device", value=text)
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise EnvironmentUnavailable(f"device '{text}': no such GPU (this machine has {count})",
                                     field="device", value=text)


def cuda_uuid(index: int) -> str | None:
    """torch's UUID of CUDA device ``index`` as 'GPU-xxxxxxxx-...' (None where unknown)."""
    try:
        u = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    except Exception:
        return None
    if u is None:
        return None
    s = str(u)
    return s if s.upper().startswith(("GPU-", "MIG-")) else f"GPU-{s}"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        name = None
    return name or platform.processor() or platform.machine() or "cpu"


def device_record(dev: torch.device, *, driver: str | None = None) -> dict[str, Any]:
    """The result's ``environment.device``: type, name, total_memory_bytes, uuid, driver (+ on a CPU: threads,
    cpus and load_avg, ``cpu_load``)."""
    if dev.type == "meta":
        return {"type": "meta", "name": "meta", "total_memory_bytes": None, "uuid": None, "driver": None}
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return {"type": "cuda", "name": props.name, "total_memory_bytes": int(props.total_memory),
                "uuid": cuda_uuid(index), "driver": driver}
    total = meminfo_bytes("MemTotal")
    if total is None:
        total = _sysconf_bytes("SC_PHYS_PAGES")
    return {"type": "cpu", "name": _cpu_name(), "total_memory_bytes": total, "uuid": None, "driver": None,
            "threads": torch.get_num_threads(), **cpu_load()}


def cpu_load() -> dict[str, Any]:
    """``{"cpus": usable CPUs, "load_avg": [1, 5, 15 minutes]}`` now (None where the OS does not say):
    how busy the machine was while a CPU timing ran."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {"cpus": cpus, "load_avg": load}


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


def _sysconf_bytes(pages: str) -> int | None:
    try:
        return os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_bytes(dev: torch.device) -> int | None:
    """Memory free for new tensors: cudaMemGetInfo on CUDA; RAM available on the CPU (None: unknown)."""
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    if dev.type == "meta":
        return None
    avail = meminfo_bytes("MemAvailable")
    return avail if avail is not None else _sysconf_bytes("SC_AVPHYS_PAGES")


def is_oom(e: BaseException) -> bool:
    """Whether ``e`` is running out of device or host memory (CUDA OOM, MemoryError, CPU allocator)."""
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg.lower() or "can't allocate memory" in msg)
